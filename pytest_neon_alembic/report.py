"""The terminal summary's figures, read from the events the run's processes recorded."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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
    migration_how: str | None = None  # None: a custom neon_apply_migrations; "none": no config
    migration_ini: str | None = None
    migration_failed: bool = False
    swept: list[str] = field(default_factory=list)  # stale branches deleted at start
    sweep_failed: list[str] = field(default_factory=list)  # stale ones that could not be
    created: int = 0
    deleted: int = 0
    kept: int = 0
    left: list[str] = field(default_factory=list)  # what this run could not delete
    removal: str = ""  # how to remove what was left
    resets: int = 0
    in_place: int = 0  # of the resets, those put back in place (no new database)
    clean: int = 0
    durations: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each, after the figures

    def lines(self) -> list[str]:
        lines = [
            f"backend: {self.backend}",
            f"migrations: {self.migration_line()}",
            f"branches: {self.created} created, {self.deleted} deleted"
            + (f", {self.kept} kept (--neon-keep-branches)" if self.kept else ""),
        ]
        if self.left:
            lines.append(
                f"left behind (could not be deleted): {', '.join(self.left)}. {self.removal}"
            )
        if self.swept:
            lines.append(
                f"stale branches of earlier runs: {len(self.swept)} deleted "
                f"({', '.join(self.swept)})"
            )
        if self.sweep_failed:
            lines.append(
                f"stale branches of earlier runs not deleted: {'; '.join(self.sweep_failed)}. "
                "`pytest --neon-cleanup` tries again and lists them."
            )
        resets = f"resets: {self.resets} done, {self.clean} skipped as clean"
        if self.in_place:
            resets += f", {self.in_place} in place"
        if self.durations:
            resets += f", median {statistics.median(self.durations) * 1000:.1f} ms"
        lines.append(resets)
        return lines + self.notes

    def migration_line(self) -> str:
        """What happened to the migrations, never hiding it behind "not run"."""
        where = _shown_path(self.migration_ini) if self.migration_ini else ""
        if self.migration_failed:
            how = self.migration_how or "custom neon_apply_migrations"
            return f"failed ({how}, {where})" if where else f"failed ({how})"
        if self.migration_seconds is None:
            return "not run (no test used the migrated state)"
        seconds = f"{self.migration_seconds:.2f} s"
        if self.migration_how == "none":
            return (
                f"none ({seconds}: no alembic.ini in the rootdir nor migrations/alembic.ini; "
                "the migrated state is the parent's)"
            )
        if self.cache == "hit":
            return f"cached ({seconds}; {where})"
        if self.migration_how is None:
            return f"{seconds} (custom neon_apply_migrations)"
        return f"{seconds} ({self.migration_how}, {where})"


def _shown_path(path: str) -> str:
    """A path relative to the working directory when it is under it."""
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(Path.cwd()))
    return path


def removal_hint(backend_state: dict[str, Any]) -> str:
    """How to remove what a run could not delete, for the report's "left behind" line."""
    if backend_state.get("kind") == "neon":
        project = (backend_state.get("neon") or {}).get("project_id")
        return (
            "The next run on this machine that uses Neon deletes them at its start (on "
            "another machine: once idle for an hour), as does `pytest --neon-cleanup`; or now: "
            f"`neonctl branches delete <id> --project-id {project}`, or the Neon console."
        )
    if backend_state.get("server"):
        return "They went with the embedded server, which was stopped."
    return (
        "The next run on this machine with this server drops them at its start; or now: "
        "`DROP DATABASE <name> WITH (FORCE)` (and `DROP ROLE <name>` for read-only access)."
    )


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
            report.swept += event["branches"]
            report.sweep_failed += event.get("failed", [])
        elif kind == "migration":
            report.migration_how = event["how"]
            report.migration_ini = event.get("ini")
        elif kind == "migration_failed":
            report.migration_failed = True
        elif kind == "cache":
            report.cache = "hit" if event["hit"] else "stored"
        elif kind == "resets":
            report.resets += event["resets"]
            report.in_place += event.get("in_place", 0)
            report.clean += event["clean"]
            report.durations.extend(event["durations"])
    return report
