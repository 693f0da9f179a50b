"""Read-only access on the local backend: a login role that may only read one database.

The database is a clone of the migrated state made for this purpose; the role
reads it and cannot write anywhere, enforced by PostgreSQL's privileges.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def read_only_role(execute: Callable[[Any], Any], database_url: str, name: str) -> str:
    """Create the role ``name`` that may only read the database ``name``; its password.

    ``execute`` runs a statement on the administrative connection;
    ``database_url`` reaches the database itself as the administrator.
    """
    password = secrets.token_urlsafe(18)
    role = sql.Identifier(name)
    database = sql.Identifier(name)
    execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
    execute(
        sql.SQL(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}"
        ).format(role, sql.Literal(password))
    )
    execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))
    execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
    execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, role))
    with psycopg.connect(database_url, autocommit=True) as connection:
        schemas = [
            row[0]
            for row in connection.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname <> ALL(%s) "
                "AND nspname NOT LIKE 'pg\\_%%temp\\_%%'",
                (list(SYSTEM_SCHEMAS),),
            )
        ]
        # Creating large objects needs no privilege at all: take that away too.
        connection.execute(
            "REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), "
            "lo_from_bytea(oid, bytea), lo_import(text), lo_import(text, oid) FROM PUBLIC"
        )
        for schema in schemas:
            ident = sql.Identifier(schema)
            connection.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(ident))
            connection.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident, role))
            connection.execute(
                sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(ident, role)
            )
            connection.execute(
                sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(ident, role)
            )
    return password
