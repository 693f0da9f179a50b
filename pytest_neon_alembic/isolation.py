"""Write detection by transaction ids, for a branch that is a server of its own (Neon).

Every write takes a transaction id, committed or not, and reads never do. So a
transaction id taken before a test and one taken after it are consecutive
exactly when nothing was written in between — on a server where nothing else
runs: each Neon branch has its own compute. Sequences are the trap:
``nextval`` WAL-logs (and takes an id) only once every 32 calls, so after
migrating, ``seal_sequences`` sets every sequence's log count to zero; the
first ``nextval`` in any copy of that state then takes an id.

The local backend, where many databases share one server, does not count ids:
each database logs its own changes (``backends/inplace.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql

SEAL_SEQUENCES = """
DO $$
DECLARE s record;
BEGIN
  FOR s IN SELECT c.oid::regclass AS seq FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'S' AND n.nspname NOT LIKE 'pg\\_%'
  LOOP
    EXECUTE format('SELECT setval(%L, last_value, is_called) FROM %s', s.seq, s.seq);
  END LOOP;
END $$
"""

T = TypeVar("T")

_TAKE_ID = "SELECT txid_current()"

# Ids taken in between count unless their transaction was rolled back
# (txid_status is NULL for ids too old to tell: those count too).
_COMMITTED_IN_RANGE = (
    "SELECT count(*) FROM generate_series(%s::bigint, %s::bigint) AS id "
    "WHERE txid_status(id) IS DISTINCT FROM 'aborted'"
)

_SEQUENCE_NAMES = "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences ORDER BY 1"


def seal_sequences(connection: Any) -> None:
    """Zero every sequence's log count, so the next ``nextval`` takes a transaction id."""
    connection.execute(SEAL_SEQUENCES)


def write_marker(connection: Any) -> int:
    """A fresh transaction id (taking it uses one up), for ``wrote_since``."""
    return int(connection.execute(_TAKE_ID).fetchone()[0])


def sequence_state(connection: Any, names: list[str] | None = None) -> list[list[Any]]:
    """Every sequence's ``[name, last_value, is_called]``: what a rolled-back
    transaction can still have changed (``nextval`` is never rolled back)."""
    if names is None:
        names = [row[0] for row in connection.execute(_SEQUENCE_NAMES).fetchall()]
    if not names:
        return []
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, last_value, is_called FROM {}").format(sql.Literal(name), sql.SQL(name))
        for name in names
    )
    return [list(row) for row in connection.execute(query).fetchall()]


def restore_sequences(connection: Any, pristine: list[list[Any]]) -> bool:
    """Put the sequences back where ``pristine`` has them; False if that cannot be done.

    ``setval`` also zeroes the log count, as sealing did, so the next
    ``nextval`` still takes a transaction id.
    """
    try:
        current = sequence_state(connection, [name for name, _, _ in pristine])
    except Exception:  # a sequence is gone: only a reset can bring it back
        return False
    for (name, value, called), (_, pristine_value, pristine_called) in zip(
        current, pristine, strict=True
    ):
        if (value, called) != (pristine_value, pristine_called):
            connection.execute(
                "SELECT setval(%s::regclass, %s, %s)", (name, pristine_value, pristine_called)
            )
    return True


def wrote_since(
    connection: Any,
    marker: int,
    *,
    committed_only: bool = False,
    undo_rolled_back: Callable[[], bool] | None = None,
) -> bool:
    """Whether any transaction id was taken since ``marker`` (on this connection's server).

    ``committed_only``: ids of transactions that were rolled back don't count,
    if ``undo_rolled_back`` can put back what a rollback does not (sequences).
    Never answers False after a write.
    """
    now = write_marker(connection)
    if now == marker + 1:
        return False
    if not committed_only:
        return True
    committed = connection.execute(_COMMITTED_IN_RANGE, (marker + 1, now - 1)).fetchone()[0]
    if committed:
        return True
    return not (undo_rolled_back is not None and undo_rolled_back())


class KeptConnections:
    """One autocommit connection per branch, kept across tests for the checks above.

    A reset (local) or restore (Neon) ends it; the next use reconnects once.
    """

    def __init__(self, on_connect: Callable[[psycopg.Connection], None] | None = None) -> None:
        self._connections: dict[str, psycopg.Connection] = {}
        self._on_connect = on_connect

    def run(
        self,
        key: str,
        url: str,
        action: Callable[[psycopg.Connection], T],
        *,
        options: str | None = None,
    ) -> T:
        """``action`` on the kept connection (``options``: its session settings, given
        when it is opened)."""
        for attempt in (1, 2):
            try:
                connection = self._connections.get(key)
                if connection is None or connection.closed or connection.broken:
                    extra = {"options": options} if options else {}
                    connection = psycopg.connect(url, autocommit=True, connect_timeout=10, **extra)
                    if self._on_connect is not None:
                        self._on_connect(connection)
                    self._connections[key] = connection
                return action(connection)
            except psycopg.OperationalError:
                self.forget(key)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def adopt(self, key: str, connection: psycopg.Connection) -> None:
        """Keep ``connection`` (opened elsewhere) as the one for ``key``."""
        self.forget(key)
        self._connections[key] = connection

    def open_ones(self) -> list[psycopg.Connection]:
        return [c for c in self._connections.values() if not c.closed]

    def forget(self, key: str) -> None:
        connection = self._connections.pop(key, None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        for key in list(self._connections):
            self.forget(key)
