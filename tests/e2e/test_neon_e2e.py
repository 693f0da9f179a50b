"""The fixture contract and the Neon API's failure modes, on the Neon backend.

Each test starts a Neon-API emulator (``tests/neon_emulator/``: real HTTP on
loopback, a real PostgreSQL database behind every branch, here on this module's
embedded server) and runs inner pytest sessions with ``--neon-backend=neon``
and ``NEON_API_KEY`` / ``NEON_PROJECT_ID`` / ``NEON_API_URL`` pointing at it.
After every session the project must be back to its default branch alone, and
the session's API calls are counted by kind (``-s`` prints the figures).

Where the emulator differs from Neon, and what is relaxed for it:

* All branches are databases of one PostgreSQL server, so write detection
  (transaction ids, server-wide) can count another branch's write: resets are
  at least the writing tests, never fewer.
* A ``read_only`` endpoint is a role with read-only defaults, not a standby:
  after ``SET default_transaction_read_only = off`` it can still create large
  objects, which a Neon read-only compute refuses. That one contract test is
  left out of the Neon runs (it would pass on Neon, and its large object would
  leak into every later copy of the migration branch here).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
import requests

from pytest_neon_alembic.backends.neon.owner import RunOwner

try:  # tests/ is on sys.path under pytest (its conftest.py has no package)
    from neon_emulator import NeonEmulator
except ImportError:  # pragma: no cover - when tests/ is a package
    from tests.neon_emulator import NeonEmulator

if TYPE_CHECKING:
    from conftest import NeonProject

API_KEY = "napi_e2e0never0printed0k3y0a1b2c3d4e5f6a7b8c9d0"
PROJECT_ID = "e2e-emulated-project-7"
OPERATION_DELAY = 0.02
BRANCHES = f"/projects/{PROJECT_ID}/branches"

# The contract (tests/e2e/contract/): 31 tests, 15 use the isolated branch and 5 of them write.
CONTRACT_TESTS = 31
CONTRACT_ISOLATED = 15
CONTRACT_WRITES = 5
# See the module docstring: the emulator's read-only endpoints do not refuse large objects.
EMULATOR_GAPS = ("test_a_readonly.py::test_1b_readonly_refuses_large_objects",)

# An inner conftest.py that shortens two of the plugin's limits, so that a hung or dead API
# costs seconds: the read timeout (30 s by default) and how long an API that refuses
# connections is retried (20 s by default). For hung calls the read timeout is the longer of
# the two, as in the defaults: a call that timed out must still be retried (within the 120 s
# budget). For a dead API, a budget long enough to tell one budget from one per call.
# The code paths are the plugin's own.
SHORT_TIMEOUTS = """
import dataclasses

from pytest_neon_alembic.backends.neon import http as neon_http


@dataclasses.dataclass(frozen=True)
class ShortTimeouts(neon_http.RetryPolicy):
    read_timeout: float = {read_timeout}
    unreachable_budget: float = {unreachable_budget}
    first_backoff: float = {first_backoff}


neon_http.RetryPolicy = ShortTimeouts
"""
READ_TIMEOUT = 2.0
UNREACHABLE_BUDGET = 3.0
HUNG_TIMEOUTS = SHORT_TIMEOUTS.format(
    read_timeout=READ_TIMEOUT, unreachable_budget=1.0, first_backoff=1.0
)
# The pause before a look-up is the first backoff: 2 s leaves a second of margin on either
# side for calls that land late, before or after the look-up, on a loaded machine.
LATE_LOOKUP = 2.0
LATE_LOOKUP_TIMEOUTS = SHORT_TIMEOUTS.format(
    read_timeout=READ_TIMEOUT, unreachable_budget=1.0, first_backoff=LATE_LOOKUP
)
DEAD_TIMEOUTS = SHORT_TIMEOUTS.format(
    read_timeout=READ_TIMEOUT, unreachable_budget=UNREACHABLE_BUDGET, first_backoff=1.0
)

# Three tests: two write on the isolated branch, one reads the read-only and writes the dirty one.
APP_TESTS = """
import psycopg


