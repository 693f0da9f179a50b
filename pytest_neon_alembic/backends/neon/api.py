"""Calls on one Neon project: listing, waiting for operations, deleting, connection strings.

The branch lifecycle (``backend.py``) is built from these; each call here goes
through ``NeonHTTP`` (retries, masking) and knows the API's shapes, never the
test run's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from ...branch import NeonBranch
from ...errors import ConfigError, NeonAPIError
from .http import AmbiguousRequestError, NeonHTTP, neon_api_client

BRANCH_PAGE_SIZE = 10000  # the API's maximum page; one call lists any realistic project
OPERATION_DONE = {"finished", "skipped", "cancelled"}
OPERATION_TIMEOUT = 120.0
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
        self.operation_timeout = operation_timeout
        self._sleep = sleep
        # Operations this process started without waiting (deletions), by branch: a later
        # call on that branch waits for them rather than collecting a 423 and a backoff.
        self._in_flight: dict[str, list[dict[str, Any]]] = {}

    def list_branches(self) -> list[dict[str, Any]]:
        """Every branch of the project (all pages). A failure here is fatal: without the list
        the default branch is unknown, and the guard must not be skipped silently."""
        branches: list[dict[str, Any]] = []
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
            cursor = (body.get("pagination") or {}).get("next")
            if not cursor or len(page) < BRANCH_PAGE_SIZE or cursor in cursors:
                return branches
            cursors.add(cursor)
            params = {"limit": BRANCH_PAGE_SIZE, "cursor": cursor}

    def path(self, rest: str) -> str:
        return f"projects/{quote(self.project_id, safe='')}/{rest}"

    def wait(self, operations: Iterable[dict[str, Any]], what: str) -> None:
        """Wait until every operation is done: first look after 0.1 s, then back off to 1 s.

        ``failed`` with a ``retry_at`` is still pending: Neon retries it itself
        (its docs: failed is not terminal). ``error``, or ``failed`` with no
        retry planned, stops with Neon's error text.
        """
        pending = {}
        for operation in operations:
            self.check_operation(operation, what)
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
                answer = self.http.request("GET", self.path(f"operations/{operation_id}"))
                operation = answer.get("operation") or {}
                self.check_operation(operation, what)
                if operation.get("status") not in OPERATION_DONE:
                    pending[operation_id] = operation
                    break
                del pending[operation_id]

    def check_operation(self, operation: dict[str, Any], what: str) -> None:
        status = operation.get("status")
        if status == "error" or (status == "failed" and not operation.get("retry_at")):
            detail = self.http.mask(str(operation.get("error") or "no details given"))
            raise NeonAPIError(
                f"Neon operation {operation.get('action')} ({operation.get('id')}) of the {what} "
                f"ended with status {status}: {detail}"
            )

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
            self.wait(operations, f"deletion of {label}")
            return
        for operation in operations:
            if operation.get("branch_id") and operation.get("status") not in OPERATION_DONE:
                self._in_flight.setdefault(operation["branch_id"], []).append(operation)

    def settle(self, branch_id: str) -> None:
        """Wait for operations this process left running on ``branch_id`` (e.g. the deletion
        of its read-only endpoint before the branch itself goes)."""
        operations = self._in_flight.pop(branch_id, [])
        if operations:
            self.wait(operations, f"earlier operations on branch {branch_id!r}")

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

    def recover_created_branch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """After a create that got no clear answer: use the branch if it was made, else retry.

        Names are unique per run, so a branch with this name is the one we asked for.
        """
        found = self.branch_named(name)
        if found is None:
            try:
                return self.http.request("POST", self.path("branches"), json=body)
            except AmbiguousRequestError:
                found = self.branch_named(name)
                if found is None:
                    raise
            except NeonAPIError as error:
                # 409: the first attempt reached Neon after all (after the lookup).
                found = self.branch_named(name) if error.status == 409 else None
                if found is None:
                    raise
        branch_id = found["id"]
        endpoints = self.http.request("GET", self.path(f"branches/{branch_id}/endpoints"))
        read_write = [e for e in endpoints.get("endpoints") or [] if e.get("type") == "read_write"]
        operations = self.running_operations(branch_id)
        if not read_write:
            made = self.http.request(
                "POST",
                self.path("endpoints"),
                json={"endpoint": {"branch_id": branch_id, "type": "read_write"}},
            )
            read_write = [made.get("endpoint") or {}]
            operations += made.get("operations") or []
        return {"branch": found, "endpoints": read_write, "operations": operations}

    def recover_readonly_endpoint(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """After an endpoint create with no clear answer: the branch is ours, so a read-only
        endpoint on it is the one we asked for."""
        endpoints = self.http.request("GET", self.path(f"branches/{branch_id}/endpoints"))
        read_only = [e for e in endpoints.get("endpoints") or [] if e.get("type") == "read_only"]
        if read_only:
            return {"endpoint": read_only[0], "operations": self.running_operations(branch_id)}
        return self.http.request("POST", self.path("endpoints"), json=body)

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
