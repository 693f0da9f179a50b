"""Injected failures, so tests can check how a client copes with a misbehaving Neon API.

Each fault applies to the next ``count`` matching requests and then stops.
A fault can be restricted to one HTTP method and to paths matching a pattern:
``path`` is a glob (``fnmatch``) matched against the path after ``/api/v2``
with an implicit trailing ``*``, so a plain prefix works
(``"/projects/p/branches"``) and so does a shape (``"*/restore"``).
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Fault", "FaultInjector"]

_MUTATING = frozenset({"POST", "PATCH", "PUT", "DELETE"})


@dataclass
class Fault:
    """One armed fault; ``kind`` is ``rate_limit``, ``lock``, ``fail`` or ``hang``.

    A hang stalls the ``request`` (it waits before it is processed: applied late)
    or the ``answer`` (processed at once, its answer held back: applied, but the
    client may not learn it).
    """

    kind: str
    remaining: int
    method: str | None = None
    path: str | None = None
    status: int = 500
    retry_after: float = 1
    seconds: float = 0.0
    stall: str = "request"

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.kind == "lock" and method not in _MUTATING:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path + "*")


class FaultInjector:
    """The emulator's ``faults`` attribute; thread-safe (requests are served concurrently)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._dead = threading.Event()
        self._on_die: list[Callable[[], None]] = []
        self._on_revive: list[Callable[[], None]] = []

    def _arm(self, fault: Fault) -> Fault:
        if fault.remaining < 1:
            raise ValueError("count must be at least 1")
        if fault.method is not None:
            fault.method = fault.method.upper()
        with self._lock:
            self._faults.append(fault)
        return fault

    def rate_limit(
        self,
        count: int = 1,
        *,
        retry_after: float = 1,
        method: str | None = None,
        path: str | None = None,
    ) -> Fault:
        """Next ``count`` requests: 429, ``Retry-After: <retry_after>``, "rate limit exceeded".

        Open question 3: Neon documents no Retry-After header; sending one lets
        tests check that a client honours it when present.
        """
        return self._arm(Fault("rate_limit", count, method, path, retry_after=retry_after))

    def lock(self, count: int = 1, *, method: str | None = None, path: str | None = None) -> Fault:
        """Next ``count`` mutating requests (POST/PATCH/PUT/DELETE): 423 Locked."""
        return self._arm(Fault("lock", count, method, path))

    def fail(
        self,
        count: int = 1,
        *,
        status: int = 500,
        method: str | None = None,
        path: str | None = None,
    ) -> Fault:
        """Next ``count`` requests: ``status`` (5xx) with "internal server error"."""
        if not 500 <= status <= 599:
            raise ValueError("fail() injects server errors: status must be 5xx")
        return self._arm(Fault("fail", count, method, path, status=status))

    def hang(
        self,
        count: int = 1,
        seconds: float = 5.0,
        *,
        method: str | None = None,
        path: str | None = None,
        stall: str = "request",
    ) -> Fault:
        """Next ``count`` requests: answered (normally) ``seconds`` late -- for timeouts.

        ``stall="request"``: the request waits, then is processed (a call stuck on
        its way in, applied late); ``"answer"``: processed at once, the answer
        waits (a call applied whose answer is slow or lost).
        """
        if stall not in ("request", "answer"):
            raise ValueError("stall must be 'request' or 'answer'")
        return self._arm(Fault("hang", count, method, path, seconds=seconds, stall=stall))

    def die(self) -> None:
        """From now on the API answers nothing: the port refuses connections and open
        keep-alive connections are closed without an answer (until ``revive()``)."""
        self._dead.set()
        for callback in list(self._on_die):
            callback()

    def revive(self) -> None:
        """The API answers again, on the same port, with the project as it was: the end of
        an outage of Neon's API (its computes ran on meanwhile)."""
        for callback in list(self._on_revive):
            callback()
        self._dead.clear()

    def clear(self) -> None:
        """Disarm every pending fault (``die()`` is undone by ``revive()`` only)."""
        with self._lock:
            self._faults.clear()

    @property
    def dead(self) -> bool:
        return self._dead.is_set()

    @property
    def pending(self) -> int:
        """How many injected answers are still to come."""
        with self._lock:
            return sum(fault.remaining for fault in self._faults)

    def take(self, method: str, path: str) -> Fault | None:
        """The fault that applies to this request (counted down), or None.

        The oldest armed fault that matches wins; exhausted faults are dropped.
        """
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.matches(method, path):
                    fault.remaining -= 1
                    taken = fault
                    break
            else:
                taken = None
            self._faults = [fault for fault in self._faults if fault.remaining > 0]
            return taken