def names(url):
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM items ORDER BY name")]


def test_1_isolated_writes(neon_branch_isolated):
    assert names(neon_branch_isolated.connection_string) == ["seed"]
    with psycopg.connect(neon_branch_isolated.connection_string) as connection:
        connection.execute("INSERT INTO items (name) VALUES ('first')")


def test_2_isolated_pristine_again(neon_branch_isolated):
    assert names(neon_branch_isolated.connection_string) == ["seed"]
    with psycopg.connect(neon_branch_isolated.connection_string) as connection:
        connection.execute("INSERT INTO items (name) VALUES ('second')")


def test_3_readonly_dirty_isolated(neon_branch_readonly, neon_branch_dirty, neon_branch_isolated):
    assert names(neon_branch_readonly.connection_string) == ["seed"]
    assert names(neon_branch_isolated.connection_string) == ["seed"]
    with psycopg.connect(neon_branch_dirty.connection_string) as connection:
        connection.execute("INSERT INTO items (name) VALUES ('dirty')")
"""
APP_WRITES = 2  # on the isolated branch (the dirty write costs no reset)


# -- helpers ---------------------------------------------------------------------------------


def _no_plugin_traceback(output: str) -> None:
    assert "Traceback" not in output
    assert "pytest_neon_alembic/" not in output, "a traceback from inside the plugin was shown"


def _no_key(output: str, *keys: str) -> None:
    for key in (API_KEY, *keys):
        assert key not in output, "the API key was printed"


def call_counts(calls: list[tuple[str, str]]) -> Counter[str]:
    """The API calls by kind: creates, restores, deletes, polls, others."""
    counts: Counter[str] = Counter()
    for method, path in calls:
        if method == "GET" and "/operations/" in path:
            kind = "polls"
        elif method == "POST" and path.endswith("/restore"):
            kind = "restores"
        elif method == "POST" and path.endswith(("/branches", "/endpoints")):
            kind = "creates"
        elif method == "DELETE":
            kind = "deletes"
        else:
            kind = "others"
        counts[kind] += 1
    return counts


def _show_counts(label: str, calls: list[tuple[str, str]]) -> Counter[str]:
    counts = call_counts(calls)
    kinds = ("creates", "restores", "deletes", "polls", "others")
    print(f"\n{label}: {len(calls)} API calls: " + ", ".join(f"{k} {counts[k]}" for k in kinds))
    return counts


def assert_only_default_branch(emulator: NeonEmulator, *, endpoints: bool = True) -> None:
    """The project holds its default branch and nothing else (endpoints: asked over HTTP)."""
    branches = emulator.branches()
    assert [branch["id"] for branch in branches] == [emulator.default_branch_id], [
        branch["name"] for branch in branches
    ]
    if endpoints:
        answer = requests.get(
            f"{emulator.base_url}/projects/{PROJECT_ID}/endpoints",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10,
        )
        answer.raise_for_status()
        left = [(e["branch_id"], e["type"]) for e in answer.json()["endpoints"]]
        assert left == [(emulator.default_branch_id, "read_write")], left


class CallClock:
    """When each API call arrived, from a thread polling ``emulator.calls``; and a trigger.

    ``when`` is checked at every poll; the first time it is true, ``action`` runs
    (in the thread) and ``fired_at`` holds the number of calls seen by then.
    """

    def __init__(
        self,
        emulator: NeonEmulator,
        when: Callable[[], bool] | None = None,
        action: Callable[[], None] | None = None,
    ) -> None:
        self.emulator = emulator
        self.times: list[float] = []
        self.fired_at: int | None = None
        self._when = when
        self._action = action
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="call-clock", daemon=True)

    def __enter__(self) -> CallClock:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            seen = len(self.emulator.calls)
            now = time.monotonic()
            self.times.extend([now] * (seen - len(self.times)))
            if self.fired_at is None and self._when is not None and self._when():
                self.fired_at = seen
                if self._action is not None:
                    self._action()


@pytest.fixture
def emulator(
    neon_project: NeonProject, local_server, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NeonEmulator]:
    """A started emulator on this module's embedded server; the inner sessions point at it."""
    emulator = NeonEmulator(
        api_key=API_KEY,
        project_id=PROJECT_ID,
        operation_delay=OPERATION_DELAY,
        admin_url=local_server.admin_url,
    ).start()
    monkeypatch.setenv("NEON_API_KEY", API_KEY)
    monkeypatch.setenv("NEON_PROJECT_ID", PROJECT_ID)
    monkeypatch.setenv("NEON_API_URL", emulator.base_url)  # trailing "/" or not: both work
    monkeypatch.setenv("E2E_BACKEND", "neon")  # the contract's backend-specific checks
    try:
        yield emulator
    finally:
        emulator.stop()


