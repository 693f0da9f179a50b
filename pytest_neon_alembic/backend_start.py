"""Starting a run's backend once, and rebuilding it in every process of the run.

``start_backend`` runs in one process (through ``RunDirectory.run_once``): it
starts the embedded server or checks a given one, or starts the Neon backend;
its result is a JSON state from which ``build_backend`` makes the backend in
any process. The Neon API key is never part of that state.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .backends.base import Backend
from .backends.local import LocalBackend
from .config import Settings
from .coordination import RunDirectory
from .errors import ConfigError
from .migrations import AlembicProject
from .processes import pid_namespace, process_alive


def start_backend(
    settings: Settings, run: RunDirectory, project: AlembicProject | None
) -> dict[str, Any]:
    """Start what the run's branches live on; the state ``build_backend`` reads."""
    owner_pid = run.owner_pid()
    if settings.backend == "neon":
        from .backends.neon import NeonBackend

        # One API call: checks the key and project, finds the default branch (never
        # touched), resolves the parent, and sweeps stale branches of crashed runs.
        neon = NeonBackend.from_settings(settings, run_id=run.run_id, owner_pid=owner_pid)
        try:
            swept = neon.start()
        finally:
            neon.close()
        if swept.deleted or swept.failed:
            run.record_event(
                "swept",
                branches=[leftover.label() for leftover in swept.deleted],
                failed=[f"{leftover.label()}: {leftover.reason}" for leftover in swept.failed],
            )
        # No description now: on Neon it may cost an API call; the report asks later.
        return {"kind": "neon", "neon": neon.to_state(), "server": None}

    def local_backend(admin_url: str, label: str, server: dict | None = None) -> LocalBackend:
        return LocalBackend(
            admin_url,
            run_id=run.run_id,
            owner_pid=owner_pid,
            parent_database=settings.parent_branch,
            server_label=label,
            embedded_server=server,
        )

    if settings.local_url:
        backend = local_backend(settings.local_url, "server")
        backend.check_privileges()
        if settings.pg_version and backend.server_version // 10000 != settings.pg_version:
            raise ConfigError(
                f"--neon-pg-version asks for PostgreSQL {settings.pg_version}, but the server of "
                f"--neon-local-url runs {backend.server_version // 10000}. Drop the option, or "
                "point --neon-local-url at a server of that version."
            )
        backend.drop_abandoned(marker_is_abandoned)
        return {
            "kind": "local",
            "local": backend.to_state(),
            "server": None,
            "description": backend.describe(),
        }
    if settings.keep_server:
        return _kept_backend(settings, run, local_backend)
    from .server.embedded import EmbeddedServer

    snapshot = None
    if project is not None and not settings.no_cache:
        snapshot = project.project_id()[:16]  # the cluster kept with its migrated state
    server = EmbeddedServer.start(
        run.path, run.root / "cache", snapshot=snapshot, pg_version=settings.pg_version
    )
    backend = local_backend(server.admin_url, "embedded", server.to_state())
    backend.close_to_public("postgres", "template1")  # only the run's roles reach databases
    return {
        "kind": "local",
        "local": backend.to_state(),
        "server": server.to_state(),
        "description": backend.describe(),
    }


def _kept_backend(
    settings: Settings, run: RunDirectory, local_backend: Callable[..., LocalBackend]
) -> dict[str, Any]:
    """The kept embedded server, used like a server given with --neon-local-url (the run's
    own databases, the migrated state cached in it); read-only access is its kept
    hot standby."""
    from .kept_server import pause_standby, use_kept_server

    server, directory = use_kept_server(run.root, settings.pg_version, settings.keep_server)
    pause_standby(directory)
    kept = dict(server.to_state(), kept_dir=str(directory))
    backend = local_backend(server.admin_url, "kept embedded", kept)
    backend.close_to_public("postgres", "template1")
    backend.drop_abandoned(marker_is_abandoned)
    return {
        "kind": "local",
        "local": backend.to_state(),
        "server": None,
        "kept": True,
        "description": backend.describe(),
    }


def build_backend(state: dict[str, Any], settings: Settings | None = None) -> Backend:
    """The backend described by a run's ``state``; ``settings`` give what is never written
    to disk (the Neon API key)."""
    if state["kind"] == "local":
        if state.get("server"):
            from .server.watchdog import watch

            watch(int(state["server"]["pid"]), Path(state["server"]["data_dir"]))
        return LocalBackend.from_state(state["local"])
    if state["kind"] == "neon":
        from .backends.neon import NeonBackend

        return NeonBackend.from_state(
            state["neon"], api_key=settings.api_key if settings is not None else None
        )
    raise ConfigError(f"Unknown backend kind {state['kind']!r}")


def marker_is_abandoned(marker: dict[str, Any]) -> bool:
    """A database left by a run on this host whose process is gone (and not kept on purpose).

    A run in another PID namespace (another container with the same host name) is
    never judged: its pid means nothing here.
    """
    if marker.get("kept") or marker.get("pidns", pid_namespace()) != pid_namespace():
        return False
    return marker.get("host") == socket.gethostname() and not process_alive(int(marker["pid"]))
