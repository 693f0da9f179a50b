"""Calls on one Neon project: listing, waiting for operations, deleting, connection strings.

The branch lifecycle (``backend.py``) is built from these; each call here goes
through ``NeonHTTP`` (retries, masking) and knows the API's shapes, never the
test run's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from ...branch import NeonBranch
from ...errors import ConfigError, NeonAPIError
from .http import NeonHTTP, neon_api_client
from .operations import OPERATION_DONE, OPERATION_TIMEOUT, Operations

BRANCH_PAGE_SIZE = 10000  # the API's maximum page; one call lists any realistic project
CHILDREN_WAIT = 60.0  # how long a delete waits for Neon to finish deleting the children


class NeonProject:
    """One project's API: what every branch operation of the backend is made of."""

    def __init__(
        self,
        http: NeonHTTP,
        project_id: str,
        *,
        database: str,
        role: str,
        operation_timeout: float = OPERATION_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = http
        self.project_id = project_id
        self.database = database
        self.role = role
        self._sleep = sleep
        self.operations = Operations(http, self.path, timeout=operation_timeout, sleep=sleep)
        self.annotations: dict[str, Any] = {}  # of the last listing, by branch ID

    def list_branches(self) -> list[dict[str, Any]]:
        """Every branch of the project (all pages), keeping their annotations (who made
        each one) in ``annotations``. A failure here is fatal: without the list the
        default branch is unknown, and the guard must not be skipped silently."""
        branches: list[dict[str, Any]] = []
        annotations: dict[str, Any] = {}
        cursors: set[str] = set()
        params: dict[str, Any] = {"limit": BRANCH_PAGE_SIZE}
        while True:
            try:
                body = self.http.request("GET", self.path("branches"), params=params)
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
            annotations.update(body.get("annotations") or {})
            cursor = (body.get("pagination") or {}).get("next")
            if not cursor or len(page) < BRANCH_PAGE_SIZE or cursor in cursors:
                self.annotations = annotations
                return branches
            cursors.add(cursor)
            params = {"limit": BRANCH_PAGE_SIZE, "cursor": cursor}

    def path(self, rest: str) -> str:
        return f"projects/{quote(self.project_id, safe='')}/{rest}"

    def delete(self, path: str, label: str, *, wait: bool) -> None:
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
            self.operations.wait(operations, f"deletion of {label}", kind="delete")
        else:
            self.operations.leave_running(operations)

    def connection_uri(self, branch_id: str, endpoint_id: str, host: str | None) -> str:
        """The connection string of an endpoint, from the API (never by guessing)."""
        try:
            answer = self.http.request(
                "GET",
                self.path("connection_uri"),
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
                    self.path(
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

    def pause_before_lookup(self) -> None:
        """After a call with no clear answer: give a first attempt that is late a moment to
        land, so that the look-up that follows sees it (the first backoff)."""
        self._sleep(self.http.policy.first_backoff)

    def get_branch(self, branch_id: str) -> dict[str, Any]:
        return self.http.request("GET", self.path(f"branches/{branch_id}")).get("branch") or {}

    def branch_named(self, name: str) -> dict[str, Any] | None:
        answer = self.http.request("GET", self.path("branches"), params={"search": name})
        return next((b for b in answer.get("branches") or [] if b.get("name") == name), None)

    def running_operations(self, branch_id: str) -> list[dict[str, Any]]:
        answer = self.http.request("GET", self.path("operations"), params={"limit": 100})
        return [
            op
            for op in answer.get("operations") or []
            if op.get("branch_id") == branch_id and op.get("status") not in OPERATION_DONE
        ]

    def pg_version(self) -> str | None:
        """The project's major version, through neon-api's typed client (cosmetic: a failure
        only leaves the version out of the report)."""
        try:
            project = neon_api_client(self.http).project(self.project_id).project
        except Exception:
            return None
        return str(project.pg_version)

    def resolve_parent(self, branches: list[dict[str, Any]], wanted: str | None) -> str | None:
        """The configured parent as a branch ID (a branch *name* is accepted too)."""
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

    def explain_create_error(
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


def find_default_branch(branches: list[dict[str, Any]], project_id: str) -> str:
    """The ID of the project's default branch (``default``, or ``primary`` on older answers)."""
    for branch in branches:
        if branch.get("default") is True or branch.get("primary") is True:
            return str(branch["id"])
    raise NeonAPIError(
        f"Could not tell which branch of Neon project {project_id!r} is its default branch "
        f"(none of the {len(branches)} branches listed is marked default or primary). "
        "pytest-neon-alembic refuses to run without knowing which branch it must never touch."
    )


def matching_uri(uris: Any, database: str, role: str) -> str | None:
    """The ``connection_uris`` entry for this database and role, if the answer has one."""
    for entry in uris or []:
        parameters = entry.get("connection_parameters") or {}
        if parameters.get("database") == database and parameters.get("role") == role:
            return entry.get("connection_uri")
    return None
