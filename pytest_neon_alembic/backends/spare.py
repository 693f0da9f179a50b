"""Spare copies: the next swap's database, cloned in the background.

Most resets happen in place (``inplace``); a swap is the fallback for what
cannot be put back there (DDL, large objects). The swap then only renames the
used database away and the spare in its place (two renames, well under a
millisecond each) instead of cloning on the test's critical path.

The background work must not slow down the test that runs meanwhile: the
server process that clones (and drops the used database: DROP forces a
checkpoint) is given the lowest CPU priority when the server runs on this
machine and we may renice it. When the clone is done, one connection to it
builds the database's relation cache file, so the first connection after the
swap does not pay for it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

from ..urls import replace_database
from . import inplace


class SpareClone:
    """One database being cloned from a template on a connection of its own."""

    def __init__(
        self,
        admin_url: str,
        template: str,
        name: str,
        clone: Callable[[str, str, psycopg.Connection], None],
        drop_first: str | None = None,
        *,
        track: bool = False,
        restore_options: str | None = None,
    ) -> None:
        self.template = template
        self.name = name
        self._drop_first = drop_first
        self._admin_url = admin_url
        self._clone = clone
        self._track = track
        self._restore_options = restore_options
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"spare {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with psycopg.connect(self._admin_url, autocommit=True) as connection:
                lower_priority(connection)
                if self._drop_first:
                    connection.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(self._drop_first)
                        )
                    )
                self._clone(self.template, self.name, connection)
                if self._track:
                    inplace.enable_tracking(connection, self.name)
            if self._track:
                self._warm()
        except BaseException as error:  # reported through ready(); the reset falls back
            self._error = error

    def _warm(self) -> None:
        """One session on the new copy: builds its relation cache init file (the first
        connection to a fresh database otherwise pays for it) and checks it is clean."""
        url = replace_database(self._admin_url, self.name)
        with psycopg.connect(url, autocommit=True, options=self._restore_options) as connection:
            lower_priority(connection)
            outcome = inplace.reset(connection)
        if outcome != inplace.CLEAN:
            raise RuntimeError(f"spare copy {self.name} is not pristine: {outcome}")

    def ready(self) -> bool:
        """Wait for the clone; False if it failed (the caller clones the slow way)."""
        self._thread.join()
        return self._error is None


def lower_priority(connection: psycopg.Connection) -> None:
    """Lowest CPU priority for this connection's server process, where we may set it
    (a server on this machine; root, or the same user)."""
    if connection.info.host not in ("127.0.0.1", "localhost", "::1") and not str(
        connection.info.host
    ).startswith("/"):
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, connection.info.backend_pid, 19)
