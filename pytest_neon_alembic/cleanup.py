"""``pytest --neon-cleanup``: what earlier runs left behind, listed and (when stale) deleted.

No test runs and nothing is created. On Neon: this plugin's branches of the
project, each with what is known of the run that made it; the stale ones are
deleted by the same rules as the sweep every run does at start (``sweep.py``),
and nothing else in the project is touched. Locally: the servers, files and
databases of killed runs on this machine, as every start cleans them.
"""

from __future__ import annotations

import os

from .backend_start import marker_is_abandoned
from .backends.local import LocalBackend
from .config import Settings
from .coordination import state_root
from .errors import NeonAlembicError
from .kept_server import stop_idle
from .run_end import reap_abandoned_runs


def clean_up(settings: Settings) -> tuple[list[str], bool]:
    """The lines to print, and whether everything stale could be removed."""
    try:
        lines, removed_all = _clean_neon(settings) if settings.backend == "neon" else ([], True)
        root = state_root()
        reaped = reap_abandoned_runs(root)
        kept = stop_idle(root)
        if settings.backend != "neon" and settings.local_url:
            lines += _clean_server(settings.local_url)
    except NeonAlembicError as error:
        return [f"pytest-neon-alembic: {error}"], False
    lines.append(
        f"Files of {len(reaped)} killed run(s) on this machine removed."
        if reaped
        else "No files of killed runs on this machine."
    )
    if kept:
        lines.append(f"Kept embedded servers stopped: {', '.join(str(d) for d in kept)}.")
    return lines, removed_all


def _clean_neon(settings: Settings) -> tuple[list[str], bool]:
    from .backends.neon import NeonBackend

    backend = NeonBackend.from_settings(settings)  # no owner: it creates nothing
    try:
        result = backend.start()
    finally:
        backend.close()
    lines = [f"Branches of pytest-neon-alembic in Neon project {settings.project_id}:"]
    for word, leftovers in (
        ("deleted", result.deleted),
        ("NOT deleted", result.failed),
        ("left alone", result.spared),
    ):
        lines += [f"  {word}: {leftover.label()} -- {leftover.reason}" for leftover in leftovers]
    if len(lines) == 1:
        lines.append("  none.")
    lines.append(
        f"{len(result.deleted)} deleted, {len(result.failed)} could not be deleted, "
        f"{len(result.spared)} left alone (may still be in use). Nothing else in the project "
        "was touched."
    )
    return lines, not result.failed


def _clean_server(local_url: str) -> list[str]:
    backend = LocalBackend(local_url, run_id="cleanup", owner_pid=os.getpid())
    try:
        dropped = backend.drop_abandoned(marker_is_abandoned)
    finally:
        backend.close()
    return [f"Databases of killed runs dropped on the server: {', '.join(dropped) or 'none'}."]