def run_neon(
    project: NeonProject, emulator: NeonEmulator, *args: str, timeout: float = 120
) -> tuple[pytest.RunResult, list[tuple[str, str]], float]:
    """One inner session on the Neon backend: its result, its API calls, its seconds."""
    first = len(emulator.calls)
    started = time.monotonic()
    result = project.run("--neon-backend=neon", *args, timeout=timeout)
    return result, list(emulator.calls[first:]), time.monotonic() - started


def _ids(project: NeonProject) -> dict[str, set[str]]:
    ids: dict[str, set[str]] = defaultdict(set)
    for line in (project.path / "shared_ids.txt").read_text().splitlines():
        kind, _worker, branch_id = line.split()
        ids[kind].add(branch_id)
    return ids


# -- the fixture contract ----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2], ids=["serial", "xdist"])
def test_fixture_contract_on_neon(
    neon_project: NeonProject, emulator: NeonEmulator, workers: int
) -> None:
    """tests/e2e/contract/ on the Neon backend, serially and with -n 2.

    With xdist, each module stays on one worker (``--dist loadfile``): the dirty
    and module-shared tests build on the writes of the tests before them.
    """
    neon_project.write_alembic("connect")
    neon_project.write_contract_tests()
    args = ["-v", *(f"--deselect={test}" for test in EMULATOR_GAPS)]
    if workers > 1:
        args += ["-n", str(workers), "--dist", "loadfile"]

    result, calls, _seconds = run_neon(neon_project, emulator, *args)
    output = neon_project.output(result)
    # The contract's own look at the read-only endpoint (test_a_readonly.py::test_3).
    checks = [call for call in calls if call[0] == "GET" and "/endpoints/" in call[1]]
    assert len(checks) == 1, checks
    calls = [call for call in calls if call not in checks]

    failed = [line for line in result.outlines if line.startswith(("FAILED", "ERROR"))]
    assert failed == [], output
    tests = CONTRACT_TESTS - len(EMULATOR_GAPS)
    # xdist's controller does not count deselected tests in its summary line.
    deselected = len(EMULATOR_GAPS) if workers == 1 else 0
    result.assert_outcomes(passed=tests, deselected=deselected, warnings=2)
    assert "DeprecationWarning: neon_branch_readwrite is deprecated" in output
    assert "DeprecationWarning: neon_branch is deprecated" in output

    ids = _ids(neon_project)
    assert len(ids["shared-one"]) == len(ids["shared-two"]) == 1
    assert ids["shared-one"] != ids["shared-two"]
    assert len(ids["dirty"]) == len(ids["isolated"]) == len(ids["readonly"]) == 1
    assert len(set().union(*ids.values())) == 5
    assert all(branch_id.startswith("br-") for branch_id in set().union(*ids.values()))

    summary = neon_project.summary(result)
    assert re.search(rf"^backend: neon \(project {PROJECT_ID}, PostgreSQL \d+", output, re.M)
    assert re.search(r"^migrations: \d+\.\d+ s", output, re.M)
    counts = _show_counts(
        f"contract, N={tests} tests, W={CONTRACT_WRITES} writing, k={workers} workers", calls
    )
    # Branches: migration, dirty, 3 module-shared, an isolated one per worker that got
    # isolated tests; plus the read-only endpoint. All of them deleted, each by one call.
    assert 7 <= summary.created <= 6 + workers, summary.line("branches:")
    assert (summary.created, summary.deleted, summary.kept) == (
        counts["creates"],
        counts["creates"],
        0,
    )
    assert counts["deletes"] == summary.deleted
    # Every test that wrote was reset, each by one restore; more resets only on the emulator.
    assert summary.resets is not None and summary.clean is not None
    assert summary.resets >= CONTRACT_WRITES, summary.line("resets:")
    assert summary.resets + summary.clean == CONTRACT_ISOLATED, summary.line("resets:")
    # A restore answered 423 is sent again (Neon's "temporarily locked, safe to retry"):
    # with xdist, another worker may be starting the read-only endpoint on the parent.
    assert counts["restores"] - call_counts(emulator.locked)["restores"] == summary.resets
    if workers == 1:
        assert counts["others"] == 2  # the branch list at start, one connection_uri
    _no_key(output)
    assert_only_default_branch(emulator)
    neon_project.assert_nothing_left()


