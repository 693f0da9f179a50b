"""The Neon backend: the branch lifecycle of a test run, mapped onto Neon's API.

Mapping of the backend protocol (facts in ``docs/neon-api.md`` of the project notes):

* create     ``POST /projects/{p}/branches`` with one read_write endpoint, then
             wait for every operation it started; the connection string comes
             from the API (``connection_uris`` of the answer, else
             ``GET /connection_uri``, else endpoint host + revealed password).
* read-only  ``POST /projects/{p}/endpoints`` of type read_only on the source
             branch: enforced by the compute itself, shares the branch's storage.
* reset      ``POST /projects/{p}/branches/{b}/restore`` from the migration branch
             ("reset from parent"): same branch ID, host and password afterwards.
             No clear answer: looked up before it is sent again (``restores.py``).
* delete     ``DELETE`` of the branch (or of the read-only endpoint); 204 = gone.
* writes     detected on the branch's own PostgreSQL with ``isolation``'s SQL: each
             Neon branch is its own server, so detection is exact per branch.

Safety: the project's default branch is found once at start (and the start fails
if it cannot be found); this module refuses to restore, delete or seal it, or to
restore anything onto it, whatever the caller asks. The migration branch cannot
carry an expiry (Neon refuses children under an expiring branch), so every
branch says which run made it (its annotation, ``owner.py``) and a sweep at
start deletes this plugin's stale ``pytest-`` branches that nothing else will
delete (``sweep.py``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import psycopg

from ...branch import NeonBranch
from ...errors import ConfigError, GuardError, NeonAlembicError, NeonAPIError, ServerError
from ...redact import mask_url
from ..base import Backend
from . import names
from .api import NeonProject, find_default_branch, matching_uri
from .http import AmbiguousRequestError, NeonHTTP, RetryPolicy
from .operations import OPERATION_TIMEOUT
from .owner import RunOwner
from .recovery import recover_created_branch, recover_readonly_endpoint
from .restores import BranchRestores
from .sweep import SweepResult, sweep_orphans
from .writes import BranchWrites

if TYPE_CHECKING:
    from ...config import Settings

T = TypeVar("T")

MAX_EXPIRY_SECONDS = 30 * 24 * 3600  # Neon refuses expires_at more than 30 days ahead


class NeonBackend(Backend):
    """Branches of one Neon project, through the API; usable without pytest."""

    name = "neon"

    def __init__(
        self,
        *,
        api_key: str,
        project_id: str,
        api_url: str,
        parent_branch: str | None = None,
        database: str = "neondb",
        role: str = "neondb_owner",
        branch_expiry: int = 600,
        default_branch_id: str | None = None,
        git_branch: str | None = None,
        pg_version: str | None = None,
        owner: dict[str, Any] | None = None,
        policy: RetryPolicy | None = None,
        operation_timeout: float = OPERATION_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise ConfigError(
                "The Neon backend needs an API key: set NEON_API_KEY or --neon-api-key."
            )
        self.http = NeonHTTP(api_key, api_url, policy=policy, sleep=sleep)
        self.project_id = project_id
        self.api_url = api_url
        self.parent_branch = parent_branch
        self.database = database
        self.role = role
        self.branch_expiry = branch_expiry
        self.default_branch_id = default_branch_id
        self.git_branch = git_branch
        self.pg_version = pg_version
        self.owner = RunOwner(**owner) if owner else None  # who made the branches
        self.api = NeonProject(
            self.http,
            project_id,
            database=database,
            role=role,
            operation_timeout=operation_timeout,
            sleep=sleep,
        )
        self.writes = BranchWrites()
        self.restores = BranchRestores(self.api)

    def __repr__(self) -> str:
        return (
            f"NeonBackend(project_id={self.project_id!r}, "
            f"api_url={mask_url(self.api_url)!r}, api_key=***)"
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        run_id: str = "",
        owner_pid: int | None = None,
        **options: Any,
    ) -> NeonBackend:
        """A backend for ``settings`` (a ``config.Settings``), before ``start()``.

        ``owner_pid``: the process that owns run ``run_id``; its branches say so.
        """
        if not settings.project_id:
            raise ConfigError(
                "The Neon backend needs a project: set NEON_PROJECT_ID or --neon-project-id."
            )
        return cls(
            api_key=settings.api_key or "",
            project_id=settings.project_id,
            api_url=settings.api_url,
            parent_branch=settings.parent_branch,
            database=settings.database,
            role=settings.role,
            branch_expiry=settings.branch_expiry,
            owner=(
                RunOwner.of_process(owner_pid, run_id, kept=settings.keep_branches).to_dict()
                if owner_pid is not None
                else None
            ),
            **options,
        )

    # -- start of a run (once, in one process) -----------------------------------------------

    def start(self, *, now: datetime | None = None) -> SweepResult:
        """Check the project, find its default branch, resolve the parent, sweep orphans.

        One API call (the branch list) serves all four. Returns what the sweep
        deleted, failed to delete and left alone (``pytest --neon-cleanup`` is
        this call, and its listing).
        """
        if self.branch_expiry > MAX_EXPIRY_SECONDS:
            raise ConfigError(
                f"--neon-branch-expiry / NEON_BRANCH_EXPIRY is {self.branch_expiry} s, but Neon "
                f"accepts an expiry at most 30 days ({MAX_EXPIRY_SECONDS} s) ahead. Use a "
                "smaller value, or 0 for no expiry."
            )
        branches = self.list_branches()
        self.default_branch_id = find_default_branch(branches, self.project_id)
        self.parent_branch = self.api.resolve_parent(branches, self.parent_branch)
        if self.git_branch is None:
            self.git_branch = names.current_git_branch()
        return sweep_orphans(  # deletes what runs that are over left
            self.api,
            branches,
            annotations=self.api.annotations,
            protected={self.default_branch_id, self.parent_branch},
            branch_expiry=self.branch_expiry,
            now=now,
        )

    def list_branches(self) -> list[dict[str, Any]]:
        return self.api.list_branches()

    # -- the protocol ------------------------------------------------------------------------

    def branch_name(self, run_id: str, suffix: str) -> str:
        return names.branch_name(self.git_branch, run_id, suffix)

    def describe(self) -> str:
        version = self.pg_version or self.writes.version() or self._version_from_api()
        return f"neon (project {self.project_id}" + (f", PostgreSQL {version})" if version else ")")

    def create_branch(
        self, name: str, parent: NeonBranch | None, *, can_expire: bool = True
    ) -> NeonBranch:
        if self.default_branch_id is None:
            raise GuardError(
                "Refusing to create branches: the project's default branch is unknown (the "
                "backend was not started)."
            )
        parent_id = parent.branch_id if parent is not None else self.parent_branch
        spec: dict[str, Any] = {"name": name}
        if parent_id:
            spec["parent_id"] = parent_id  # omitted: the project's default branch
        if can_expire and self.branch_expiry > 0:
            expires = datetime.now(timezone.utc) + timedelta(seconds=self.branch_expiry)
            spec["expires_at"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        body: dict[str, Any] = {"branch": spec, "endpoints": [{"type": "read_write"}]}
        if self.owner is not None:
            body["annotation_value"] = self.owner.annotation()
        try:
            created = self.http.request("POST", self.api.path("branches"), json=body)
        except AmbiguousRequestError:
            created = recover_created_branch(self.api, name, body)
        except NeonAPIError as error:
            raise self.api.explain_create_error(error, name, parent, parent_id) from None

        branch = created.get("branch") or {}
        branch_id = branch.get("id")
        if not branch_id:
            raise NeonAPIError(f"Neon created branch {name!r} but its answer has no branch ID.")
        if branch_id == self.default_branch_id:  # cannot happen; never go on if it does
            raise GuardError(
                f"Neon answered the creation of {name!r} with the project's default branch "
                f"{branch_id!r}; refusing to use it for tests."
            )
        endpoint = next(
            (e for e in created.get("endpoints") or [] if e.get("type") == "read_write"), None
        )
        operations = created.get("operations") or []
        endpoint_id = (endpoint or {}).get("id") or next(
            (op["endpoint_id"] for op in operations if op.get("endpoint_id")), None
        )
        if not endpoint_id:
            raise NeonAPIError(
                f"Neon created branch {name!r} ({branch_id}) without a compute endpoint, so it "
                "cannot be connected to."
            )
        self.restores.created(branch)
        try:
            self.api.operations.wait(operations, f"creation of branch {name!r}", kind="create")
            url = matching_uri(created.get("connection_uris"), self.database, self.role)
            if url is None:
                url = self.api.connection_uri(branch_id, endpoint_id, (endpoint or {}).get("host"))
        except NeonAlembicError:
            # The caller never gets this branch, so nobody else would delete it.
            with contextlib.suppress(NeonAlembicError):
                self.api.delete(self.api.path(f"branches/{branch_id}"), branch_id, wait=False)
            raise
        return NeonBranch(
            branch_id=branch_id,
            project_id=self.project_id,
            connection_string=url,
            host=(endpoint or {}).get("host") or urlsplit(url).hostname,
            parent_id=branch.get("parent_id") or parent_id,
            endpoint_id=endpoint_id,
            name=name,
            read_only=False,
        )

    def create_readonly(self, name: str, source: NeonBranch) -> NeonBranch:
        """A read_only endpoint on ``source``'s branch: the compute refuses every write."""
        self._refuse_default(source.branch_id, "add a read-only compute to")
        body = {"endpoint": {"branch_id": source.branch_id, "type": "read_only"}}
        try:
            created = self.http.request("POST", self.api.path("endpoints"), json=body)
        except AmbiguousRequestError:
            created = recover_readonly_endpoint(self.api, source.branch_id, body)
        except NeonAPIError as error:
            raise NeonAPIError(
                f"Neon refused a read-only endpoint on branch {source.branch_id!r}: {error}",
                status=error.status,
                api_message=error.api_message,
            ) from None
        endpoint = created.get("endpoint") or {}
        endpoint_id = endpoint.get("id")
        if not endpoint_id:
            raise NeonAPIError("Neon created a read-only endpoint but its answer has no ID.")
        host = endpoint.get("host")
        try:
            self.api.operations.wait(
                created.get("operations") or [],
                f"read-only endpoint on {source.branch_id!r}",
                kind="endpoint",
            )
            # From the API, never derived from the source's URI: a wrong guess there would
            # be a writable connection that the tests believe is read-only.
            url = self.api.connection_uri(source.branch_id, endpoint_id, host)
        except NeonAlembicError:
            with contextlib.suppress(NeonAlembicError):
                self.api.delete(self.api.path(f"endpoints/{endpoint_id}"), endpoint_id, wait=False)
            raise
        return NeonBranch(
            branch_id=source.branch_id,
            project_id=self.project_id,
            connection_string=url,
            host=host or urlsplit(url).hostname,
            parent_id=source.parent_id,
            endpoint_id=endpoint_id,
            name=name,
            read_only=True,
        )

    def seal(self, branch: NeonBranch) -> list[list[Any]]:
        """Seal sequences for write detection. No connection to end: Neon copies storage,
        not databases, so sessions on the parent never block a child or a restore."""
        self._refuse_default(branch.branch_id, "seal")
        try:
            return self.writes.seal(branch)
        except psycopg.Error as error:
            raise ServerError(
                f"Could not seal the sequences of branch {branch.branch_id!r} "
                f"({mask_url(branch.connection_string)}): {self.http.mask(str(error)).strip()}"
            ) from None

    def reset_branch(self, branch: NeonBranch, source: NeonBranch) -> None:
        """Restore ``branch`` to ``source``'s head (Neon's "reset from parent")."""
        if branch.read_only:
            raise GuardError(
                f"Refusing to reset read-only access {branch.key!r}: it reads branch "
                f"{branch.branch_id!r}, which a restore would overwrite."
            )
        self._refuse_default(branch.branch_id, "restore")
        if branch.branch_id == source.branch_id:
            raise GuardError(f"Refusing to restore branch {branch.branch_id!r} onto itself.")
        self.writes.forget(branch)  # the restore ends it anyway
        self.api.operations.settle(branch.branch_id)
        self.restores.restore(branch.branch_id, source.branch_id)

    def delete_branch(self, branch: NeonBranch) -> None:
        self.writes.forget(branch)
        if branch.read_only:
            if not branch.endpoint_id:
                return
            self.api.delete(
                self.api.path(f"endpoints/{branch.endpoint_id}"), branch.key, wait=False
            )
            return
        self._refuse_default(branch.branch_id, "delete")
        self.api.operations.settle(branch.branch_id)
        self.api.delete(self.api.path(f"branches/{branch.branch_id}"), branch.branch_id, wait=False)

    def keep_branch(self, branch: NeonBranch) -> None:
        """Nothing to do: a kept branch is simply not deleted. Its annotation says it was
        kept, so a later run sweeps it only after an hour idle (``sweep.py``), not at once:
        permanent branches would fill the project (10 on the Free plan) and be billed."""

    # -- write detection ------------------------------------------------------------------------

    def write_marker(self, branch: NeonBranch) -> int | None:
        self.restores.test_starts(branch)
        return self.writes.write_marker(branch)

    def wrote_since(
        self,
        branch: NeonBranch,
        marker: Any,
        *,
        committed_only: bool = False,
        sequences: list[list[Any]] | None = None,
    ) -> bool:
        self.restores.check_test(branch)
        return self.writes.wrote_since(
            branch, marker, committed_only=committed_only, sequences=sequences
        )

    # -- state shared with the run's other processes ------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything but the API key, which never goes to disk: other processes read it
        from their own settings."""
        return {
            "project_id": self.project_id,
            "api_url": self.api_url,
            "parent_branch": self.parent_branch,
            "default_branch_id": self.default_branch_id,
            "database": self.database,
            "role": self.role,
            "branch_expiry": self.branch_expiry,
            "git_branch": self.git_branch,
            "pg_version": self.pg_version or self.writes.server_version,
            "owner": self.owner.to_dict() if self.owner else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], *, api_key: str | None) -> NeonBackend:
        if not state.get("default_branch_id"):
            raise NeonAPIError("The run's Neon state has no default branch; refusing to go on.")
        if not api_key:
            raise ConfigError(
                "This process of the run has no Neon API key (NEON_API_KEY / --neon-api-key), "
                "but the run uses the Neon backend. Give every process the same settings."
            )
        return cls(api_key=api_key, **state)

    def close(self) -> None:
        self.writes.close()
        self.http.close()

    # -- helpers --------------------------------------------------------------------------------

    def _refuse_default(self, branch_id: str, action: str) -> None:
        if self.default_branch_id is None:
            raise GuardError(
                f"Refusing to {action} branch {branch_id!r}: the project's default branch is "
                "unknown (the backend was not started)."
            )
        if branch_id == self.default_branch_id:
            raise GuardError(
                f"Refusing to {action} branch {branch_id!r}: it is the default branch of Neon "
                f"project {self.project_id!r}. pytest-neon-alembic never modifies it."
            )

    def _version_from_api(self) -> str | None:
        self.pg_version = self.api.pg_version()
        return self.pg_version


__all__ = ["NeonBackend"]
