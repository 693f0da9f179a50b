"""Spare copies: the next reset's database, cloned in the background while a test runs.

A reset then only drops the used database and renames the spare in its place
(a few milliseconds) instead of cloning on the test's critical path. The
spare's own transaction ids (creating it, commenting it) are reported, so write
detection does not mistake the plugin's work for the test's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg

_OWN_IDS = """
SELECT d.xmin::text, s.xmin::text FROM pg_database d
LEFT JOIN pg_shdescription s ON s.objoid = d.oid AND s.classoid = 'pg_database'::regclass
WHERE d.datname = %s
"""


class SpareClone:
    """One database being cloned from a template on a connection of its own."""

    def __init__(
        self,
        admin_url: str,
        template: str,
        name: str,
        clone: Callable[[psycopg.Connection, str, str], None],
    ) -> None:
        self.template = template
        self.name = name
        self._admin_url = admin_url
        self._clone = clone
        self._error: BaseException | None = None
        self._ids: frozenset[int] = frozenset()
        self._thread = threading.Thread(target=self._run, name=f"spare {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with psycopg.connect(self._admin_url, autocommit=True) as connection:
                self._clone(connection, self.template, self.name)
                row = connection.execute(_OWN_IDS, (self.name,)).fetchone()
                self._ids = frozenset(int(value) for value in row if value is not None)
        except BaseException as error:  # reported through ready(); the reset falls back
            self._error = error

    def ready(self) -> bool:
        """Wait for the clone; False if it failed (the caller clones the slow way)."""
        self._thread.join()
        return self._error is None

    def own_transaction_ids(self) -> frozenset[int]:
        """The 32-bit transaction ids the clone took (after waiting for it)."""
        self._thread.join()
        return self._ids