# -- the API misbehaving ---------------------------------------------------------------------


def test_rate_limits_locks_and_server_errors_are_retried(
    neon_project: NeonProject, emulator: NeonEmulator
) -> None:
    """429 with Retry-After, 503, 500 (on a create: ambiguous; on a GET), 423: the run passes."""
    neon_project.write_alembic("connect")
    neon_project.pytester.makepyfile(test_app=APP_TESTS)
    faults = emulator.faults
    # Armed in this order; each call takes the oldest armed fault that matches it.
    faults.rate_limit(3, retry_after=1)  # the first calls: the branch list at start
    faults.fail(2, status=503, method="POST")  # the migration branch's creation, twice
    # Its third attempt: a 500 on a create may or may not have been applied.
    faults.fail(1, status=500, method="POST", path=BRANCHES)
    faults.lock(2, path="*/restore")  # the first reset
    faults.fail(1, status=500, method="GET", path="*/operations/")  # a poll

    with CallClock(emulator) as clock:
        result, calls, _seconds = run_neon(neon_project, emulator)
    output = neon_project.output(result)

    result.assert_outcomes(passed=3)
    assert faults.pending == 0, "a fault was never reached"
    list_call = ("GET", BRANCHES)
    assert calls[:4] == [list_call] * 4  # three 429s, then the answer
    # Retry-After: 1 was honoured (the backoff would have waited about 1, 2 and 4 s).
    gaps = [later - earlier for earlier, later in itertools.pairwise(clock.times[:4])]
    assert all(0.9 < gap < 1.5 for gap in gaps), gaps
    # 503, 503, 500: the plugin looked for the branch by name before creating it again.
    create = ("POST", BRANCHES)
    assert calls[4:9] == [create, create, create, list_call, create]
    restores = [call for call in calls if call[0] == "POST" and call[1].endswith("/restore")]
    summary = neon_project.summary(result)
    assert summary.resets is not None and summary.resets >= APP_WRITES
    assert len(restores) == summary.resets + 2  # the two 423s
    # migration, read-only endpoint, dirty, isolated: no branch was made twice.
    assert (summary.created, summary.deleted) == (4, 4), summary.line("branches:")
    _show_counts(f"transient errors, N=3 tests, W={APP_WRITES} writing, k=1 worker", calls)
    _no_key(output)
    assert_only_default_branch(emulator)
    neon_project.assert_nothing_left()


