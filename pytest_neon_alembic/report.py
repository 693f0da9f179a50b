"""The terminal summary's figures, read from the events the run's processes recorded."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .coordination import RunDirectory
from .errors import NeonAlembicError


@dataclass
class Report:
    """The figures of the terminal summary."""

    used: bool = False
    backend: str = ""
    migration_seconds: float | None = None
    cache: str | None = None  # "hit": migrated state reused; "stored": kept for later runs
    swept: int = 0  # branches of crashed runs deleted at start
    created: int = 0
    deleted: int = 0
    kept: int = 0
    resets: int = 0
    clean: int = 0
    durations: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each, after the figures

    def lines(self) -> list[str]:
        migration = (
            "not run" if self.migration_seconds is None else f"{self.migration_seconds:.2f} s"
        )
        if self.cache == "hit":
            migration = f"cached ({migration})"
        lines = [
            f"backend: {self.backend}",
            f"migrations: {migration}",
            f"branches: {self.created} created, {self.deleted} deleted"
            + (f", {self.kept} kept (--neon-keep-branches)" if self.kept else "")
            + (f", {self.swept} left by crashed runs deleted" if self.swept else ""),
        ]
        resets = f"resets: {self.resets} done, {self.clean} skipped as clean"
        if self.durations:
            resets += f", median {statistics.median(self.durations) * 1000:.1f} ms"
        lines.append(resets)
        return lines + self.notes


def read_report(
    run: RunDirectory, backend_state: dict[str, Any] | None, describe: Callable[[], str]
) -> Report:
    """The report of ``run``; ``describe`` names the backend when its state does not (Neon)."""
    report = Report()
    if backend_state is None:
        return report
    report.used = True
    report.backend = backend_state.get("description", "")
    if not report.backend:
        with contextlib.suppress(NeonAlembicError):  # cosmetic; never fails the run's end
            report.backend = describe()
    for event in run.events():
        kind = event["event"]
        if kind == "created":
            report.created += 1
        elif kind == "deleted":
            report.deleted += 1
        elif kind == "migrated":
            report.migration_seconds = event["seconds"]
        elif kind == "swept":
            report.swept += len(event["branches"])
        elif kind == "cache":
            report.cache = "hit" if event["hit"] else "stored"
        elif kind == "resets":
            report.resets += event["resets"]
            report.clean += event["clean"]
            report.durations.extend(event["durations"])
    return report
