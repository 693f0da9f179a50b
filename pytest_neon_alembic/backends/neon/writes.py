"""Write detection on Neon branches: each branch is its own server, so it is exact.

The SQL is ``isolation``'s; this keeps one connection per branch for it (a
restore, or a suspended compute, ends it: reconnected once) and notes the
server version on the way, for the report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from ... import isolation
from ...branch import NeonBranch

T = TypeVar("T")


class BranchWrites:
    """Markers and checks on this process's kept connection to each branch."""

    def __init__(self) -> None:
        self.server_version: str | None = None
        self._connections = isolation.KeptConnections(on_connect=self._note_version)

    def seal(self, branch: NeonBranch) -> list[list[Any]]:
        """Seal a freshly migrated branch's sequences; their positions. Raises psycopg.Error."""
        with psycopg.connect(
            branch.connection_string, autocommit=True, connect_timeout=10
        ) as connection:
            self._note_version(connection)
            isolation.seal_sequences(connection)
            return isolation.sequence_state(connection)

    def write_marker(self, branch: NeonBranch) -> int | None:
        if branch.read_only:
            return None
        try:
            return self._on_connection(branch, isolation.write_marker)
        except psycopg.Error:
            return None  # cannot tell: the test counts as writing

    def wrote_since(
        self,
        branch: NeonBranch,
        marker: Any,
        *,
        committed_only: bool = False,
        sequences: list[list[Any]] | None = None,
    ) -> bool:
        if marker is None:
            return True

        def detect(connection: psycopg.Connection) -> bool:
            def undo_rolled_back() -> bool:
                return sequences is not None and isolation.restore_sequences(connection, sequences)

            return isolation.wrote_since(
                connection,
                marker,
                committed_only=committed_only,
                undo_rolled_back=undo_rolled_back,
            )

        try:
            return self._on_connection(branch, detect)
        except psycopg.Error:
            return True  # when in doubt, reset

    def forget(self, branch: NeonBranch) -> None:
        """Drop the kept connection (the branch is being restored or deleted)."""
        self._connections.forget(branch.key)

    def version(self) -> str | None:
        """The server version, from a connection made so far (None before any)."""
        for connection in self._connections.open_ones():
            self._note_version(connection)
        return self.server_version

    def close(self) -> None:
        self._connections.close()

    def _on_connection(self, branch: NeonBranch, action: Callable[[psycopg.Connection], T]) -> T:
        return self._connections.run(branch.key, branch.connection_string, action)

    def _note_version(self, connection: psycopg.Connection) -> None:
        if self.server_version is None:
            number = connection.info.server_version
            self.server_version = f"{number // 10000}.{number % 100}"
