"""The end of a run: delete what it created, stop its server, keep the migrated state;
and the same cleanup for runs whose process was killed, at the next start."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from .backend_start import build_backend
from .backends.local import LocalBackend
from .branch import NeonBranch
from .config import Settings
from .coordination import RunDirectory, abandoned_runs
from .errors import NeonAlembicError
from .report import Report, read_report, removal_hint
from .sealing import is_sealed


def finish_run(
    settings: Settings, run: RunDirectory, describe: Callable[[], str] | None = None
) -> Report:
    """Delete what the run created, stop the server, and report; owner process only.

    ``describe`` names the backend for the report when its state does not (Neon):
    the owner's own backend may know the version from its connections, where a
    fresh one would have to ask the API.
    """
    backend_state = run.done_quietly("backend")
    if backend_state is None:
        report = read_report(run, None, str)
        _remove_run(run)
        return report
    backend = build_backend(backend_state, settings)
    try:
        report = read_report(run, backend_state, describe or backend.describe)
        pending = [recorded for recorded in run.branches() if not recorded.deleted]
        if settings.keep_branches:
            report.kept = len(pending)
            run.mark_kept()
            for recorded in pending:
                with contextlib.suppress(NeonAlembicError):
                    backend.keep_branch(recorded.branch)
        elif server_goes_at_end(run, backend_state):
            # Its databases go with its files when it stops (at once, below), not one
            # DROP DATABASE at a time.
            report.deleted += len(pending)
        else:
            for number, recorded in enumerate(reversed(pending)):
                try:
                    backend.delete_branch(recorded.branch)
                except NeonAlembicError:
                    if backend_state.get("server"):
                        # The embedded server is unusable (crashed, full disk): its
                        # cluster, with every branch in it, goes with the run directory.
                        gone = len(pending) - number
                        report.deleted += gone
                        report.notes.append(
                            f"branches: {gone} removed with the embedded server's files (it "
                            "could not be reached to drop them)"
                        )
                        break
                    report.left.append(_label(recorded.branch))
                    continue
                run.record_deleted(recorded.branch)
                report.deleted += 1
            if report.left:
                report.left.reverse()  # in the order they were made
                report.removal = removal_hint(backend_state)
    finally:
        backend.close()
        server = backend_state.get("local", {}).get("embedded_server") or {}
        if server.get("kept_dir"):
            from .kept_server import release_standby

            release_standby(Path(server["kept_dir"]))
        if backend_state.get("server") and not settings.keep_branches:
            _stop_server(backend_state["server"], report)
    if not settings.keep_branches:
        _remove_run(run)
    return report


def server_goes_at_end(run: RunDirectory, backend_state: dict | None = None) -> bool:
    """Whether the run's embedded server goes at its end with every database in it: it
    is not kept as the next run's cache (the run stored no migrated state)."""
    state = backend_state or run.done_quietly("backend")
    if not (state and state.get("server")):
        return False
    return not any(event["event"] == "cache" and not event["hit"] for event in run.events())


def _stop_server(state: dict, report: Report) -> None:
    """Stop the embedded server; keep its cluster for the next run if this run stored a
    migrated state and the cluster holds nothing else (never after a crash or a full disk)."""
    from .server.embedded import EmbeddedServer

    server = EmbeddedServer.from_state(state)
    if report.cache != "stored":
        server.stop(discard=True)
        return
    leftovers = _other_databases(server.admin_url)
    server.stop()
    why = f"databases left in it: {', '.join(leftovers)}" if leftovers else server.save_snapshot()
    if why:
        report.notes.append(f"cache: the migrated state was not kept ({why})")


def _other_databases(admin_url: str) -> list[str]:
    """Databases other than the built-in ones and cached states (["?"]: cannot tell)."""
    import psycopg

    try:
        with psycopg.connect(admin_url, connect_timeout=5) as connection:
            rows = connection.execute(
                "SELECT datname FROM pg_database WHERE datname NOT IN "
                "('postgres', 'template0', 'template1') AND datname NOT LIKE 'pytest\\_cache\\_%'"
            ).fetchall()
    except psycopg.Error:
        return ["? (the server cannot be reached)"]
    return [name for (name,) in rows]


def _label(branch: NeonBranch) -> str:
    """A branch as the report names it: name and ID (read-only access: its endpoint)."""
    if branch.read_only and branch.endpoint_id:
        return f"read-only endpoint {branch.endpoint_id} of {branch.branch_id}"
    if branch.name and branch.name != branch.branch_id:
        return f"{branch.name} ({branch.branch_id})"
    return branch.branch_id


def _remove_run(run: RunDirectory) -> None:
    """The run's files go; a server still running in them is stopped first, whatever
    state the run ended in."""
    from .server.embedded import stop_abandoned_server
    from .server.standby import stop_hot_standby

    stop_hot_standby(run.path)
    stop_abandoned_server(run.path)
    run.remove()


def reap_abandoned_runs(root: Path) -> list[str]:
    """Clean up after runs whose process was killed: servers, databases, files."""
    from .server.embedded import stop_abandoned_server
    from .server.standby import stop_hot_standby

    cleaned = []
    for run in abandoned_runs(root):
        stop_hot_standby(run.path)  # nothing to do unless the run had read-only access
        stop_abandoned_server(run.path)  # nothing to do unless the run had an embedded server
        state = run.done_quietly("backend")
        given_server = state and state.get("kind") == "local" and not state.get("server")
        # A sealed URL is unusable (its key died with the run): the next run on that
        # server drops the databases by their markers instead.
        if given_server and not run.kept() and not is_sealed(state["local"]["admin_url"]):
            backend = LocalBackend.from_state(state["local"])
            try:
                for recorded in reversed(run.branches()):
                    if not recorded.deleted:
                        backend.delete_branch(recorded.branch)
            except NeonAlembicError:
                pass  # server gone or unreachable: its databases carry markers for later
            finally:
                backend.close()
        run.remove()
        cleaned.append(run.run_id)
    return cleaned
