"""Branches from the Neon API: one Neon branch (with its own compute) per test branch.

Mapping of the backend protocol (facts in ``docs/neon-api.md`` of the project notes):

* create     ``POST /projects/{p}/branches`` with one read_write endpoint, then
             wait for every operation it started; the connection string comes
             from the API (``connection_uris`` of the answer, else
             ``GET /connection_uri``, else endpoint host + revealed password).
* read-only  ``POST /projects/{p}/endpoints`` of type read_only on the source
             branch: enforced by the compute itself, shares the branch's storage.
* reset      ``POST /projects/{p}/branches/{b}/restore`` from the migration branch
             ("reset from parent"): same branch ID, host and password afterwards.
* delete     ``DELETE`` of the branch (or of the read-only endpoint); 204 = gone.
* writes     detected on the branch's own PostgreSQL with ``isolation``'s SQL: each
             Neon branch is its own server, so detection is exact per branch.

Safety: the project's default branch is found once at start (and the start fails
if it cannot be found); this module refuses to restore, delete or seal it, or to
restore anything onto it, whatever the caller asks. The migration branch cannot
carry an expiry (Neon refuses children under an expiring branch), so a sweep at
start deletes this plugin's stale ``pytest-`` branches that nothing else will
delete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

import psycopg

from .. import isolation
from ..branch import BranchRole, NeonBranch
from ..errors import ConfigError, GuardError, NeonAlembicError, NeonAPIError, ServerError
from ..redact import mask_url
from .base import Backend
from .neon_http import AmbiguousRequestError, NeonHTTP, RetryPolicy, neon_api_client

if TYPE_CHECKING:
    from ..config import Settings

logger = logging.getLogger("pytest_neon_alembic.neon")

T = TypeVar("T")

BRANCH_PREFIX = "pytest-"
GIT_PART_LENGTH = 15  # as pytest-neon 2.3: pytest-<git branch, 15 chars>-...
MAX_EXPIRY_SECONDS = 30 * 24 * 3600  # Neon refuses expires_at more than 30 days ahead
MIN_ORPHAN_AGE = 3600  # younger leftovers may belong to a run still going on another machine
BRANCH_PAGE_SIZE = 10000  # the API's maximum page; one call lists any realistic project
OPERATION_DONE = {"finished", "skipped", "cancelled"}
OPERATION_TIMEOUT = 120.0
CHILDREN_WAIT = 60.0  # how long a delete waits for Neon to finish deleting the children

# Names this plugin gives: pytest-[<git>-]<8-hex run id>-<role>[-<detail>]. pytest-neon
# 2.x uses a 4-hex id, and its 3.x suffix "-test" is no role of ours, so the sweep
# cannot mistake their branches (or anyone else's) for ours.
_ROLES = "|".join(re.escape(role.value) for role in BranchRole)
_OUR_NAME = re.compile(
    rf"^pytest-(?:[A-Za-z0-9_-]{{1,{GIT_PART_LENGTH}}}-)?[0-9a-f]{{8}}-(?:{_ROLES})"
    r"(?:-[A-Za-z0-9_-]+)?$"
)


def sanitize_name_part(text: str) -> str:
    """Keep letters, digits, ``_`` and ``-`` (as pytest-neon does), one ``-`` for the rest."""
    text = re.sub(r"[^A-Za-z0-9_-]", "-", text)
    return re.sub(r"-+", "-", text).strip("-")


def current_git_branch(cwd: str | None = None) -> str | None:
    """The checked-out git branch, sanitised and cut to 15 characters; None outside git.

    On a detached HEAD (CI checkouts) the CI's branch variable is used instead, so
    a stale branch still says which PR made it.
    """
    name = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            # symbolic-ref also names the branch of a repository with no commit yet;
            # it fails on a detached HEAD, where the CI variables below take over.
            ["git", "symbolic-ref", "--short", "-q", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=cwd,
        )
        if result.returncode == 0:
            name = result.stdout.strip()
    if not name:
        name = next(
            (
                os.environ[variable]
                for variable in ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME")
                if os.environ.get(variable)
            ),
            None,
        )
    if not name:
        return None
    return sanitize_name_part(sanitize_name_part(name)[:GIT_PART_LENGTH]) or None


def is_our_branch_name(name: str) -> bool:
    """Whether ``name`` has the shape of a branch this plugin creates."""
    return bool(_OUR_NAME.match(name))


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
        self.operation_timeout = operation_timeout
        self._sleep = sleep
        self._connections = isolation.KeptConnections(on_connect=self._note_version)
        # Operations this process started without waiting (deletions), by branch: a later
        # call on that branch waits for them rather than collecting a 423 and a backoff.
        self._in_flight: dict[str, list[dict[str, Any]]] = {}

    def __repr__(self) -> str:
        return (
            f"NeonBackend(project_id={self.project_id!r}, "
            f"api_url={mask_url(self.api_url)!r}, api_key=***)"
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> NeonBackend:
        """A backend for ``settings`` (a ``config.Settings``), before ``start()``."""
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
            **options,
        )

    # -- start of a run (once, in one process) -----------------------------------------------

    def start(self, *, now: datetime | None = None) -> list[str]:
        """Check the project, find its default branch, resolve the parent, sweep orphans.

        One API call (the branch list) serves all four. Returns the names of the
        stale branches deleted by the sweep.
        """
        if self.branch_expiry > MAX_EXPIRY_SECONDS:
            raise ConfigError(
                f"--neon-branch-expiry / NEON_BRANCH_EXPIRY is {self.branch_expiry} s, but Neon "
                f"accepts an expiry at most 30 days ({MAX_EXPIRY_SECONDS} s) ahead. Use a "
                "smaller value, or 0 for no expiry."
            )
        branches = self.list_branches()
        self.default_branch_id = _find_default_branch(branches, self.project_id)
        self.parent_branch = self._resolve_parent(branches)
        if self.git_branch is None:
            self.git_branch = current_git_branch()
        return self.sweep_orphans(branches, now=now)

    def list_branches(self) -> list[dict[str, Any]]:
        """Every branch of the project (all pages). A failure here is fatal: without the list
        the default branch is unknown, and the guard must not be skipped silently."""
        branches: list[dict[str, Any]] = []
        cursors: set[str] = set()
        params: dict[str, Any] = {"limit": BRANCH_PAGE_SIZE}
        while True:
            try:
                body = self.http.request("GET", self._path("branches"), params=params)
            except NeonAPIError as error:
                if error.status == 404:
                    raise NeonAPIError(
                        f"Neon project {self.project_id!r} not found (404: "
                        f"{error.api_message}): check NEON_PROJECT_ID / --neon-project-id, and "
                        "that NEON_API_KEY belongs to the account or organization that owns it.",
                        status=404,
                        api_message=error.api_message,
                    ) from None
                raise
            page = body.get("branches") or []
            branches.extend(page)
            cursor = (body.get("pagination") or {}).get("next")
            if not cursor or len(page) < BRANCH_PAGE_SIZE or cursor in cursors:
                return branches
            cursors.add(cursor)
            params = {"limit": BRANCH_PAGE_SIZE, "cursor": cursor}

    def _resolve_parent(self, branches: list[dict[str, Any]]) -> str | None:
        """The configured parent as a branch ID (a branch *name* is accepted too)."""
        wanted = self.parent_branch
        if not wanted:
            return None
        if any(branch.get("id") == wanted for branch in branches):
            return wanted
        by_name = [branch["id"] for branch in branches if branch.get("name") == wanted]
        if len(by_name) == 1:
            return by_name[0]
        known = ", ".join(f"{branch.get('name')} ({branch.get('id')})" for branch in branches[:10])
        raise ConfigError(
            f"Parent branch {wanted!r} not found in Neon project {self.project_id!r}: check "
            "NEON_PARENT_BRANCH_ID / --neon-parent-branch (a branch ID like br-..., or leave it "
            f"unset to branch from the project's default branch). Branches: {known or 'none'}."
        )

    # -- the protocol ------------------------------------------------------------------------

    def branch_name(self, run_id: str, suffix: str) -> str:
        """``pytest-<git branch>-<run id>-<suffix>``, the shape pytest-neon 2.3 users know."""
        parts = [BRANCH_PREFIX.rstrip("-")]
        if self.git_branch:
            parts.append(self.git_branch)
        parts += [sanitize_name_part(run_id), sanitize_name_part(suffix.replace("_", "-"))]
        return "-".join(parts)

    def describe(self) -> str:
        version = self.pg_version or self._version_from_connections() or self._version_from_api()
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
        body = {"branch": spec, "endpoints": [{"type": "read_write"}]}
        try:
            created = self.http.request("POST", self._path("branches"), json=body)
        except AmbiguousRequestError:
            created = self._recover_created_branch(name, body)
        except NeonAPIError as error:
            raise self._explain_create_error(error, name, parent, parent_id) from None

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
        try:
            self._wait(operations, f"creation of branch {name!r}")
            url = _matching_uri(created.get("connection_uris"), self.database, self.role)
            if url is None:
                url = self._connection_uri(branch_id, endpoint_id, (endpoint or {}).get("host"))
        except NeonAlembicError:
            # The caller never gets this branch, so nobody else would delete it.
            with contextlib.suppress(NeonAlembicError):
                self._delete(self._path(f"branches/{branch_id}"), branch_id, wait=False)
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
            created = self.http.request("POST", self._path("endpoints"), json=body)
        except AmbiguousRequestError:
            created = self._recover_readonly_endpoint(source.branch_id, body)
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
            self._wait(
                created.get("operations") or [], f"read-only endpoint on {source.branch_id!r}"
            )
            # From the API, never derived from the source's URI: a wrong guess there would
            # be a writable connection that the tests believe is read-only.
            url = self._connection_uri(source.branch_id, endpoint_id, host)
        except NeonAlembicError:
            with contextlib.suppress(NeonAlembicError):
                self._delete(self._path(f"endpoints/{endpoint_id}"), endpoint_id, wait=False)
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
            with psycopg.connect(
                branch.connection_string, autocommit=True, connect_timeout=10
            ) as connection:
                self._note_version(connection)
                isolation.seal_sequences(connection)
                return isolation.sequence_state(connection)
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
        self._connections.forget(branch.key)  # the restore ends it anyway
        self._settle(branch.branch_id)
        try:
            answer = self.http.request(
                "POST",
                self._path(f"branches/{branch.branch_id}/restore"),
                json={"source_branch_id": source.branch_id},
                idempotent=True,  # restoring twice to the same head gives the same state
            )
        except NeonAPIError as error:
            hint = ""
            if error.status == 404:
                hint = (
                    " The branch is gone: was it deleted from outside the test run (the "
                    "console, neonctl, or another run's sweep of branches idle for over an "
                    "hour)?"
                )
            raise NeonAPIError(
                f"Neon could not restore branch {branch.branch_id!r} from "
                f"{source.branch_id!r}: {error}{hint}",
                status=error.status,
                api_message=error.api_message,
            ) from None
        self._wait(answer.get("operations") or [], f"restore of branch {branch.branch_id!r}")

    def delete_branch(self, branch: NeonBranch) -> None:
        self._connections.forget(branch.key)
        if branch.read_only:
            if not branch.endpoint_id:
                return
            self._delete(self._path(f"endpoints/{branch.endpoint_id}"), branch.key, wait=False)
            return
        self._refuse_default(branch.branch_id, "delete")
        self._settle(branch.branch_id)
        self._delete(self._path(f"branches/{branch.branch_id}"), branch.branch_id, wait=False)

    def keep_branch(self, branch: NeonBranch) -> None:
        """Nothing to do: a kept branch is simply not deleted.

        Module- and test-long branches still expire; the session-long ones
        (migration, dirty, isolated), which have no expiry, are swept by a later
        run after an hour. Making kept
        branches permanent would fill the project (10 branches on the Free plan)
        and bill for them; debugging a failed run rarely needs more than an hour.
        """

    # -- write detection ------------------------------------------------------------------------

    def write_marker(self, branch: NeonBranch) -> int | None:
        if branch.read_only:
            return None
        try:
            return self._on_connection(branch, isolation.write_marker)
        except psycopg.Error:
            return None  # cannot tell: the test counts as writing

    def wrote_since(
        self,
        branch: NeonBranch,
        marker: Any,
        *,
        committed_only: bool = False,
        sequences: list[list[Any]] | None = None,
    ) -> bool:
        if marker is None:
            return True

        def detect(connection: psycopg.Connection) -> bool:
            def undo_rolled_back() -> bool:
                return sequences is not None and isolation.restore_sequences(connection, sequences)

            return isolation.wrote_since(
                connection,
                marker,
                committed_only=committed_only,
                undo_rolled_back=undo_rolled_back,
            )

        try:
            return self._on_connection(branch, detect)
        except psycopg.Error:
            return True  # when in doubt, reset

    def _on_connection(self, branch: NeonBranch, action: Callable[[psycopg.Connection], T]) -> T:
        """``action`` on this process's kept connection to ``branch`` (a restore, or a
        suspended compute, ends it: reconnected once)."""
        return self._connections.run(branch.key, branch.connection_string, action)

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
            "pg_version": self.pg_version,
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
        self._connections.close()
        self.http.close()

    # -- orphan sweep ---------------------------------------------------------------------------

    def sweep_orphans(
        self, branches: list[dict[str, Any]] | None = None, *, now: datetime | None = None
    ) -> list[str]:
        """Delete this plugin's branches left by runs that died; the names deleted.

        Only branches that (1) have this plugin's name shape, (2) carry no
        expiry (those Neon deletes itself; sweeping them could cut short a
        concurrent run whose restores keep re-arming the expiry), (3) saw no
        creation or reset for ``max(branch_expiry, 1 h)``, and (4) are not the
        default or a protected branch. Children go first (Neon refuses to delete a
        branch with children), and a branch with any child that is not itself
        deleted here is left alone: that child may be a concurrent run's.
        Failures are logged, never fatal.
        """
        if branches is None:
            branches = self.list_branches()
        now = now or datetime.now(timezone.utc)
        max_age = max(self.branch_expiry, MIN_ORPHAN_AGE)
        children: dict[str, list[str]] = {}
        for branch in branches:
            if branch.get("parent_id"):
                children.setdefault(branch["parent_id"], []).append(branch["id"])
        by_id = {branch["id"]: branch for branch in branches}
        candidates = {
            branch["id"]
            for branch in branches
            if is_our_branch_name(str(branch.get("name", "")))
            and not branch.get("expires_at")
            and not (branch.get("default") or branch.get("primary") or branch.get("protected"))
            and branch["id"] not in (self.default_branch_id, self.parent_branch)
            and _idle_seconds(branch, now) > max_age
        }
        deleted: list[str] = []

        def remove(branch_id: str) -> bool:
            kids = children.get(branch_id, [])
            if not all(kid in candidates and remove(kid) for kid in kids):
                logger.info("Not sweeping %s: it has a child that stays.", branch_id)
                return False
            name = by_id[branch_id].get("name")
            try:
                self._delete(self._path(f"branches/{branch_id}"), branch_id, wait=True)
            except NeonAlembicError as error:
                logger.warning(
                    "Could not delete stale test branch %s (%s): %s", name, branch_id, error
                )
                return False
            deleted.append(str(name))
            return True

        for branch_id in sorted(candidates):
            parent = by_id[branch_id].get("parent_id")
            if parent not in candidates:  # roots of the candidate forest; children recurse
                remove(branch_id)
        if deleted:
            logger.warning(
                "Deleted %d stale test branch(es) left by earlier runs in Neon project %s: %s",
                len(deleted),
                self.project_id,
                ", ".join(deleted),
            )
        return deleted

    # -- helpers --------------------------------------------------------------------------------

    def _path(self, rest: str) -> str:
        return f"projects/{quote(self.project_id, safe='')}/{rest}"

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

    def _wait(self, operations: Iterable[dict[str, Any]], what: str) -> None:
        """Wait until every operation is done: first look after 0.1 s, then back off to 1 s.

        ``failed`` with a ``retry_at`` is still pending: Neon retries it itself
        (its docs: failed is not terminal). ``error``, or ``failed`` with no
        retry planned, stops with Neon's error text.
        """
        pending = {}
        for operation in operations:
            self._check_operation(operation, what)
            if operation.get("status") not in OPERATION_DONE:
                pending[operation["id"]] = operation
        deadline = time.monotonic() + self.operation_timeout
        delay = 0.1
        while pending:
            if time.monotonic() > deadline:
                states = ", ".join(
                    f"{op.get('action')}: {op.get('status')}" for op in pending.values()
                )
                raise NeonAPIError(
                    f"Neon operations for the {what} did not finish within "
                    f"{self.operation_timeout:.0f} s ({states})."
                )
            self._sleep(delay)
            delay = min(delay * 2, 1.0)
            # A call's operations run one after another: once one is still going,
            # the later ones are too, so this round asks no further.
            for operation_id in list(pending):
                answer = self.http.request("GET", self._path(f"operations/{operation_id}"))
                operation = answer.get("operation") or {}
                self._check_operation(operation, what)
                if operation.get("status") not in OPERATION_DONE:
                    pending[operation_id] = operation
                    break
                del pending[operation_id]

    def _check_operation(self, operation: dict[str, Any], what: str) -> None:
        status = operation.get("status")
        if status == "error" or (status == "failed" and not operation.get("retry_at")):
            detail = self.http.mask(str(operation.get("error") or "no details given"))
            raise NeonAPIError(
                f"Neon operation {operation.get('action')} ({operation.get('id')}) of the {what} "
                f"ended with status {status}: {detail}"
            )

    def _delete(self, path: str, label: str, *, wait: bool) -> None:
        """DELETE; missing (204/404) is success. Retries while Neon still sees children whose
        own deletion is under way."""
        deadline = time.monotonic() + CHILDREN_WAIT
        pause = 0.5
        while True:
            try:
                answer = self.http.request("DELETE", path)
                break
            except NeonAPIError as error:
                if error.status == 404:
                    return
                children_busy = error.status in (400, 409, 412, 422) and "child" in (
                    error.api_message.lower()
                )
                if not children_busy or time.monotonic() > deadline:
                    raise NeonAPIError(
                        f"Neon could not delete {label}: {error}",
                        status=error.status,
                        api_message=error.api_message,
                    ) from None
                self._sleep(pause)
                pause = min(pause * 2, 5.0)
        operations = answer.get("operations") or []
        if wait:
            self._wait(operations, f"deletion of {label}")
            return
        for operation in operations:
            if operation.get("branch_id") and operation.get("status") not in OPERATION_DONE:
                self._in_flight.setdefault(operation["branch_id"], []).append(operation)

    def _settle(self, branch_id: str) -> None:
        """Wait for operations this process left running on ``branch_id`` (e.g. the deletion
        of its read-only endpoint before the branch itself goes)."""
        operations = self._in_flight.pop(branch_id, [])
        if operations:
            self._wait(operations, f"earlier operations on branch {branch_id!r}")

    def _connection_uri(self, branch_id: str, endpoint_id: str, host: str | None) -> str:
        """The connection string of an endpoint, from the API (never by guessing)."""
        try:
            answer = self.http.request(
                "GET",
                self._path("connection_uri"),
                params={
                    "branch_id": branch_id,
                    "endpoint_id": endpoint_id,
                    "database_name": self.database,
                    "role_name": self.role,
                    "pooled": "false",
                },
            )
            if answer.get("uri"):
                return str(answer["uri"])
            first_error: NeonAPIError | None = None
        except NeonAPIError as error:
            if error.status in (401, 403):
                raise
            first_error = error
        if host:  # the documented alternative: the role's password on the endpoint's host
            try:
                answer = self.http.request(
                    "GET",
                    self._path(
                        f"branches/{branch_id}/roles/{quote(self.role, safe='')}/reveal_password"
                    ),
                )
                password = answer.get("password")
                if password:
                    return (
                        f"postgresql://{quote(self.role, safe='')}:{quote(password, safe='')}"
                        f"@{host}/{quote(self.database, safe='')}?sslmode=require"
                    )
            except NeonAPIError as error:
                if error.status in (401, 403):
                    raise
                first_error = first_error or error
        raise NeonAPIError(
            f"Could not get a connection string for branch {branch_id!r} (endpoint "
            f"{endpoint_id!r}, database {self.database!r}, role {self.role!r}): "
            f"{first_error or 'the API gave none'}. Check --neon-database / NEON_DATABASE and "
            "--neon-role / NEON_ROLE: both must exist on the parent branch.",
            status=first_error.status if first_error else None,
        )

    def _recover_created_branch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """After a create that got no clear answer: use the branch if it was made, else retry.

        Names are unique per run, so a branch with this name is the one we asked for.
        """
        found = self._branch_named(name)
        if found is None:
            try:
                return self.http.request("POST", self._path("branches"), json=body)
            except AmbiguousRequestError:
                found = self._branch_named(name)
                if found is None:
                    raise
            except NeonAPIError as error:
                # 409: the first attempt reached Neon after all (after the lookup).
                found = self._branch_named(name) if error.status == 409 else None
                if found is None:
                    raise
        branch_id = found["id"]
        endpoints = self.http.request("GET", self._path(f"branches/{branch_id}/endpoints"))
        read_write = [e for e in endpoints.get("endpoints") or [] if e.get("type") == "read_write"]
        operations = self._running_operations(branch_id)
        if not read_write:
            made = self.http.request(
                "POST",
                self._path("endpoints"),
                json={"endpoint": {"branch_id": branch_id, "type": "read_write"}},
            )
            read_write = [made.get("endpoint") or {}]
            operations += made.get("operations") or []
        return {"branch": found, "endpoints": read_write, "operations": operations}

    def _recover_readonly_endpoint(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """After an endpoint create with no clear answer: the branch is ours, so a read-only
        endpoint on it is the one we asked for."""
        endpoints = self.http.request("GET", self._path(f"branches/{branch_id}/endpoints"))
        read_only = [e for e in endpoints.get("endpoints") or [] if e.get("type") == "read_only"]
        if read_only:
            return {"endpoint": read_only[0], "operations": self._running_operations(branch_id)}
        return self.http.request("POST", self._path("endpoints"), json=body)

    def _branch_named(self, name: str) -> dict[str, Any] | None:
        answer = self.http.request("GET", self._path("branches"), params={"search": name})
        return next((b for b in answer.get("branches") or [] if b.get("name") == name), None)

    def _running_operations(self, branch_id: str) -> list[dict[str, Any]]:
        answer = self.http.request("GET", self._path("operations"), params={"limit": 100})
        return [
            op
            for op in answer.get("operations") or []
            if op.get("branch_id") == branch_id and op.get("status") not in OPERATION_DONE
        ]

    def _note_version(self, connection: psycopg.Connection) -> None:
        if self.pg_version is None:
            number = connection.info.server_version
            self.pg_version = f"{number // 10000}.{number % 100}"

    def _version_from_connections(self) -> str | None:
        for connection in self._connections.open_ones():
            self._note_version(connection)
            return self.pg_version
        return None

    def _version_from_api(self) -> str | None:
        """The project's major version, through neon-api's typed client (cosmetic: a failure
        only leaves the version out of the report)."""
        try:
            project = neon_api_client(self.http).project(self.project_id).project
        except Exception:
            return None
        self.pg_version = str(project.pg_version)
        return self.pg_version

    def _explain_create_error(
        self,
        error: NeonAPIError,
        name: str,
        parent: NeonBranch | None,
        parent_id: str | None,
    ) -> NeonAPIError:
        if error.status == 404 and parent_id and parent is None:
            text = (
                f"Parent branch {parent_id!r} not found in Neon project {self.project_id!r} "
                f"({error.api_message}): check NEON_PARENT_BRANCH_ID / --neon-parent-branch."
            )
        elif error.status == 404 and parent is not None:
            text = (
                f"Cannot branch {name!r} from {parent.branch_id!r}: Neon no longer has that "
                f"branch ({error.api_message}). Did it expire or get deleted during the run?"
            )
        elif error.status == 404:
            text = (
                f"Neon project {self.project_id!r} not found ({error.api_message}): check "
                "NEON_PROJECT_ID / --neon-project-id."
            )
        elif error.status == 409:
            text = (
                f"Neon refused to create branch {name!r}: {error.api_message}. A branch of that "
                "name already exists, or the project's branch limit is reached (10 on the Free "
                "plan): delete stale branches in the Neon console."
            )
        else:
            text = f"Neon refused to create branch {name!r}: {error}"
        return NeonAPIError(text, status=error.status, api_message=error.api_message)


def _find_default_branch(branches: list[dict[str, Any]], project_id: str) -> str:
    """The ID of the project's default branch (``default``, or ``primary`` on older answers)."""
    for branch in branches:
        if branch.get("default") is True or branch.get("primary") is True:
            return str(branch["id"])
    raise NeonAPIError(
        f"Could not tell which branch of Neon project {project_id!r} is its default branch "
        f"(none of the {len(branches)} branches listed is marked default or primary). "
        "pytest-neon-alembic refuses to run without knowing which branch it must never touch."
    )


def _matching_uri(uris: Any, database: str, role: str) -> str | None:
    """The ``connection_uris`` entry for this database and role, if the answer has one."""
    for entry in uris or []:
        parameters = entry.get("connection_parameters") or {}
        if parameters.get("database") == database and parameters.get("role") == role:
            return entry.get("connection_uri")
    return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    # Python 3.10's fromisoformat takes only 3 or 6 fraction digits: drop the fraction.
    text = re.sub(r"(\d{2}:\d{2}:\d{2})\.\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _idle_seconds(branch: dict[str, Any], now: datetime) -> float:
    """Seconds since the branch was created or last reset; 0 when the API gives no date."""
    stamps = (branch.get("created_at"), branch.get("last_reset_at"))
    times = [parsed for parsed in map(_parse_time, stamps) if parsed is not None]
    if not times:
        return 0.0
    return (now - max(times)).total_seconds()


__all__ = ["NeonBackend", "current_git_branch", "is_our_branch_name"]
