"""Restores of test branches: sent once, looked up when the answer is unclear, and
watched when they had to be sent twice.

A restore that timed out (or got a gateway error) may have been applied, may be
applied later, or never reached Neon. Sending it again blindly resets the branch
twice -- and if the first one lands after the next test started writing, that
test's data vanishes under it. So the branch is looked at first: if it is being
reset, or its ``last_reset_at`` moved since the previous restore, the first one
landed and is waited for. Only without any sign of it is the restore sent again.

The first one can still reach Neon after that look. For a while after a second
sending (the retry budget: a request stuck longer is taken as lost), each test
on the branch checks as it starts and as it ends that no restore landed in
between; one that did makes that test an error and the branch is reset again,
rather than a test passing or failing on data that changed under it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...branch import NeonBranch
from ...errors import NeonAPIError
from .api import NeonProject
from .http import AmbiguousRequestError


@dataclass
class _Watch:
    until: float
    source_id: str
    mark: tuple[Any, Any] | None = None


class BranchRestores:
    """The restores this process sends, what Neon said of each, and the watched branches."""

    def __init__(self, project: NeonProject, clock: Callable[[], float] = time.monotonic) -> None:
        self._project = project
        self._clock = clock
        self._window = project.http.policy.budget
        self._last_reset: dict[str, str | None] = {}  # branch ID -> last_reset_at Neon gave
        self._watched: dict[str, _Watch] = {}

    def created(self, branch: dict[str, Any]) -> None:
        """Note a branch this process created (so its next restore can be looked up)."""
        self._last_reset[branch["id"]] = branch.get("last_reset_at")

    def restore(self, branch_id: str, source_id: str) -> None:
        """Restore ``branch_id`` to ``source_id``'s head and wait until it is done."""
        body = {"source_branch_id": source_id}
        try:
            try:
                answer = self._project.http.request(
                    "POST", self._project.path(f"branches/{branch_id}/restore"), json=body
                )
            except AmbiguousRequestError:
                answer = self._recover(branch_id, body)
        except NeonAPIError as error:
            hint = ""
            if error.status == 404:
                hint = (
                    " The branch is gone: was it deleted from outside the test run (the "
                    "console, neonctl, or another run's sweep of branches idle for over an "
                    "hour)?"
                )
            raise NeonAPIError(
                f"Neon could not restore branch {branch_id!r} from {source_id!r}: {error}{hint}",
                status=error.status,
                api_message=error.api_message,
            ) from None
        self._last_reset[branch_id] = (answer.get("branch") or {}).get("last_reset_at")
        self._project.operations.wait(
            answer.get("operations") or [], f"restore of branch {branch_id!r}", kind="restore"
        )

    def test_starts(self, branch: NeonBranch) -> None:
        watch = self._active(branch.branch_id)
        if watch is not None:
            watch.mark = self._mark(branch.branch_id)

    def check_test(self, branch: NeonBranch) -> None:
        """Raise if a restore landed on ``branch`` during the test (after resetting it again)."""
        watch = self._active(branch.branch_id)
        if watch is None or watch.mark is None:
            return
        started, watch.mark = watch.mark, None
        if self._mark(branch.branch_id) == started:
            return
        self.restore(branch.branch_id, watch.source_id)  # whatever the test wrote: gone
        raise NeonAPIError(
            f"A restore of branch {branch.branch_id!r} that Neon had not answered in time "
            "landed during this test, so its data was reset under it: its outcome cannot be "
            "trusted. The branch has been reset again; run the test again."
        )

    def _recover(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The answer of a restore whose first sending got no clear answer.

        ``last_reset_at`` has second precision: a first attempt applied within the
        same second as the previous restore looks absent and is sent again --
        harmless, both come before the next test. One applied late cannot share
        that second.
        """
        known = branch_id in self._last_reset
        deadline = self._clock() + self._window
        while True:
            self._project.pause_before_lookup()
            branch = self._project.get_branch(branch_id)
            reset_at = branch.get("last_reset_at")
            moved = known and reset_at and reset_at != self._last_reset[branch_id]
            if branch.get("current_state") == "resetting" or moved:
                operations = self._project.running_operations(branch_id)
                return {"branch": branch, "operations": operations}
            try:
                answer = self._project.http.request(
                    "POST", self._project.path(f"branches/{branch_id}/restore"), json=body
                )
            except AmbiguousRequestError:
                if self._clock() > deadline:
                    raise
                continue
            source_id = body["source_branch_id"]
            self._watched[branch_id] = _Watch(self._clock() + self._window, source_id)
            return answer

    def _active(self, branch_id: str) -> _Watch | None:
        watch = self._watched.get(branch_id)
        if watch is not None and self._clock() > watch.until:
            del self._watched[branch_id]
            return None
        return watch

    def _mark(self, branch_id: str) -> tuple[Any, Any]:
        branch = self._project.get_branch(branch_id)
        return branch.get("last_reset_at"), branch.get("current_state")
