"""The per-test path of the isolated branch: a marker before the test, a check after it,
and a reset when the database saw a write.

Kept apart from the creation of branches (``session.py``) so that what happens
around every single test reads in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .backends.base import Backend
from .branch import NeonBranch
from .coordination import RunDirectory


@dataclass
class ResetStats:
    """What the reset strategy did in this process."""

    resets: int = 0
    clean: int = 0
    durations: list[float] = field(default_factory=list)


class IsolatedResets:
    """Write detection and resets for one process's isolated branch(es)."""

    def __init__(
        self,
        backend: Callable[[], Backend],
        guard: Callable[[NeonBranch, str], None],
        run: RunDirectory,
    ) -> None:
        self._backend = backend
        self._guard = guard
        self._run = run
        self.stats = ResetStats()
        self._sequences: list[list[Any]] | None = None
        self._after_reset: dict[str, list[Callable[[], None]]] = {}
        self._tests_started = 0  # lets a check's id serve the very next test as its marker
        self._checked_in_test = -1

    def test_started(self) -> None:
        self._tests_started += 1

    def before_test(self, branch: NeonBranch) -> Any:
        backend = self._backend()
        if self._checked_in_test != self._tests_started - 1:
            backend.forget_marker(branch)  # not the test right after the last check
        return backend.write_marker(branch)

    def after_test(
        self, branch: NeonBranch, source: NeonBranch, marker: Any, *, committed_only: bool = False
    ) -> None:
        """Reset ``branch`` to ``source`` if the database saw a write since ``marker``.

        ``committed_only``: writes that were rolled back do not count (the
        transaction strategy, which rolls back everything it opened).
        """
        self._checked_in_test = self._tests_started
        backend = self._backend()
        if not backend.wrote_since(
            branch, marker, committed_only=committed_only, sequences=self._pristine_sequences()
        ):
            self.stats.clean += 1
            return
        self._guard(branch, "reset")
        started = time.perf_counter()
        backend.reset_branch(branch, source)
        self.stats.durations.append(time.perf_counter() - started)
        self.stats.resets += 1
        for callback in self._after_reset.get(branch.key, ()):
            callback()

    def on_reset(self, branch: NeonBranch, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each reset of ``branch`` (e.g. to drop pooled connections
        the reset ended, instead of finding them dead at the next checkout)."""
        self._after_reset.setdefault(branch.key, []).append(callback)

    def record(self, worker: str) -> None:
        """Record this process's figures for the report."""
        stats = self.stats
        if stats.resets or stats.clean:
            self._run.record_event(
                "resets",
                worker=worker,
                resets=stats.resets,
                clean=stats.clean,
                durations=stats.durations,
            )

    def _pristine_sequences(self) -> list[list[Any]] | None:
        """The migrated state's sequence positions, as ``seal`` reported them."""
        if self._sequences is None:
            for event in self._run.events():
                if event["event"] == "migrated":
                    self._sequences = event["sequences"]
        return self._sequences
