"""Spare copies: the next reset's database, cloned in the background while a test runs.

A reset then only renames the used database away and the spare in its place
(two renames, well under a millisecond each) instead of cloning on the test's
critical path; dropping the used database (DROP forces a checkpoint) happens
here too, in the background. Every transaction id this work takes is reported,
so write detection does not mistake the plugin's work for the test's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

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
        clone: Callable[[str, str, psycopg.Connection], set[int]],
        drop_first: str | None = None,
    ) -> None:
        self.template = template
        self.name = name
        self._drop_first = drop_first
        self._admin_url = admin_url
        self._clone = clone
        self._error: BaseException | None = None
        self._ids: frozenset[int] = frozenset()
        self._thread = threading.Thread(target=self._run, name=f"spare {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with psycopg.connect(self._admin_url, autocommit=True) as connection:
                ids: set[int] = set()
                if self._drop_first:
                    ids |= self._drop(connection, self._drop_first)
                ids |= self._clone(self.template, self.name, connection)
                row = connection.execute(_OWN_IDS, (self.name,)).fetchone()
                ids |= {int(value) for value in row if value is not None}
                self._ids = frozenset(ids)
        except BaseException as error:  # reported through ready(); the reset falls back
            self._error = error

    @staticmethod
    def _drop(connection: psycopg.Connection, database: str) -> set[int]:
        """Drop ``database``; the ids taken for it, as far as they can be told.

        A dropped database's own id cannot be read back, so it is bracketed by
        two ids of our own: if exactly one id lies between them, it was the
        DROP's. Otherwise another session took ids meanwhile and the DROP's
        stays unexplained, which can only cost an extra reset, never a missed one.
        """
        before = connection.execute("SELECT txid_current()").fetchone()[0]
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        after = connection.execute("SELECT txid_current()").fetchone()[0]
        ids = {before, after} | ({before + 1} if after == before + 2 else set())
        return {tx & 0xFFFFFFFF for tx in ids}

    def ready(self) -> bool:
        """Wait for the clone; False if it failed (the caller clones the slow way)."""
        self._thread.join()
        return self._error is None

    def own_transaction_ids(self) -> frozenset[int]:
        """The 32-bit transaction ids the clone took (after waiting for it)."""
        self._thread.join()
        return self._ids
