"""The branches of one test run: created once, guarded, migrated, and deleted at the end.

``BranchSession`` is what the fixtures talk to. It knows nothing of pytest: it
combines the settings, the run directory shared by the run's processes, and a
backend. Shared work (server, migration, read-only access, dirty branch) goes
through ``RunDirectory.run_once`` so it happens in one process; per-worker
branches (isolated, shared) are made by the worker that needs them. What
happens around each test (write detection, resets) is ``resets.IsolatedResets``;
the end of the run is ``run_end``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from . import guard
from .backend_start import build_backend, start_backend
from .backends.base import Backend
from .branch import BranchRole, NeonBranch
from .config import Settings
from .coordination import RunDirectory
from .errors import GuardError, MigrationError, NeonAlembicError
from .guard import ConnectionVariables, OwnedTargets, Target
from .migrations import AlembicProject, MigrationStart, server_fingerprint
from .redirect import FOLLOW, OuterTransaction
from .report import Report
from .resets import IsolatedResets
from .run_end import finish_run, server_goes_at_end

# Branches that live for a module or a test may expire on their own (crash safety
# on Neon). Session-long ones may not: Neon refuses children under an expiring
# branch (migration), and a session outlasting the expiry would lose its dirty or
# isolated branch mid-run; the orphan sweep of a later run covers them instead.
SHORT_LIVED_ROLES = frozenset({BranchRole.SHARED, BranchRole.FRESH})


class BranchSession:
    """One process's view of the run's branches."""

    def __init__(self, settings: Settings, run: RunDirectory, *, owner: bool, worker: str) -> None:
        self.settings = settings
        self.run = run
        self.owner = owner  # this process deletes everything and stops the server at the end
        self.worker = worker
        self._backend: Backend | None = None
        self._created_here: set[str] = set()
        self._fresh_count = 0
        self._owned = OwnedTargets()
        self.resets = IsolatedResets(lambda: self.backend, self.guard, run)

    # -- the backend ----------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            state = self.run.run_once("backend", self._start_backend)
            self._backend = build_backend(state, self.settings)
        return self._backend

    def _start_backend(self) -> dict:
        with guard.trusted():
            return start_backend(self.settings, self.run, self.alembic_project())

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

    def owns(self, target: Target) -> bool:
        """Whether the run created the database ``target`` names (the connection guard asks).

        The run's branches, in every process of the run; the embedded server
        the run started, all of it; on a server given with --neon-local-url,
        the databases named for this run and the administrative URL's own.
        Read again from the run directory when a target is not known yet.
        """
        if self._owned.owns(target):
            return True
        self._owned = OwnedTargets.of_run(self.run)
        return self._owned.owns(target)

    def delete(self, branch: NeonBranch) -> None:
        self.guard(branch, "delete")
        self.backend.delete_branch(branch)
        self.run.record_deleted(branch)

    def release(self, branch: NeonBranch, *, run_ends: bool = False) -> None:
        """A worker is done with ``branch``: delete it, unless branches are kept; or, for
        a branch that lives until the run ends (``run_ends``), unless the embedded server
        goes at the end with every database in it (``run_end.finish_run`` counts it)."""
        if self.settings.keep_branches or (run_ends and server_goes_at_end(self.run)):
            return
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
                self.run.record_event("migration_failed")
                self._discard(branch)
                raise
            except Exception as error:
                self.run.record_event("migration_failed")
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
            with guard.trusted():  # a kept server's standby: recorded only by its state
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

    def apply_alembic(
        self, branch: NeonBranch, context: Callable[[], object] = lambda: None
    ) -> None:
        """The default ``neon_apply_migrations``: ``alembic upgrade head``, if there is a config.

        The migrated state is cached under a hash of the migration files: when
        a copy for the same hash exists, the branch becomes that copy and no
        migration runs (``--neon-no-cache`` turns this off). ``context`` enters
        ``neon_migration_context`` (only when a migration runs) and gives what
        it yielded: a ``MigrationStart``, or anything else for a plain upgrade.
        """
        project = self.alembic_project()
        if project is None:
            self.run.record_event("migration", how="none")
            return
        self.guard(branch, "migrate")
        ini = str(project.ini_path)
        prefix = f"pytest_cache_{project.project_id()[:8]}_"
        cache_name = None
        if not self.settings.no_cache:
            key = project.cache_key(
                parent=self.settings.parent_branch,
                server=server_fingerprint(branch.connection_string),
            )
            cache_name = prefix + key[:16]
        if cache_name and self.backend.restore_cached(branch, cache_name):
            self.run.record_event("migration", how="cached", ini=ini)
            self.run.record_event("cache", hit=True)
            return
        start = context()
        start = start if isinstance(start, MigrationStart) else None
        how = "alembic upgrade heads" if start is None else f"{start.describe()}, upgrade heads"
        self.run.record_event("migration", how=how, ini=ini)
        project.upgrade(branch.connection_string, start)
        if cache_name:
            self.backend.store_cached(branch, cache_name, prefix)
            self.run.record_event("cache", hit=False)

    def fresh_branch(self) -> NeonBranch:
        """An empty branch of the parent, for a test of the user's own (``alembic_engine``)."""
        self._fresh_count += 1
        return self.create(BranchRole.FRESH, f"fresh_{self.worker}_{self._fresh_count}", None)

    @contextlib.contextmanager
    def environment(
        self, branch: NeonBranch, outer: OuterTransaction | None = None
    ) -> Iterator[None]:
        """``DATABASE_URL`` (and every --neon-env-var name) set to ``branch``, and the
        engines that follow the test pointed at it (``outer``: the test's transaction);
        both restored afterwards."""
        url = branch.connection_string
        with (
            ConnectionVariables(self.settings.env_var_names).pointing_at(url),
            FOLLOW.pointing_at(url, outer),
        ):
            yield

    # -- the end -----------------------------------------------------------------------------

    def finish_worker(self) -> None:
        """Record this process's reset figures for the report; release its connections."""
        self.resets.record(self.worker)
        if self._backend is not None:
            self._backend.close()

    def finish_run(self) -> Report:
        """Delete what the run created, stop the server, and report; owner process only."""
        describe = self._backend.describe if self._backend is not None else None
        with guard.trusted():  # the kept server's standby: not in the run's records
            return finish_run(self.settings, self.run, describe)


__all__ = ["BranchSession"]
