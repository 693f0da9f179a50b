"""Waiting for Neon's operations, with polls fitted to how long they take.

Every mutating call answers at once with a list of operations that run one
after another (a create: ``create_branch`` then ``start_compute``); a branch is
usable only when they are done. Each poll is an API call (rate-limited, ~700 a
minute per account), and each poll too late is time the next test waits, so
the schedule follows what this process has seen:

* Only the last pending operation of a call is asked about: the ones before it
  are done when it has finished. When it was found not started yet, the first
  pending one is asked about next, so that a failure there is reported rather
  than waited out.
* The first look comes a little (10 %) after the call's operations are expected
  to be done: how long the earlier calls of the same kind took here (of any
  kind, before the first of its own), smoothed; 0.3 s before any was seen
  (Neon documents "a few hundred milliseconds" for a compute start, pytest-neon
  measured ~0.5 s per reset). How long a call took: Neon reports how long its
  last operation ran (``total_duration_ms``); the call's operations ran one
  after another, so about that many times as long -- kept within what the
  looks saw (pending at one, done at the next). Without a report: the middle
  of that interval, or 75 % of the first look when that found the call done,
  so that the expectation follows a Neon that got faster too.
* Later looks come at a quarter of that, growing by half each time, from
  50 ms up to 2 s: a slower Neon costs a few more polls, never a stall.

Measured against the emulator (``benchmarks/neon_polls.py``, README "Backends").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from ...errors import NeonAPIError
from .http import NeonHTTP

OPERATION_DONE = {"finished", "skipped", "cancelled"}
OPERATION_TIMEOUT = 120.0
FIRST_EXPECTED = 0.3  # seconds, before this process has seen a call of the kind finish
MIN_INTERVAL = 0.05
MAX_INTERVAL = 2.0
SMOOTHING = 0.5  # weight of the newest observation in the expected duration
MARGIN = 1.1  # the first look, after the expected duration


class Operations:
    """Waits for operations on one project; remembers how long each kind of call takes."""

    def __init__(
        self,
        http: NeonHTTP,
        path: Callable[[str], str],
        *,
        timeout: float = OPERATION_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self._path = path
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self.expected: dict[str, float] = {}  # kind of call -> seconds its operations take
        self._latest = 0.0  # the expectation learnt last, of whatever kind
        self.polls = 0
        # Operations this process started without waiting (deletions), by branch: a later
        # call on that branch waits for them rather than collecting a 423 and a backoff.
        self._in_flight: dict[str, list[dict[str, Any]]] = {}

    def wait(self, operations: Iterable[dict[str, Any]], what: str, *, kind: str = "") -> None:
        """Wait until every operation is done (see the module docstring for when it looks).

        ``failed`` with a ``retry_at`` is still pending: Neon retries it itself
        (its docs: failed is not terminal). ``error``, or ``failed`` with no
        retry planned, stops with Neon's error text.
        """
        pending: list[dict[str, Any]] = []
        for operation in operations:
            self.check(operation, what)
            if operation.get("status") not in OPERATION_DONE:
                pending.append(operation)
        if not pending:
            return
        count = len(pending)
        reported = 0.0  # seconds the last operation ran, as Neon says
        expected = self.expected.get(kind) or self._latest or FIRST_EXPECTED
        started = self._clock()
        deadline = started + self.timeout
        pause = expected * MARGIN
        interval = min(max(expected / 4, MIN_INTERVAL), MAX_INTERVAL)
        looked = None  # when the last look that still found work pending was made
        queued = False  # the last look found the last operation not started yet
        while pending:
            if self._clock() + pause > deadline:
                states = ", ".join(f"{op.get('action')}: {op.get('status')}" for op in pending)
                raise NeonAPIError(
                    f"Neon operations for the {what} did not finish within "
                    f"{self.timeout:.0f} s ({states})."
                )
            self._sleep(pause)
            pause, interval = interval, min(interval * 1.5, MAX_INTERVAL)
            last = pending[-1]
            ask = pending[0] if queued else last
            now = self._clock() - started
            operation = self._get(ask["id"])
            self.check(operation, what)
            position = pending.index(ask)
            status = operation.get("status")
            queued = ask is last and status == "scheduling"
            if status not in OPERATION_DONE:
                pending[position] = operation
                looked = now
            elif status == "finished" and ask is last:
                pending.clear()  # the ones before it are done too
                reported = float(operation.get("total_duration_ms") or 0) / 1000
            else:
                del pending[position]
        if kind:
            low = looked or 0.0
            if reported > 0:
                seen = min(max(reported * count, low), now)
            else:
                seen = 0.75 * now if looked is None else (looked + now) / 2
            self._learn(kind, seen)

    def check(self, operation: dict[str, Any], what: str) -> None:
        status = operation.get("status")
        if status == "error" or (status == "failed" and not operation.get("retry_at")):
            detail = self.http.mask(str(operation.get("error") or "no details given"))
            raise NeonAPIError(
                f"Neon operation {operation.get('action')} ({operation.get('id')}) of the {what} "
                f"ended with status {status}: {detail}"
            )

    def leave_running(self, operations: Iterable[dict[str, Any]]) -> None:
        """Operations not waited for now (a deletion): ``settle`` waits for them later."""
        for operation in operations:
            if operation.get("branch_id") and operation.get("status") not in OPERATION_DONE:
                self._in_flight.setdefault(operation["branch_id"], []).append(operation)

    def settle(self, branch_id: str) -> None:
        """Wait for operations this process left running on ``branch_id`` (e.g. the deletion
        of its read-only endpoint before the branch itself goes)."""
        operations = self._in_flight.pop(branch_id, [])
        if operations:
            self.wait(operations, f"earlier operations on branch {branch_id!r}")

    def _get(self, operation_id: str) -> dict[str, Any]:
        self.polls += 1
        answer = self.http.request("GET", self._path(f"operations/{operation_id}"))
        return answer.get("operation") or {}

    def _learn(self, kind: str, seconds: float) -> None:
        previous = self.expected.get(kind)
        self.expected[kind] = self._latest = (
            seconds if previous is None else (1 - SMOOTHING) * previous + SMOOTHING * seconds
        )