def test_hung_calls_time_out_and_are_retried_or_recovered(
    neon_project: NeonProject, emulator: NeonEmulator
) -> None:
    """Calls that hang past the read timeout: an operation poll is sent again; a create and
    two restores (not safe to repeat) are looked up first. The create stuck on its way in is
    made again (the late one then meets the name taken); the restores, one applied late and
    one whose answer was lost, are found applied and not sent twice. The run passes."""
    neon_project.write_alembic("connect")
    neon_project.pytester.makeconftest(LATE_LOOKUP_TIMEOUTS)
    neon_project.pytester.makepyfile(test_app=APP_TESTS)
    # The create reaches Neon a second after the look-up that follows its timeout.
    hang = READ_TIMEOUT + LATE_LOOKUP + 1.0
    faults = emulator.faults
    faults.hang(1, seconds=hang, method="POST", path=BRANCHES)  # the migration branch
    faults.hang(1, seconds=hang, method="GET", path="*/operations/")  # its first poll
    # The first reset reaches Neon late, but well before the look-up (LATE_LOOKUP after
    # the timeout); the second is applied at once and its answer comes too late.
    faults.hang(1, seconds=READ_TIMEOUT + 0.1, method="POST", path="*/restore")
    faults.hang(1, seconds=hang, method="POST", path="*/restore", stall="answer")

    result, calls, seconds = run_neon(neon_project, emulator)
    output = neon_project.output(result)

    result.assert_outcomes(passed=3)
    assert faults.pending == 0, "a fault was never reached"
    create, list_call = ("POST", BRANCHES), ("GET", BRANCHES)
    assert calls[:4] == [list_call, create, list_call, create]  # timed out, looked up, again
    summary = neon_project.summary(result)
    # The hung create was applied after its retry: Neon refuses the duplicate name (409).
    assert (summary.created, summary.deleted) == (4, 4), summary.line("branches:")
    restores = [call for call in calls if call[0] == "POST" and call[1].endswith("/restore")]
    assert summary.resets is not None and summary.resets >= APP_WRITES
    assert len(restores) == summary.resets  # none sent twice
    looked_up = [c for c in calls if c[0] == "GET" and c[1].startswith(BRANCHES + "/br-")]
    assert len(looked_up) == 2  # one look at the branch per restore without an answer
    assert seconds < 60
    _show_counts(f"hung calls, N=3 tests, W={APP_WRITES} writing, k=1 worker", calls)
    _no_key(output)
    time.sleep(hang)  # the late requests are answered: nothing they made may stay
    assert_only_default_branch(emulator)
    neon_project.assert_nothing_left()


def test_create_applied_late_is_adopted_not_leaked(
    neon_project: NeonProject, emulator: NeonEmulator
) -> None:
    """The first create times out and reaches Neon after the lookup by name found nothing;
    the second one then collides with it (409). The branch is ours: use it, leak nothing."""
    neon_project.write_alembic("connect")
    neon_project.pytester.makeconftest(HUNG_TIMEOUTS)
    neon_project.pytester.makepyfile(test_app=APP_TESTS)
    # Lands 0.6 s after the look-up, which waits for the first backoff (1 s) after the timeout.
    emulator.faults.hang(1, seconds=READ_TIMEOUT + 1.6, method="POST", path=BRANCHES)
    emulator.faults.hang(1, seconds=1.5, method="POST", path=BRANCHES)  # lands after it

    result, calls, _seconds = run_neon(neon_project, emulator)
    output = neon_project.output(result)

    create, list_call = ("POST", BRANCHES), ("GET", BRANCHES)
    assert calls[:4] == [list_call, create, list_call, create]
    _no_key(output)
    time.sleep(1.5)
    try:
        assert_only_default_branch(emulator, endpoints=False)
        result.assert_outcomes(passed=3)
    finally:
        # Whatever this run left is deleted here, so that the emulator stops cleanly.
        for branch in emulator.branches():
            if branch["id"] != emulator.default_branch_id:
                requests.delete(
                    f"{emulator.base_url}{BRANCHES}/{branch['id']}",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=10,
                )
    neon_project.assert_nothing_left()


