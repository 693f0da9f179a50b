"""Read-only access on the local backend: a login role that may only read one database.

The database is a clone of the migrated state made for this purpose. What the
role can do there, enforced by PostgreSQL's privileges:

* read tables, views and sequences (SELECT only), call functions;
* nothing else: no CONNECT to any other database the run created (each is
  ``REVOKE CONNECT, TEMPORARY ... FROM PUBLIC``), no CREATE in any schema, no
  large objects; the migrations' SECURITY DEFINER functions belong, in this
  clone, to a NOLOGIN role that may only SELECT, so they read as before and
  cannot write; ``default_transaction_read_only`` is on for the role and in
  the connection string's startup options (which override role settings).

What privileges cannot take away from a role in one server is the role's power
over itself: ``ALTER ROLE CURRENT_USER SET ...`` / ``PASSWORD ...`` and ``ALTER
DEFAULT PRIVILEGES``. On the embedded server the role is therefore used only on
a hot standby (``server/standby.py``), which refuses every write by itself,
and cannot log in to the primary at all. On a server given with
``--neon-local-url`` those two classes stay open (README, "What can go wrong").
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def definer_role(name: str) -> str:
    """The NOLOGIN role that owns the SECURITY DEFINER functions of read-only clone ``name``."""
    return f"{name}_definer"


def read_only_role(execute: Callable[[Any], Any], database_url: str, name: str) -> str:
    """Create the role ``name`` that may only read the database ``name``; its password.

    ``execute`` runs a statement on the administrative connection;
    ``database_url`` reaches the database itself as the administrator.
    """
    password = secrets.token_urlsafe(18)
    role = sql.Identifier(name)
    definer = sql.Identifier(definer_role(name))
    database = sql.Identifier(name)
    for each in (role, definer):
        execute(sql.SQL("DROP ROLE IF EXISTS {}").format(each))
    execute(
        sql.SQL(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}"
        ).format(role, sql.Literal(password))
    )
    execute(sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT").format(definer))
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
            for grantee in (role, definer):
                connection.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident, grantee))
                connection.execute(
                    sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(ident, grantee)
                )
                connection.execute(
                    sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                        ident, grantee
                    )
                )
        _disarm_security_definers(connection, definer, schemas)
    return password


def _disarm_security_definers(
    connection: psycopg.Connection, definer: sql.Identifier, schemas: list[str]
) -> None:
    """SECURITY DEFINER routines run as their owner: make that owner a role that may only
    SELECT. Where the administrator cannot give them away (not a superuser), nobody but
    the administrator may call them any more."""
    routines = [
        row[0]
        for row in connection.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE p.prosecdef AND n.nspname = ANY(%s)",
            (schemas,),
        )
    ]
    if not routines:
        return
    for schema in schemas:  # ALTER ... OWNER needs CREATE on the schema for the new owner
        connection.execute(
            sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(sql.Identifier(schema), definer)
        )
    for routine in routines:
        try:
            connection.execute(
                sql.SQL("ALTER ROUTINE {} OWNER TO {}").format(sql.SQL(routine), definer)
            )
        except psycopg.errors.InsufficientPrivilege:
            connection.execute(
                sql.SQL("REVOKE EXECUTE ON ROUTINE {} FROM PUBLIC").format(sql.SQL(routine))
            )
    for schema in schemas:
        connection.execute(
            sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(sql.Identifier(schema), definer)
        )
