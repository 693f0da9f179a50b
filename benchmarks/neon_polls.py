"""Operation polls of the Neon backend, against the Neon-API emulator at several latencies.

    python benchmarks/neon_polls.py [--restores N] [--delays 0.05,0.2,0.5] [--jitter 0.3]

Neon itself is not reachable from where this was written, so the latency is
the emulator's: every operation takes ``delay`` seconds (give or take
``--jitter``, a fraction of it drawn for each operation), and a call's
operations run one after another (a create: create_branch then start_compute;
a restore: create_timeline then start_compute), so a call takes 2 x delay.
0.2-0.5 s per operation is the range an independent Neon emulator used against
this plugin; Neon documents "a few hundred milliseconds" to start a compute and
pytest-neon measured about 0.5 s per reset.

For each delay, one backend creates a migration branch and an isolated child,
then restores the child N times, first with the schedule this plugin used
before (first look after 0.1 s, then doubling to 1 s, asking each pending
operation in turn) and then with the current one (``operations.py``). Per
call: the operation polls, and the lag -- from the moment the emulator
finished the call's last operation to the moment the backend returned.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_neon_alembic.backends.neon import NeonBackend
from pytest_neon_alembic.backends.neon.operations import OPERATION_DONE, Operations
from pytest_neon_alembic.errors import NeonAPIError
from tests.neon_emulator import NeonEmulator

API_KEY = "bench-key"


class PreviousSchedule(Operations):
    """The schedule before this change: 0.1 s, then doubling up to 1 s; each pending
    operation asked in turn until one is still running."""

    def wait(self, operations: Any, what: str, *, kind: str = "") -> None:
        pending = {}
        for operation in operations:
            self.check(operation, what)
            if operation.get("status") not in OPERATION_DONE:
                pending[operation["id"]] = operation
        deadline = time.monotonic() + self.timeout
        delay = 0.1
        while pending:
            if time.monotonic() > deadline:
                raise NeonAPIError(f"operations of the {what} did not finish")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            for operation_id in list(pending):
                operation = self._get(operation_id)
                self.check(operation, what)
                if operation.get("status") not in OPERATION_DONE:
                    break
                del pending[operation_id]


def measure(emulator: NeonEmulator, schedule: type[Operations], restores: int) -> dict:
    backend = NeonBackend(
        api_key=API_KEY,
        project_id=emulator.project_id,
        api_url=emulator.base_url,
        git_branch="bench",
    )
    backend.api.operations.__class__ = schedule
    backend.start()
    figures: dict[str, list[tuple[int, float]]] = {"create": [], "restore": []}

    def timed(kind: str, call: Any) -> Any:
        polls, first = backend.api.operations.polls, len(emulator.project.operations)
        result = call()
        returned = time.time()
        finished = max(op.finish_at for op in emulator.project.operations[first:])
        figures[kind].append((backend.api.operations.polls - polls, returned - finished))
        return result

    run_id = f"{int(time.time() * 1000) % 16**8:08x}"
    migration = timed(
        "create",
        lambda: backend.create_branch(f"pytest-bench-{run_id}-migration", None, can_expire=False),
    )
    isolated = timed(
        "create", lambda: backend.create_branch(f"pytest-bench-{run_id}-isolated-gw0", migration)
    )
    for _ in range(restores):
        timed("restore", lambda: backend.reset_branch(isolated, migration))
    backend.delete_branch(isolated)
    backend.delete_branch(migration)
    backend.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restores", type=int, default=10)
    parser.add_argument("--delays", default="0.05,0.2,0.5", help="seconds per operation")
    parser.add_argument("--jitter", type=float, default=0.3, help="+- fraction of the delay")
    args = parser.parse_args()
    print(
        f"| s per operation (+-{args.jitter:.0%}) | schedule | polls per create | polls per "
        "restore (first / later) | lag after the last operation, median / max |"
    )
    print("|---|---|---|---|---|")
    for delay in (float(text) for text in args.delays.split(",")):
        emulator = NeonEmulator(
            api_key=API_KEY, operation_delay=delay, operation_jitter=args.jitter
        )
        with emulator:
            for label, schedule in (("before", PreviousSchedule), ("now", Operations)):
                figures = measure(emulator, schedule, args.restores)
                creates = [polls for polls, _ in figures["create"]]
                restores = [polls for polls, _ in figures["restore"]]
                lags = [lag for kind in figures.values() for _, lag in kind]
                print(
                    f"| {delay:g} | {label} | {statistics.mean(creates):.1f} | "
                    f"{restores[0]} / {statistics.mean(restores[1:]):.1f} | "
                    f"{statistics.median(lags) * 1000:.0f} / {max(lags) * 1000:.0f} ms |"
                )


if __name__ == "__main__":
    main()