DIE_TESTS = """
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg


def write(branch, name):
    with psycopg.connect(branch.connection_string) as connection:
        connection.execute("INSERT INTO items (name) VALUES (%s)", (name,))


def test_1_writes(neon_branch_isolated, neon_branch_readonly):
    write(neon_branch_isolated, "first")


def test_2_api_dies_during_this_test(neon_branch_isolated):
    write(neon_branch_isolated, "second")
    Path("die-now").touch()  # the outer test makes the emulator die
    api = urlsplit(os.environ["NEON_API_URL"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((api.hostname, api.port), timeout=1).close()
        except OSError:
            return  # the API port refuses connections: it is dead
        time.sleep(0.05)
    raise AssertionError("the emulator did not die")


def test_3_never_runs(neon_branch_isolated):
    pass
"""


def _run_until_the_api_dies(
    neon_project: NeonProject, emulator: NeonEmulator
) -> tuple[pytest.RunResult, float, float]:
    """DIE_TESTS with short timeouts; the emulator dies during test_2.

    Returns the result, the session's seconds, and the seconds from the death to the end.
    """
    neon_project.write_alembic("connect")
    neon_project.pytester.makeconftest(DEAD_TIMEOUTS)
    neon_project.pytester.makepyfile(test_app=DIE_TESTS)
    die_signal = neon_project.path / "die-now"
    died: list[float] = []

    def die() -> None:
        died.append(time.monotonic())
        emulator.faults.die()

    with CallClock(emulator, when=die_signal.exists, action=die) as clock:
        result, _calls, seconds = run_neon(neon_project, emulator, timeout=180)
    ended = time.monotonic()
    assert emulator.faults.dead and died, "the emulator never died"
    print(f"\nAPI died after {clock.fired_at} calls; the session took {seconds:.1f} s")
    return result, seconds, ended - died[0]


def test_api_dying_mid_session_is_one_clear_error(
    neon_project: NeonProject, emulator: NeonEmulator
) -> None:
    """The API stops answering during a test: the reset after it fails with one message that
    names the Neon API and the setting to check; the session stops, and ends."""
    result, seconds, _after_death = _run_until_the_api_dies(neon_project, emulator)
    output = neon_project.output(result)

    # test_2 passed, then its reset failed: one error, and the session stopped there.
    result.assert_outcomes(passed=2, errors=1)
    errors = [line for line in result.outlines if line.startswith("ERROR")]
    assert len(errors) == 1, output
    assert "test_2_api_dies_during_this_test" in errors[0]
    assert "test_3_never_runs" not in output
    assert "Could not reach the Neon API at http://127.0.0.1:" in output
    assert "NEON_API_URL" in output
    _no_plugin_traceback(output)
    _no_key(output)
    assert seconds < 60
    # Nothing could be deleted: the report names every branch left, and the read-only
    # endpoint, and says how to remove them.
    left = [b for b in emulator.branches() if b["id"] != emulator.default_branch_id]
    assert len(left) == 2, [b["name"] for b in left]  # migration, isolated
    named = neon_project.summary(result).line("left behind (could not be deleted): ")
    for branch in left:
        assert f"{branch['name']} ({branch['id']})" in named, named
    endpoints = emulator.project.api_list_endpoints()[1]["endpoints"]
    read_only = [e for e in endpoints if e["type"] == "read_only"]
    assert [f"read-only endpoint {e['id']} of {e['branch_id']}" in named for e in read_only] == [
        True
    ]
    assert "pytest --neon-cleanup" in named and "neonctl branches delete" in named
    assert not neon_project.runs_left(), "the run directory was left behind"

    # The API comes back: the next run on this machine deletes them at its start.
    emulator.faults.revive()
    neon_project.pytester.makepyfile(test_app="def test_dirty(neon_branch_dirty):\n    pass\n")
    result, _calls, _seconds = run_neon(neon_project, emulator)
    result.assert_outcomes(passed=1)
    swept = neon_project.summary(result).line("stale branches of earlier runs: ")
    assert all(branch["id"] in swept for branch in left), swept
    assert_only_default_branch(emulator)
    neon_project.assert_nothing_left()


