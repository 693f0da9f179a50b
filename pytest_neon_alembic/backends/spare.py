"""Spare copies: the next swap's database, cloned in the background.

Most resets happen in place (``inplace``); a swap is the fallback for what
cannot be put back there (DDL, large objects). The swap then only renames the
used database away and the spare in its place (two renames, well under a
millisecond each) instead of cloning on the test's critical path.

The background work must not slow down the test that runs meanwhile: the
server process that clones (and drops the used database: DROP forces a
checkpoint) is given the lowest CPU priority when the server runs on this
machine and we run as root (who may raise it back: when a swap has to wait
for the spare, its priority is restored, or a busy machine would starve the
very work the test is waiting for). The clone copies the template's files, its
relation cache init file among them, so the first connection after the swap
does not build one.

``WarmConnection`` opens, in the background too, the connection that checks
the swapped-in database after the next test, and plans its checks.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

from ..urls import on_this_machine
from . import inplace


class SpareClone:
    """One database being cloned from a template on a connection of its own."""

    def __init__(
        self,
        admin_url: str,
        template: str,
        name: str,
        clone: Callable[[str, str, psycopg.Connection], set[int]],
        drop_first: str | None = None,
        *,
        track: bool = False,
    ) -> None:
        self.template = template
        self.name = name
        self._drop_first = drop_first
        self._admin_url = admin_url
        self._clone = clone
        self._track = track
        self._error: BaseException | None = None
        self._backends: list[int] = []  # server processes working for this spare, reniced
        self._thread = threading.Thread(target=self._run, name=f"spare {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with psycopg.connect(self._admin_url, autocommit=True) as connection:
                self._lower_priority(connection)
                if self._drop_first:
                    connection.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(self._drop_first)
                        )
                    )
                self._clone(self.template, self.name, connection)
                if self._track:
                    inplace.enable_tracking(connection, self.name)
        except BaseException as error:  # reported through ready(); the reset falls back
            self._error = error

    def ready(self) -> bool:
        """Wait for the clone; False if it failed (the caller clones the slow way)."""
        if self._thread.is_alive():
            for pid in self._backends:  # the test now waits for it: full speed
                _set_priority(pid, 0)
        self._thread.join()
        return self._error is None

    def _lower_priority(self, connection: psycopg.Connection) -> None:
        """Lowest CPU priority for this connection's server process, when it runs on this
        machine and we could raise it back (root)."""
        if os.geteuid() == 0 and on_this_machine(connection.info.host):
            pid = connection.info.backend_pid
            if _set_priority(pid, 19):
                self._backends.append(pid)


def _set_priority(pid: int, niceness: int) -> bool:
    try:
        os.setpriority(os.PRIO_PROCESS, pid, niceness)
    except OSError:  # gone already, or not ours to renice
        return False
    return True


class WarmConnection:
    """The connection that will check a freshly swapped-in database, opened and
    prepared (``inplace.prepare``) in the background while the next test runs."""

    def __init__(self, url: str, options: str | None) -> None:
        self._url = url
        self._options = options
        self._connection: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="warm connection", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(psycopg.Error):
            connection = psycopg.connect(
                self._url, autocommit=True, connect_timeout=10, options=self._options
            )
            try:
                inplace.prepare(connection)
            except psycopg.Error:
                connection.close()
                return
            self._connection = connection

    def take(self) -> psycopg.Connection | None:
        """The prepared connection (None: it failed; the caller connects itself)."""
        self._thread.join()
        return self._connection
