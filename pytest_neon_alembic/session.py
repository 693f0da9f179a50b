"""The branches of one test run: created once, guarded, reset, and deleted at the end.

``BranchSession`` is what the fixtures talk to. It knows nothing of pytest: it
combines the settings, the run directory shared by the run's processes, and a
backend. Shared work (server, migration, read-only access, dirty branch) goes
through ``RunDirectory.run_once`` so it happens in one process; per-worker
branches (isolated, shared) are made by the worker that needs them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .backends.base import Backend
from .backends.local import LocalBackend
from .branch import BranchRole, NeonBranch
from .checks import run_checks
from .config import Settings
from .coordination import RunDirectory, abandoned_runs, state_root
from .errors import ConfigError, GuardError, MigrationError, NeonAlembicError
from .migrations import AlembicProject
from .processes import process_alive

# Branches that live for a module or a test may expire on their own (crash safety
# on Neon). Session-long ones may not: Neon refuses children under an expiring
# branch (migration), and a session outlasting the expiry would lose its dirty or
# isolated branch mid-run; the orphan sweep of a later run covers them instead.
SHORT_LIVED_ROLES = frozenset({BranchRole.SHARED, BranchRole.FRESH})


@dataclass
class ResetStats:
    """What the reset strategy did in this process."""

    resets: int = 0
    clean: int = 0
    durations: list[float] = field(default_factory=list)


class BranchSession:
    """One process's view of the run's branches."""

    def __init__(self, settings: Settings, run: RunDirectory, *, owner: bool, worker: str) -> None:
        self.settings = settings
        self.run = run
        self.owner = owner  # this process deletes everything and stops the server at the end
        self.worker = worker
        self.stats = ResetStats()
        self._backend: Backend | None = None
        self._created_here: set[str] = set()
        self._fresh_count = 0
        self._sequences: list[list[Any]] | None = None
        self._after_reset: dict[str, list[Callable[[], None]]] = {}
        self._tests_started = 0  # lets a check's id serve the very next test as its marker
        self._checked_in_test = -1

    # -- the backend ----------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = build_backend(
                self.run.run_once("backend", self._start_backend), self.settings
            )
        return self._backend

    def _start_backend(self) -> dict[str, Any]:
        settings = self.settings
        owner_pid = self.run.owner_pid()
        if settings.backend == "neon":
            from .backends.neon import NeonBackend

            # One API call: checks the key and project, finds the default branch (never
            # touched), resolves the parent, and sweeps stale branches of crashed runs.
            neon = NeonBackend.from_settings(settings)
            try:
                swept = neon.start()
            finally:
                neon.close()
            if swept:
                self.run.record_event("swept", branches=swept)
            # No description now: on Neon it may cost an API call; the report asks later.
            return {"kind": "neon", "neon": neon.to_state(), "server": None}

        def local_backend(admin_url: str, label: str) -> LocalBackend:
            return LocalBackend(
                admin_url,
                run_id=self.run.run_id,
                owner_pid=owner_pid,
                parent_database=settings.parent_branch,
                server_label=label,
            )

        if settings.local_url:
            backend = local_backend(settings.local_url, "server")
            backend.check_privileges()
            backend.drop_abandoned(_marker_is_abandoned)
            return {
                "kind": "local",
                "local": backend.to_state(),
                "server": None,
                "description": backend.describe(),
            }
        from .backends.embedded import EmbeddedServer

        project = self.alembic_project()
        snapshot = None
        if project is not None and not settings.no_cache:
            snapshot = project.project_id()[:16]  # the cluster kept with its migrated state
        server = EmbeddedServer.start(self.run.path, state_root() / "cache", snapshot=snapshot)
        backend = local_backend(server.admin_url, "embedded")
        return {
            "kind": "local",
            "local": backend.to_state(),
            "server": server.to_state(),
            "description": backend.describe(),
        }

    # -- branches -------------------------------------------------------------------------

    def branch_name(self, suffix: str) -> str:
        return self.backend.branch_name(self.run.run_id, suffix)

    def create(self, role: BranchRole, suffix: str, parent: NeonBranch | None) -> NeonBranch:
        if parent is not None:
            self.guard(parent, "branch from")
        branch = self.backend.create_branch(
            self.branch_name(suffix), parent, can_expire=role in SHORT_LIVED_ROLES
        )
        self._created_here.add(branch.key)
        self.run.record_created(role, branch)
        return branch

    def guard(self, branch: NeonBranch, action: str) -> None:
        """Refuse to touch a branch that this run did not create."""
        if branch.key in self._created_here or branch.key in self.run.created_keys():
            return
        raise GuardError(
            f"Refusing to {action} branch {branch.branch_id!r}: this test session did not create "
            "it. pytest-neon-alembic only modifies the branches it creates."
        )

    def delete(self, branch: NeonBranch) -> None:
        self.guard(branch, "delete")
        self.backend.delete_branch(branch)
        self.run.record_deleted(branch)

    def release(self, branch: NeonBranch) -> None:
        """A worker is done with ``branch``: delete it, unless branches are kept."""
        if not self.settings.keep_branches:
            self.delete(branch)

    def migration_branch(self) -> NeonBranch:
        """The migration branch, created once per run (not yet migrated)."""
        return self._shared(
            "migration-branch", lambda: self.create(BranchRole.MIGRATION, "migration", None)
        )

    def migrated_branch(self, apply_migrations: Callable[[NeonBranch], None]) -> NeonBranch:
        """The migration branch after ``apply_migrations`` ran on it, exactly once per run."""

        def migrate() -> NeonBranch:
            branch = self.migration_branch()
            self.guard(branch, "migrate")
            started = time.perf_counter()
            try:
                apply_migrations(branch)
            except NeonAlembicError:
                self._discard(branch)
                raise
            except Exception as error:
                self._discard(branch)
                raise MigrationError(
                    f"neon_apply_migrations failed: {type(error).__name__}: {error}"
                ) from error
            sequences = self.backend.seal(branch)
            self.run.record_event(
                "migrated", seconds=time.perf_counter() - started, sequences=sequences
            )
            return branch

        return self._shared("migrated", migrate)

    def readonly_branch(self, migrated: NeonBranch) -> NeonBranch:
        def create() -> NeonBranch:
            self.guard(migrated, "branch from")
            branch = self.backend.create_readonly(self.branch_name("readonly"), migrated)
            self.run.record_created(BranchRole.READONLY, branch)
            return branch

        return self._shared("readonly", create)

    def dirty_branch(self, migrated: NeonBranch) -> NeonBranch:
        return self._shared("dirty", lambda: self.create(BranchRole.DIRTY, "dirty", migrated))

    def isolated_branch(self, migrated: NeonBranch) -> NeonBranch:
        return self.create(BranchRole.ISOLATED, f"isolated_{self.worker}", migrated)

    def shared_branch(self, migrated: NeonBranch, number: int) -> NeonBranch:
        return self.create(BranchRole.SHARED, f"shared_{self.worker}_{number}", migrated)

    def _shared(self, step: str, create: Callable[[], NeonBranch]) -> NeonBranch:
        return NeonBranch.from_dict(self.run.run_once(step, lambda: create().to_dict()))

    def _discard(self, branch: NeonBranch) -> None:
        with contextlib.suppress(NeonAlembicError):
            self.delete(branch)

    # -- migrations -----------------------------------------------------------------------

    def alembic_project(self) -> AlembicProject | None:
        if self.settings.alembic_ini is None:
            return None
        return AlembicProject(self.settings.alembic_ini)

    def apply_alembic(self, branch: NeonBranch) -> None:
        """The default ``neon_apply_migrations``: ``alembic upgrade head``, if there is a config.

        The migrated state is cached under a hash of the migration files: when
        a copy for the same hash exists, the branch becomes that copy and no
        migration runs (``--neon-no-cache`` turns this off).
        """
        project = self.alembic_project()
        if project is None:
            return
        self.guard(branch, "migrate")
        prefix = f"pytest_cache_{project.project_id()[:8]}_"
        cache_name = None if self.settings.no_cache else prefix + project.cache_key()[:16]
        if cache_name and self.backend.restore_cached(branch, cache_name):
            self.run.record_event("cache", hit=True)
            return
        project.upgrade(branch.connection_string)
        if cache_name:
            self.backend.store_cached(branch, cache_name, prefix)
            self.run.record_event("cache", hit=False)

    def alembic_checks(self, names: tuple[str, ...]) -> dict[str, dict | None]:
        """pytest-alembic's checks, run once per run (in whichever process asks first)."""

        def fresh(check: str) -> NeonBranch:
            return self.create(BranchRole.FRESH, "fresh_" + check.removeprefix("test_"), None)

        return self.run.run_once(
            "alembic-checks",
            lambda: run_checks(names, self.alembic_project(), fresh, self.delete),
        )

    def fresh_branch(self) -> NeonBranch:
        """An empty branch of the parent, for a test of the user's own (``alembic_engine``)."""
        self._fresh_count += 1
        return self.create(BranchRole.FRESH, f"fresh_{self.worker}_{self._fresh_count}", None)

    @contextlib.contextmanager
    def environment(self, branch: NeonBranch) -> Iterator[None]:
        """``DATABASE_URL`` (or --neon-env-var) set to ``branch``, restored afterwards."""
        name = self.settings.env_var
        previous = os.environ.get(name)
        os.environ[name] = branch.connection_string
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous

    # -- resets ---------------------------------------------------------------------------

    def test_started(self) -> None:
        self._tests_started += 1

    def before_test(self, branch: NeonBranch) -> Any:
        if self._checked_in_test != self._tests_started - 1:
            self.backend.forget_marker(branch)  # not the test right after the last check
        return self.backend.write_marker(branch)

    def after_test(
        self, branch: NeonBranch, source: NeonBranch, marker: Any, *, committed_only: bool = False
    ) -> None:
        """Reset ``branch`` to ``source`` if the database saw a write since ``marker``.

        ``committed_only``: writes that were rolled back do not count (the
        transaction strategy, which rolls back everything it opened).
        """
        self._checked_in_test = self._tests_started
        if not self.backend.wrote_since(
            branch, marker, committed_only=committed_only, sequences=self._pristine_sequences()
        ):
            self.stats.clean += 1
            return
        self.guard(branch, "reset")
        started = time.perf_counter()
        self.backend.reset_branch(branch, source)
        self.stats.durations.append(time.perf_counter() - started)
        self.stats.resets += 1
        for callback in self._after_reset.get(branch.key, ()):
            callback()

    def on_reset(self, branch: NeonBranch, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each reset of ``branch`` (e.g. to drop pooled connections
        the reset ended, instead of finding them dead at the next checkout)."""
        self._after_reset.setdefault(branch.key, []).append(callback)

    def _pristine_sequences(self) -> list[list[Any]] | None:
        """The migrated state's sequence positions, as ``seal`` reported them."""
        if self._sequences is None:
            for event in self.run.events():
                if event["event"] == "migrated":
                    self._sequences = event["sequences"]
        return self._sequences

    def finish_worker(self) -> None:
        """Record this process's reset figures for the report."""
        stats = self.stats
        if stats.resets or stats.clean:
            self.run.record_event(
                "resets",
                worker=self.worker,
                resets=stats.resets,
                clean=stats.clean,
                durations=stats.durations,
            )
        if self._backend is not None:
            self._backend.close()

    # -- the end of the run (owner only) ----------------------------------------------------

    def finish_run(self) -> Report | None:
        """Delete what the run created, stop the server, and report; owner process only."""
        backend_state = self.run.done_quietly("backend")
        report = self.report(backend_state)
        if backend_state is None:
            self._remove_run()
            return report
        backend = build_backend(backend_state, self.settings)
        try:
            pending = [recorded for recorded in self.run.branches() if not recorded.deleted]
            if self.settings.keep_branches:
                report.kept = len(pending)
                self.run.mark_kept()
                for recorded in pending:
                    with contextlib.suppress(NeonAlembicError):
                        backend.keep_branch(recorded.branch)
            else:
                for recorded in reversed(pending):
                    with contextlib.suppress(NeonAlembicError):
                        backend.delete_branch(recorded.branch)
                        self.run.record_deleted(recorded.branch)
                        report.deleted += 1
        finally:
            backend.close()
            if backend_state.get("server") and not self.settings.keep_branches:
                from .backends.embedded import EmbeddedServer

                server = EmbeddedServer.from_state(backend_state["server"])
                server.stop()
                if report.cache == "stored":
                    server.save_snapshot()  # the next run starts with the migrated state
        if not self.settings.keep_branches:
            self._remove_run()
        return report

    def _remove_run(self) -> None:
        """The run's files go; a server still running in them is stopped first, whatever
        state the run ended in."""
        from .backends.embedded import stop_abandoned_server

        stop_abandoned_server(self.run.path)
        self.run.remove()

    def report(self, backend_state: dict[str, Any] | None) -> Report:
        report = Report()
        if backend_state is None:
            return report
        report.used = True
        report.backend = backend_state.get("description", "")
        if not report.backend:
            with contextlib.suppress(NeonAlembicError):
                report.backend = self.backend.describe()
        for event in self.run.events():
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
        return lines


def build_backend(state: dict[str, Any], settings: Settings | None = None) -> Backend:
    """The backend described by a run's ``state``; ``settings`` give what is never written
    to disk (the Neon API key)."""
    if state["kind"] == "local":
        return LocalBackend.from_state(state["local"])
    if state["kind"] == "neon":
        from .backends.neon import NeonBackend

        return NeonBackend.from_state(
            state["neon"], api_key=settings.api_key if settings is not None else None
        )
    raise ConfigError(f"Unknown backend kind {state['kind']!r}")


def reap_abandoned_runs() -> list[str]:
    """Clean up after runs whose process was killed: servers, databases, files."""
    from .backends.embedded import stop_abandoned_server

    cleaned = []
    for run in abandoned_runs(state_root()):
        stop_abandoned_server(run.path)  # nothing to do unless the run had an embedded server
        state = run.done_quietly("backend")
        if state and state.get("kind") == "local" and not state.get("server") and not run.kept():
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


def _marker_is_abandoned(marker: dict[str, Any]) -> bool:
    """A database left by a run on this host whose process is gone (and not kept on purpose)."""
    if marker.get("kept"):
        return False
    return marker.get("host") == socket.gethostname() and not process_alive(int(marker["pid"]))


__all__ = ["BranchSession", "Report", "reap_abandoned_runs"]
