"""The administrative side of one PostgreSQL server: its connection, and the database-level
work every local branch needs (terminate sessions, rename, drop, mark, close to PUBLIC).

Like pytest-postgresql's janitor, it knows nothing of branches or of pytest;
``LocalBackend`` builds branches on it. Every error is a ``ServerError`` whose
message masks passwords and says what to check.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from ..errors import ServerError
from ..redact import mask_text, mask_url

T = TypeVar("T")
MARKER_KEY = "pytest_neon_alembic"


def remedy(server_label: str) -> str:
    if server_label.endswith("embedded"):
        kept = server_label != "embedded"
        where = "kept/ in the state directory" if kept else "the run directory"
        return (
            "The embedded PostgreSQL server stopped working (killed, out of memory or disk "
            f"space, or stopped with SIGSTOP for too long?); its log is postgres.log in {where}. "
            "Run the tests again."
        )
    return (
        "Check that the server is running and that the URL's host, port, user and password "
        "are right (--neon-local-url / NEON_LOCAL_URL)."
    )


class ServerJanitor:
    """An administrative connection to one server, reconnected once if a test ended it."""

    def __init__(self, admin_url: str, server_label: str = "server") -> None:
        self.admin_url = admin_url
        self.server_label = server_label
        self._connection: psycopg.Connection | None = None
        self._server_version: int | None = None

    def _admin(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed or self._connection.broken:
            self._connection = self.connect_admin(self.admin_url, self.server_label)
            self._server_version = self._connection.info.server_version
        return self._connection

    @staticmethod
    def connect_admin(url: str, server_label: str = "server") -> psycopg.Connection:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as error:
            raise ServerError(
                f"Cannot connect to PostgreSQL at {mask_url(url)}: "
                f"{mask_text(str(error)).strip()}\n{remedy(server_label)}"
            ) from None

    def _detect(self, action: Callable[[psycopg.Connection], T]) -> T:
        """Write detection on the admin connection; a server that went away is one clear error."""
        try:
            try:
                return action(self._admin())
            except psycopg.OperationalError:
                return action(self._reconnected_admin())  # a test terminated it?
        except psycopg.OperationalError as error:
            raise ServerError(
                f"Lost the connection to PostgreSQL at {mask_url(self.admin_url)}: "
                f"{mask_text(str(error)).strip()}\n{remedy(self.server_label)}"
            ) from None

    def _execute(
        self, statement: Any, params: Any = None, connection: psycopg.Connection | None = None
    ) -> list[tuple[Any, ...]]:
        own = connection is None
        connection = connection or self._admin()
        try:
            try:
                cursor = connection.execute(statement, params)
            except psycopg.OperationalError:
                if not own:
                    raise
                connection = self._reconnected_admin()  # a test terminated it?
                cursor = connection.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
        except psycopg.Error as error:
            text = (
                statement.as_string(connection)
                if isinstance(statement, sql.Composable)
                else statement
            )
            raise ServerError(
                f"PostgreSQL refused `{mask_text(str(text))}` on {mask_url(self.admin_url)}: "
                f"{mask_text(str(error)).strip()}"
            ) from None

    def _reconnected_admin(self) -> psycopg.Connection:
        """After an OperationalError on the admin connection (called in its handler): a
        new one if it broke and the server still answers -- a test may have run
        pg_terminate_backend on every session -- else that error again."""
        error = sys.exc_info()[1]
        assert error is not None
        if self._connection is None or not self._connection.broken:
            raise error
        try:
            return self._admin()
        except ServerError:
            raise error from None

    @property
    def server_version(self) -> int:
        self._admin()
        assert self._server_version is not None
        return self._server_version

    def close_to_public(self, *databases: str) -> None:
        """Only the administrator (and roles granted CONNECT) may connect to ``databases``."""
        for database in databases:
            self._execute(
                sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                    sql.Identifier(database)
                )
            )

    def _rename(self, database: str, new_name: str) -> None:
        self._execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(database), sql.Identifier(new_name)
            )
        )

    def _comment(
        self,
        database: str,
        marker: dict[str, Any],
        connection: psycopg.Connection | None = None,
        *,
        close_to_public: bool = False,
    ) -> None:
        """The comment that tells a later run whose database this is (one transaction with
        the REVOKE that closes a new database to other roles)."""
        statement = sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(database), sql.Literal(json.dumps({MARKER_KEY: marker}))
        )
        if close_to_public:
            statement = sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC; {}").format(
                sql.Identifier(database), statement
            )
        self._execute(statement, connection=connection)

    def _terminate_connections(self, database: str) -> None:
        """Terminate the database's sessions and wait until they are gone.

        Waiting here, in 1 ms steps, is what makes a reset fast: DROP/CREATE
        DATABASE would otherwise find the dying sessions and sleep 100 ms.
        """
        pids = self._execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        if pids:
            self._terminate_pids(database, [p for (p,) in pids])

    def _terminate_pids(self, database: str, pids: list[int]) -> None:
        """Terminate these sessions of ``database`` and wait until they are gone."""
        self._execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not self._execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND pid = ANY(%s)",
                (database, pids),
            ):
                return
            time.sleep(0.001)

    def _drop_database(self, database: str) -> None:
        self._terminate_connections(database)
        force = sql.SQL(" WITH (FORCE)") if self.server_version >= 130000 else sql.SQL("")
        self._execute(
            sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(database), force)
        )
