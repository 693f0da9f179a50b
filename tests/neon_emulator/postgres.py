"""The real PostgreSQL behind the emulated branches.

Every emulated Neon branch is a real database on one PostgreSQL server, so the
connection strings the emulator hands out really reach that branch's data.
This module owns everything the emulator does *inside* PostgreSQL: the two
roles of the project, creating, cloning and dropping databases, and cutting
connections. It knows nothing about HTTP or Neon's JSON.

Names: every object gets the instance's ``prefix`` (``neonemu_<8 hex>``), so
several emulators (xdist workers, the plugin's own embedded server) can share
one server, and :meth:`Cluster.cleanup` can find everything it made.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import string
import threading
import time
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

__all__ = ["Cluster", "new_password"]

logger = logging.getLogger(__name__)

# pg_read_all_data (the read-only role's grant) exists from 14 on; STRATEGY
# FILE_COPY (fast clones on tmpfs) from 15 on.
_MIN_SERVER_VERSION = 140000
_FILE_COPY_VERSION = 150000
# How long to keep trying to clone a database that clients keep reconnecting to.
_CLONE_ATTEMPTS = 50
_TERMINATE_WAIT_MS = 5000

_PASSWORD_ALPHABET = string.ascii_letters + string.digits


def new_password() -> str:
    """A Neon-looking password (recent Neon passwords start with ``npg_``).

    Alphanumeric only, so it needs no quoting in a URI.
    """
    return "npg_" + "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(12))


class Cluster:
    """The emulator's objects on one PostgreSQL server, reached via a superuser URL.

    Not thread-safe on its own: the emulator calls it while holding its state
    lock, which also serialises the single administrative connection.
    """

    def __init__(self, admin_url: str, prefix: str) -> None:
        parts = urlsplit(admin_url)
        self._admin_url = admin_url  # holds the superuser password: never log it
        self.host = unquote(parts.hostname or "127.0.0.1")
        self.port = parts.port or 5432
        self.prefix = prefix
        self.owner_role = f"{prefix}_owner"
        self.readonly_role = f"{prefix}_ro"
        self._names = itertools.count(1)
        self._connection: psycopg.Connection | None = None
        self._lock = threading.RLock()
        self.server_version = 0

    # -- administrative connection --------------------------------------------------------

    def _admin(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed or self._connection.broken:
            try:
                self._connection = psycopg.connect(
                    self._admin_url, autocommit=True, connect_timeout=10
                )
            except psycopg.Error as error:
                # The error text may quote the URL; only say where.
                raise RuntimeError(
                    f"Neon emulator: cannot connect to PostgreSQL at {self.host}:{self.port} "
                    f"({type(error).__name__})"
                ) from None
            self.server_version = self._connection.info.server_version
        return self._connection

    def _execute(self, statement: sql.Composable | str, params: tuple | None = None) -> list:
        with self._lock:
            cursor = self._admin().execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    # -- set-up and tear-down ---------------------------------------------------------------

    def setup(self, password: str) -> None:
        """Create the project's owner role and its read-only twin, both with ``password``.

        The read-only twin is what connections through a ``read_only`` endpoint
        become: it may read everything (``pg_read_all_data``) and write nothing,
        whatever the session sets -- ``default_transaction_read_only`` is only the
        first line of defence (it gives Neon's "read-only transaction" error), the
        missing privileges are the second.
        """
        self._admin()
        if self.server_version < _MIN_SERVER_VERSION:
            raise RuntimeError(
                "Neon emulator: needs PostgreSQL 14 or later (for pg_read_all_data); the "
                f"server at {self.host}:{self.port} is {self.server_version}."
            )
        owner = sql.Identifier(self.owner_role)
        readonly = sql.Identifier(self.readonly_role)
        self._execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}"
            ).format(owner, sql.Literal(password))
        )
        self._execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}"
            ).format(readonly, sql.Literal(password))
        )
        self._execute(sql.SQL("GRANT pg_read_all_data TO {}").format(readonly))
        self._execute(
            sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(readonly)
        )

    def cleanup(self) -> None:
        """Drop every database and role of this emulator instance; never raises."""
        try:
            rows = self._execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                (self.prefix + "_",),
            )
            for (name,) in rows:
                self.drop(name)
            for role in (self.readonly_role, self.owner_role):
                self._execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        except Exception:  # cleanup must not hide the test's own error
            logger.warning("Neon emulator: cleanup of %s_* failed", self.prefix, exc_info=True)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    self._connection.close()
                self._connection = None

    # -- passwords --------------------------------------------------------------------------

    def set_password(self, password: str) -> None:
        """Change the password of both roles (the read-only twin must accept the same one)."""
        for role in (self.owner_role, self.readonly_role):
            self._execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )

    # -- databases --------------------------------------------------------------------------

    def new_name(self, kind: str = "db") -> str:
        """A fresh database name of this instance (short: identifiers stop at 63 bytes)."""
        return f"{self.prefix}_{kind}{next(self._names)}"

    def create_empty(self, name: str) -> None:
        """The root branch's database: an empty ``template0`` copy owned by the project role."""
        self._create(name, "template0")

    def clone(self, source: str, name: str) -> None:
        """``CREATE DATABASE name TEMPLATE source``, cutting any connection to ``source``.

        PostgreSQL refuses to copy a database that has sessions, so they are
        terminated first (waiting for them to exit); a client that reconnects in
        between makes the copy fail, and then it is simply retried.
        """
        for attempt in range(_CLONE_ATTEMPTS):
            self.terminate(source)
            try:
                self._create(name, source)
                return
            except pg_errors.ObjectInUse:
                if attempt == _CLONE_ATTEMPTS - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))

    def _create(self, name: str, template: str) -> None:
        strategy = (
            sql.SQL(" STRATEGY FILE_COPY")
            if self.server_version >= _FILE_COPY_VERSION
            else sql.SQL("")
        )
        database = sql.Identifier(name)
        self._execute(
            sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {}{}").format(
                database,
                sql.Identifier(self.owner_role),
                sql.Identifier(template),
                strategy,
            )
        )
        # Database privileges are not copied from the template. Only the two
        # project roles may connect (the owner has all rights as owner); no
        # temporary tables for the read-only role (a Neon replica is a standby).
        self._execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        self._execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                database, sql.Identifier(self.readonly_role)
            )
        )

    def drop(self, name: str) -> None:
        """Drop a database, terminating its sessions (``WITH (FORCE)``)."""
        self._execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def terminate(self, name: str) -> int:
        """Cut every session on database ``name`` and wait for them to exit; returns how many."""
        rows = self._execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, %s)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (_TERMINATE_WAIT_MS, name),
        )
        return int(rows[0][0]) if rows else 0
