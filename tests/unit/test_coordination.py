"""coordination.RunDirectory and abandoned_runs, across real processes."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pytest_neon_alembic import errors
from pytest_neon_alembic.branch import BranchRole, NeonBranch
from pytest_neon_alembic.coordination import OWNER_FILE, RunDirectory, abandoned_runs

PROCESSES = 4
SPAWN = multiprocessing.get_context("spawn")


# -- helpers that run in child processes (module level, so spawn can import them) ------------------


def _produce(log: str, failure: str | None) -> dict[str, Any]:
    """The once-per-run work: leaves a line in ``log`` each time it really runs."""
    with open(log, "a") as file:
        file.write(f"{os.getpid()}\n")
    time.sleep(0.3)  # long enough for every other process to be waiting on the lock
    if failure == "migration":
        raise errors.MigrationError("Migration abc123 (add users) failed: relation x is missing")
    if failure == "plain":
        raise ValueError("unexpected value 42")
    return {"pid": os.getpid(), "token": uuid.uuid4().hex}


def _call_run_once(run_path: str, step: str, log: str, failure: str | None) -> tuple:
    run = RunDirectory(Path(run_path))
    try:
        return ("value", run.run_once(step, functools.partial(_produce, log, failure)))
    except Exception as error:
        return (
            "error",
            type(error).__name__,
            str(error),
            isinstance(error, errors.NeonAlembicError),
        )


def _race_worker(run_path: str, step: str, log: str, failure: str | None, barrier, queue) -> None:
    barrier.wait(timeout=60)
    queue.put(_call_run_once(run_path, step, log, failure))


def _record_worker(run_path: str, worker: int, count: int, barrier) -> None:
    run = RunDirectory(Path(run_path))
    barrier.wait(timeout=60)
    for index in range(count):
        run.record_created(BranchRole.ISOLATED, _branch(f"w{worker}_{index}"))


def _branch(name: str, read_only: bool = False) -> NeonBranch:
    return NeonBranch(
        branch_id=name,
        project_id=None,
        connection_string=f"postgresql://u:pw@127.0.0.1:5432/{name}",
        host="127.0.0.1",
        parent_id="template1",
        endpoint_id=None,
        name=name,
        read_only=read_only,
    )


def _race(run: RunDirectory, step: str, log: Path, failure: str | None) -> list[tuple]:
    barrier = SPAWN.Barrier(PROCESSES)
    queue = SPAWN.Queue()
    processes = [
        SPAWN.Process(
            target=_race_worker, args=(str(run.path), step, str(log), failure, barrier, queue)
        )
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        results = [queue.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)
    return results


# -- run_once --------------------------------------------------------------------------------------


def test_run_once_runs_the_producer_once_across_processes(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path)
    log = tmp_path / "produced.log"

    results = _race(run, "server", log, failure=None)

    assert len(log.read_text().splitlines()) == 1
    assert [kind for kind, *_ in results] == ["value"] * PROCESSES
    values = [result[1] for result in results]
    assert all(value == values[0] for value in values)
    assert values[0]["pid"] == int(log.read_text().strip())
    # A later caller in this process gets the same value without producing.
    assert run.run_once("server", lambda: pytest.fail("the producer ran again")) == values[0]
    assert run.done("server") == values[0]


@pytest.mark.parametrize(
    ("failure", "kind", "message"),
    [
        (
            "migration",
            "MigrationError",
            "Migration abc123 (add users) failed: relation x is missing",
        ),
        ("plain", "NeonAlembicError", "ValueError: unexpected value 42"),
    ],
)
def test_run_once_failure_reaches_every_process_with_the_same_message(
    tmp_path: Path, failure: str, kind: str, message: str
) -> None:
    run = RunDirectory.create(tmp_path)
    log = tmp_path / "produced.log"

    results = _race(run, "migrate", log, failure=failure)

    assert len(log.read_text().splitlines()) == 1
    assert all(result[0] == "error" for result in results)
    # The process that ran the producer sees its own exception; all others the recorded one.
    later = [result for result in results if result[1] == kind]
    assert len(later) >= PROCESSES - 1
    for _, name, text, is_plugin_error in later:
        assert name == kind
        assert text == message
        assert is_plugin_error
    if failure == "migration":
        assert all(result[1:3] == (kind, message) for result in results)
    else:  # the producer's own process sees the original exception
        originals = [result for result in results if result[1] != kind]
        assert [result[1:4] for result in originals] == [
            ("ValueError", "unexpected value 42", False)
        ]


def test_run_once_error_is_reraised_later_without_rerunning_the_producer(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path)
    log = tmp_path / "produced.log"

    with pytest.raises(errors.MigrationError) as first:
        run.run_once("migrate", functools.partial(_produce, str(log), "migration"))

    # Same process, later caller.
    with pytest.raises(errors.MigrationError) as second:
        run.run_once("migrate", lambda: pytest.fail("the producer ran again"))
    assert str(second.value) == str(first.value)
    assert type(second.value) is type(first.value)

    # Another process, later caller (its producer would append to the log).
    with SPAWN.Pool(1) as pool:
        result = pool.apply(_call_run_once, (str(run.path), "migrate", str(log), None))
    assert result == ("error", "MigrationError", str(first.value), True)

    assert len(log.read_text().splitlines()) == 1
    # done() re-raises too; done_quietly() does not.
    with pytest.raises(errors.MigrationError, match="abc123"):
        run.done("migrate")
    assert run.done_quietly("migrate") is None


def test_run_once_non_plugin_error_becomes_a_neon_alembic_error_later(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path)

    def broken() -> None:
        raise KeyError("DATABASE_URL")

    with pytest.raises(KeyError):
        run.run_once("step", broken)
    with pytest.raises(errors.NeonAlembicError) as later:
        run.run_once("step", lambda: pytest.fail("the producer ran again"))
    assert type(later.value) is errors.NeonAlembicError
    assert str(later.value) == "KeyError: 'DATABASE_URL'"


def test_run_once_steps_are_independent_and_done_is_none_before(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path)
    assert run.done("a") is None
    assert run.run_once("a", lambda: 1) == 1
    assert run.run_once("b", lambda: [2, "two"]) == [2, "two"]
    assert run.run_once("a", lambda: 3) == 1


# -- the branch registry ---------------------------------------------------------------------------


def test_record_created_and_deleted_and_branches(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path)
    migration = _branch("pytest_x_migration")
    readonly = _branch("pytest_x_readonly", read_only=True)
    isolated = _branch("pytest_x_isolated_gw0")
    assert run.branches() == []

    run.record_created(BranchRole.MIGRATION, migration)
    run.record_created(BranchRole.READONLY, readonly)
    run.record_created(BranchRole.ISOLATED, isolated)
    run.record_deleted(isolated)
    run.record_event("reset", branch_id=isolated.branch_id, seconds=0.01)

    recorded = {item.branch.branch_id: item for item in run.branches()}
    assert set(recorded) == {migration.branch_id, readonly.branch_id, isolated.branch_id}
    assert recorded[migration.branch_id].role is BranchRole.MIGRATION
    assert recorded[readonly.branch_id].role is BranchRole.READONLY
    assert recorded[isolated.branch_id].role is BranchRole.ISOLATED
    assert recorded[migration.branch_id].branch == migration  # every field round-trips
    assert recorded[readonly.branch_id].branch.read_only is True
    assert not recorded[migration.branch_id].deleted
    assert not recorded[readonly.branch_id].deleted
    assert recorded[isolated.branch_id].deleted
    assert run.created_keys() == set(recorded)
    assert [event["event"] for event in run.events()] == [
        "created",
        "created",
        "created",
        "deleted",
        "reset",
    ]


def test_registry_is_shared_by_processes_writing_at_once(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path)
    count = 25
    barrier = SPAWN.Barrier(PROCESSES)
    processes = [
        SPAWN.Process(target=_record_worker, args=(str(run.path), worker, count, barrier))
        for worker in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * PROCESSES

    expected = {f"w{worker}_{index}" for worker in range(PROCESSES) for index in range(count)}
    assert run.created_keys() == expected
    assert len(run.events()) == PROCESSES * count


def test_run_directory_records_its_owner(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path, run_id="abc12345")
    assert run.run_id == "abc12345"
    assert run.path == tmp_path / "runs" / "abc12345"
    assert run.owner_pid() == os.getpid()
    assert not run.kept()
    run.mark_kept()
    assert run.kept()
    run.remove()
    assert not run.path.exists()


# -- abandoned runs --------------------------------------------------------------------------------

CREATE_RUN = (
    "import sys\n"
    "from pathlib import Path\n"
    "from pytest_neon_alembic.coordination import RunDirectory\n"
    "RunDirectory.create(Path(sys.argv[1]), run_id=sys.argv[2])\n"
)


def test_abandoned_runs_finds_runs_whose_owner_is_dead(tmp_path: Path) -> None:
    # A run created by a process that has since exited (and been reaped).
    subprocess.run([sys.executable, "-c", CREATE_RUN, str(tmp_path), "deadrun1"], check=True)
    dead = RunDirectory(tmp_path / "runs" / "deadrun1")
    dead_pid = dead.owner_pid()
    assert dead_pid != os.getpid()

    RunDirectory.create(tmp_path, run_id="aliverun")  # owned by this process

    assert [run.path for run in abandoned_runs(tmp_path)] == [dead.path]


def test_abandoned_runs_counts_a_zombie_owner_as_dead(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", CREATE_RUN, str(tmp_path), "zombie01"])
    try:
        deadline = time.monotonic() + 60
        stat_file = Path(f"/proc/{child.pid}/stat")
        while stat_file.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.02)
        # Not reaped yet: the pid still exists, as a zombie.
        found = abandoned_runs(tmp_path)
        assert [run.run_id for run in found] == ["zombie01"]
    finally:
        child.wait(timeout=30)


def test_abandoned_runs_judge_by_the_owner_lock_not_by_host_or_pid(tmp_path: Path) -> None:
    """A live run whose pid means nothing here (another PID namespace: a container sharing
    /dev/shm) is kept; once its process is gone, it is abandoned, whatever its host."""
    RunDirectory.create(tmp_path, run_id="mine0001")
    owner = subprocess.Popen(
        [sys.executable, "-c", CREATE_RUN + "sys.stdin.read()\n", str(tmp_path), "remote01"],
        stdin=subprocess.PIPE,
    )
    try:
        remote = tmp_path / "runs" / "remote01" / OWNER_FILE
        deadline = time.monotonic() + 60
        while not remote.exists():
            assert time.monotonic() < deadline, "the other run never started"
            time.sleep(0.01)
        recorded = json.loads(remote.read_text())
        recorded.update(host=socket.gethostname() + "-elsewhere", pid=2**22 + 7)  # no such pid
        remote.write_text(json.dumps(recorded))
        assert abandoned_runs(tmp_path) == []
    finally:
        owner.communicate(b"", timeout=60)
    assert [run.run_id for run in abandoned_runs(tmp_path)] == ["remote01"]


def test_abandoned_runs_waits_a_minute_for_a_run_without_owner_file(tmp_path: Path) -> None:
    young = tmp_path / "runs" / "young001"
    old = tmp_path / "runs" / "old00001"
    young.mkdir(parents=True)
    old.mkdir(parents=True)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))

    assert [run.path for run in abandoned_runs(tmp_path)] == [old]


def test_abandoned_runs_without_runs_dir_is_empty(tmp_path: Path) -> None:
    assert abandoned_runs(tmp_path / "nothing-here") == []