def test_dead_api_costs_one_retry_budget_not_one_per_call(
    neon_project: NeonProject, emulator: NeonEmulator
) -> None:
    """Once the API is unreachable, the remaining calls (reset, deletes) fail at once instead
    of each waiting the whole unreachable budget again."""
    result, _seconds, after_death = _run_until_the_api_dies(neon_project, emulator)

    result.assert_outcomes(passed=2, errors=1)
    assert after_death < 2 * UNREACHABLE_BUDGET + 2, f"{after_death:.1f} s after the death"


def test_wrong_api_key_is_one_error_naming_the_variable(
    neon_project: NeonProject, emulator: NeonEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_key = "napi_wrong0key0also0never0printed0ffee1234"
    monkeypatch.setenv("NEON_API_KEY", wrong_key)
    neon_project.write_alembic("connect")
    neon_project.pytester.makepyfile(test_app=APP_TESTS)

    result, calls, _seconds = run_neon(neon_project, emulator)
    output = neon_project.output(result)

    assert result.parseoutcomes() == {"errors": 1}, output
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    errors = [line for line in result.outlines if line.startswith("ERROR")]
    assert len(errors) == 1, output
    assert "401 Unauthorized" in output
    assert "NEON_API_KEY" in output
    assert calls == [("GET", BRANCHES)]  # refused at once, not retried
    _no_plugin_traceback(output)
    _no_key(output, wrong_key)
    assert_only_default_branch(emulator)
    neon_project.assert_nothing_left()


def test_failing_migration_leaves_only_the_default_branch(
    neon_project: NeonProject, emulator: NeonEmulator
) -> None:
    neon_project.write_alembic(
        "connect",
        [
            ("r1", "CREATE TABLE items (id serial PRIMARY KEY, name text)", "DROP TABLE items"),
            ("r2bad", "INSERT INTO items (id, name) VALUES ('not-a-number', 'x')", ""),
        ],
    )
    neon_project.pytester.makepyfile(test_app=APP_TESTS)

    result, calls, _seconds = run_neon(neon_project, emulator)
    output = neon_project.output(result)

    assert result.parseoutcomes() == {"errors": 1}, output
    for text in ("Migration r2bad", "invalid input syntax for type integer", "not-a-number"):
        assert text in output, text
    summary = neon_project.summary(result)
    assert (summary.created, summary.deleted) == (1, 1), summary.line("branches:")
    assert "migrations: failed (alembic upgrade heads, alembic.ini)" in output
    _show_counts("failing migration, k=1 worker", calls)
    _no_plugin_traceback(output)
    _no_key(output)
    assert_only_default_branch(emulator)
    neon_project.assert_nothing_left()


# -- runs that are over, and what they left ----------------------------------------------------

SLEEPING_TESTS = """
import time
from pathlib import Path


def test_sleep(neon_branch_isolated, neon_branch_dirty, neon_branch_readonly, neon_branch_shared):
    Path("marker").touch()
    time.sleep(120)
"""

AFTER_TESTS = """
import psycopg


def test_after(neon_branch_isolated):
    with psycopg.connect(neon_branch_isolated.connection_string) as connection:
        assert connection.execute("SELECT count(*) FROM items").fetchone() == (1,)
"""


def test_sigkilled_run_then_a_rerun_leaves_no_branch(
    neon_project: NeonProject, emulator: NeonEmulator
) -> None:
    """SIGKILL during a test, then a run at once on the same machine: at its start it deletes
    the killed run's branches (the shared one, which would expire in 10 minutes, too). While
    the killed run was alive, its files held no password and no API key in clear."""
    neon_project.write_alembic("connect")
    neon_project.pytester.makepyfile(test_sleep=SLEEPING_TESTS, test_after=AFTER_TESTS)
    marker = neon_project.path / "marker"
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_sleep.py"],
        cwd=neon_project.path,
        env=neon_project.subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline, "no test started"
            time.sleep(0.05)
        [run] = neon_project.runs_left()
        files = [path.read_bytes() for path in run.rglob("*") if path.is_file()]
        assert len(files) > 5
        for secret in (emulator.project.password, API_KEY):
            assert not [text for text in files if secret.encode() in text]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    left = [branch["name"] for branch in emulator.branches()[1:]]
    assert len(left) == 4, left  # migration, isolated, dirty, shared; + the read-only endpoint

    result, _calls, _seconds = run_neon(neon_project, emulator, "test_after.py")

    result.assert_outcomes(passed=1)
    swept = neon_project.summary(result).line("stale branches of earlier runs: 4 deleted")
    assert all(name in swept for name in left), swept
    assert_only_default_branch(emulator)
    neon_project.assert_nothing_left()


def _create_branch(
    emulator: NeonEmulator,
    name: str,
    owner: RunOwner | None = None,
    parent: str | None = None,
    expires: bool = False,
) -> str:
    """A branch (and its compute) made through the API as some run would; its ID."""
    spec: dict = {"name": name}
    if parent:
        spec["parent_id"] = parent
    if expires:
        spec["expires_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    body: dict = {"branch": spec, "endpoints": [{"type": "read_write"}]}
    if owner is not None:
        body["annotation_value"] = owner.annotation()
    answer = requests.post(
        f"{emulator.base_url}{BRANCHES}",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    time.sleep(3 * OPERATION_DELAY)  # its operations: done before a child is made of it
    return answer.json()["branch"]["id"]


def test_neon_cleanup_deletes_stale_leftovers_and_nothing_else(
    neon_project: NeonProject, emulator: NeonEmulator, dead_run_owner: Callable[[str], RunOwner]
) -> None:
    """`pytest --neon-cleanup` runs no test. It deletes this plugin's branches of runs on
    other machines idle for over an hour, and of runs on this machine that are over; it
    lists and leaves alone what may be in use, expires by itself, or is not its own."""
    dead_here = dead_run_owner("0dead0aa")
    live_here = RunOwner.of_process(os.getpid(), "11fe0aaa")
    elsewhere = RunOwner(run_id="0e15e0aa", host="ci-runner-7", pid=4242, boot="b00t/pid:[1]")
    young_elsewhere = RunOwner(**{**elsewhere.to_dict(), "run_id": "1e15e0aa"})

    old = _create_branch(emulator, "pytest-ci-0e15e0aa-migration", elsewhere)
    old_child = _create_branch(emulator, "pytest-ci-0e15e0aa-dirty", elsewhere, old)
    old_unmarked = _create_branch(emulator, "pytest-ci-2e15e0aa-migration")  # older version
    young = _create_branch(emulator, "pytest-ci-1e15e0aa-migration", young_elsewhere)
    expiring = _create_branch(
        emulator, "pytest-ci-1e15e0aa-shared-gw0-1", young_elsewhere, young, expires=True
    )
    dead = _create_branch(emulator, "pytest-0dead0aa-migration", dead_here)
    live = _create_branch(emulator, "pytest-11fe0aaa-migration", live_here)
    foreign = [_create_branch(emulator, name) for name in ("pytest-ci-ab12-test", "feature/x")]
    for branch_id in (old, old_child, old_unmarked, expiring, live, *foreign):
        emulator.backdate(branch_id, 2 * 3600)

    result = neon_project.run("--neon-cleanup")
    output = neon_project.output(result)

    assert result.ret == pytest.ExitCode.OK, output
    assert "passed" not in output and "test session starts" not in output
    remaining = {branch["id"] for branch in emulator.branches()}
    assert remaining == {emulator.default_branch_id, young, expiring, live, *foreign}
    listed = {line.split(" -- ")[0].strip() for line in output.splitlines() if " -- " in line}
    by_id = {branch_id: name for name, branch_id in re.findall(r": (\S+) \((br-[^)]+)\)", output)}
    assert set(by_id) == {old, old_child, old_unmarked, dead, young, expiring, live}, listed
    assert f"deleted: pytest-0dead0aa-migration ({dead})" in listed
    assert f"left alone: pytest-11fe0aaa-migration ({live})" in listed
    assert "4 deleted, 0 could not be deleted, 3 left alone" in output
    assert "Nothing else in the project was touched." in output
    _no_key(output)
    neon_project.assert_nothing_left()
