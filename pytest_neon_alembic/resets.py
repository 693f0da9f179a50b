"""The per-test path of the isolated branch: a marker before the test (if the backend
needs one), and after it a check that puts back what the test changed.

Kept apart from the creation of branches (``session.py``) so that what happens
around every single test reads in one place.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .backends.base import CLEAN, RESTORED, Backend
from .backends.inplace import WARM
from .branch import NeonBranch
from .coordination import RunDirectory


@dataclass
class ResetStats:
    """What the reset strategy did in this process."""

    resets: int = 0  # in place or by replacing the branch
    in_place: int = 0
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

    def before_test(self, branch: NeonBranch) -> Any:
        return self._backend().write_marker(branch)

    def after_test(
        self, branch: NeonBranch, source: NeonBranch, marker: Any, *, committed_only: bool = False
    ) -> None:
        """Bring ``branch`` back to ``source``'s state if the database saw a write.

        ``committed_only``: writes that were rolled back do not count (the
        transaction strategy, which rolls back everything it opened).
        """
        self._guard(branch, "reset")
        started = time.perf_counter()
        outcome = self._backend().after_test(
            branch,
            source,
            marker,
            committed_only=committed_only,
            sequences=self._pristine_sequences(),
        )
        if outcome == CLEAN:
            self.stats.clean += 1
            return
        self.stats.durations.append(time.perf_counter() - started)
        self.stats.resets += 1
        if outcome == RESTORED:
            self.stats.in_place += 1
            return  # connections survive a restore in place
        for callback in self._after_reset.get(branch.key, ()):
            callback()

    def on_reset(self, branch: NeonBranch, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each reset of ``branch`` that ended its connections
        (e.g. to drop pooled connections, instead of finding them dead at the next
        checkout); a restore in place keeps them."""
        self._after_reset.setdefault(branch.key, []).append(callback)

    def record(self, worker: str) -> None:
        """Record this process's figures for the report."""
        stats = self.stats
        if stats.resets or stats.clean:
            self._run.record_event(
                "resets",
                worker=worker,
                resets=stats.resets,
                in_place=stats.in_place,
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


def renew_pool(engine: Any) -> None:
    """After a reset that ended the branch's connections: drop the engine's pooled ones,
    and open one again in the background, its catalog caches loaded (``inplace``'s
    ``warm()``), so the next test finds it ready."""
    engine.dispose()
    threading.Thread(target=_warm_one, args=(engine,), name="warm pool", daemon=True).start()


def _warm_one(engine: Any) -> None:
    with contextlib.suppress(Exception), engine.connect() as connection:
        with contextlib.suppress(Exception):  # no warm() there (Neon): the connection is enough
            connection.exec_driver_sql(WARM)
        connection.rollback()
