"""Where tests run, and what goes wrong there: a small or read-only /dev/shm, a disk that
fills, runs in other PID namespaces, runs sharing a server, a frozen server, sessions
killed under the plugin, a role without CREATEROLE, a bad state directory, sys.exit in
env.py. Each fault is injected for real; the promise is checked: one clear message,
no cache from a failed or full run, nothing left behind, no live run touched.

The mount and PID namespaces (``unshare``) need root, which CI has.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from pytest_neon_alembic.migrations import AlembicProject

from .test_bad_input import NEEDS_DATABASE, _assert_setup_error, _server_objects, _url_with_role

if TYPE_CHECKING:
    from conftest import NeonProject

root_only = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="private mount and PID namespaces need root and unshare",
)

TWO_TESTS = """
import psycopg


def test_isolated(neon_branch_isolated):
    with psycopg.connect(neon_branch_isolated.connection_string) as connection:
        connection.execute("INSERT INTO items (name) VALUES ('x')")


def test_readonly(neon_branch_readonly):
    with psycopg.connect(neon_branch_readonly.connection_string) as connection:
        assert connection.execute("SELECT name FROM items").fetchall() == [("seed",)]
"""


@pytest.fixture
def scratch_tmp(neon_project: NeonProject) -> Iterator[Path]:
    """A world-traversable directory outside /dev/shm (which some tests replace)."""
    path = Path(tempfile.mkdtemp(prefix="pna-faults-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for pid in neon_project.postgres_pids(path):  # only if a run leaked one
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)


def _namespaced(project: NeonProject, script: str, env: dict[str, str]) -> str:
    """Run *script* (sh) in a private mount namespace in the project dir; its output."""
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        cwd=project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.stdout + proc.stderr


@root_only
def test_small_and_read_only_dev_shm_move_the_state_with_one_line(
    neon_project: NeonProject, scratch_tmp: Path
) -> None:
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_two=TWO_TESTS)
    env = neon_project.subprocess_env()
    del env["PYTEST_NEON_ALEMBIC_STATE_DIR"]
    env["TMPDIR"] = str(scratch_tmp)
    state = scratch_tmp / f"pytest-neon-alembic-{os.getuid()}"
    # The temp dir on tmpfs too (the test is about the choice, not about disk speed), and
    # the session's cache, which lives in the real /dev/shm, bound in before it is replaced.
    share_cache = (
        f"mount -t tmpfs -o size=512m,mode=0755 tmpfs {scratch_tmp} && mkdir -p {state}/cache "
        f"&& mount --bind {neon_project.cache_dir} {state}/cache"
    )
    pytest_cmd = f"{sys.executable} -m pytest -p no:cacheprovider"
    mounts = {
        "64 MB": "mount -t tmpfs -o size=64m tmpfs /dev/shm",
        "read-only": "mount -t tmpfs -o ro tmpfs /dev/shm",
    }
    for kind, mount in mounts.items():
        script = f"{share_cache} && {mount} && {pytest_cmd}; ls {state}/runs | wc -l | "
        script += "sed 's/^/runs left: /'"
        output = _namespaced(neon_project, script, env)
        assert "2 passed" in output, f"{kind}:\n{output}"
        header = [line for line in output.splitlines() if "run state in" in line]
        assert len(header) == 1, output
        assert str(state) in header[0] and "PYTEST_NEON_ALEMBIC_STATE_DIR" in header[0]
        why = "has 64 MB free and a run needs" if kind == "64 MB" else "Read-only file system"
        assert why in header[0], header[0]
        assert "No space left" not in output
        assert "runs left: 0" in output, output


FILL_THE_DISK = """
import psycopg
import pytest


def test_1_fills_the_disk(neon_branch_isolated):
    with psycopg.connect(neon_branch_isolated.connection_string, autocommit=True) as c:
        c.execute("CREATE TABLE filler (t text)")
        with pytest.raises(psycopg.Error):
            for _ in range(100):
                c.execute("INSERT INTO filler SELECT md5(random()::text) || repeat('x', 2000) "
                          "FROM generate_series(1, 20000)")
"""


@root_only
def test_a_disk_filling_during_a_test_saves_no_cache_and_the_next_run_works(
    neon_project: NeonProject, scratch_tmp: Path
) -> None:
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_fill=FILL_THE_DISK, test_two=TWO_TESTS)
    env = neon_project.subprocess_env()
    state = scratch_tmp / "state"
    state.mkdir()
    env["PYTEST_NEON_ALEMBIC_STATE_DIR"] = str(state)
    pytest_cmd = f"{sys.executable} -m pytest -p no:cacheprovider"
    script = f"""
        mount -t tmpfs -o size=160m,mode=0755 tmpfs {state} || exit 99
        mkdir {state}/cache && mount --bind {neon_project.cache_dir} {state}/cache || exit 98
        {pytest_cmd} test_fill.py > first.txt 2>&1; echo "rc=$?" >> first.txt
        ls -1 {state}/cache > cache.txt; ls -1 {state}/runs > runs.txt
        {pytest_cmd} test_two.py > second.txt 2>&1; echo "rc=$?" >> second.txt
    """
    _namespaced(neon_project, textwrap.dedent(script), env)
    first = (neon_project.path / "first.txt").read_text()
    second = (neon_project.path / "second.txt").read_text()

    assert "1 passed" in first and "INTERNALERROR" not in first, first
    assert "cache: the migrated state was not kept" in first, first
    summary = neon_project.summary_of(first)
    assert summary.created == summary.deleted, summary.line("branches:")
    snapshot = ".snapshot-" + AlembicProject(neon_project.path / "alembic.ini").project_id()[:16]
    assert snapshot not in (neon_project.path / "cache.txt").read_text()
    assert (neon_project.path / "runs.txt").read_text().strip() == ""
    assert "2 passed" in second and "rc=0" in second, second
    assert "Traceback" not in second and "OSError" not in second
    assert "migrations: cached" not in second, "a state from the full run was reused"


@root_only
def test_a_run_in_another_pid_namespace_leaves_a_live_run_alone(
    neon_project: NeonProject,
) -> None:
    """Containers sharing /dev/shm and a host name: the pid of the live run means
    nothing in the other namespace, and its files and server must survive."""
    from pytest_neon_alembic.coordination import RunDirectory
    from pytest_neon_alembic.server.embedded import EmbeddedServer

    live = RunDirectory.create(neon_project.state_dir)
    server = EmbeddedServer.start(live.path, neon_project.state_dir / "cache")
    try:
        neon_project.write_alembic()
        neon_project.pytester.makepyfile(test_two=TWO_TESTS)
        proc = subprocess.run(
            [
                "unshare",
                "--pid",
                "--fork",
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
            ],
            cwd=neon_project.path,
            env=neon_project.subprocess_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "2 passed" in proc.stdout, proc.stdout + proc.stderr
        assert (live.path / "pgdata" / "PG_VERSION").is_file()
        with psycopg.connect(server.admin_url, connect_timeout=5) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
        assert neon_project.runs_left() == [live.path]
    finally:
        server.stop()
        live.remove()


@pytest.mark.parametrize("round_", [1, 2])
def test_two_runs_on_one_server_with_an_empty_cache(
    neon_project: NeonProject, local_server, round_: int
) -> None:
    with psycopg.connect(local_server.admin_url, autocommit=True) as connection:
        for (name,) in connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pytest\\_cache\\_%'"
        ).fetchall():
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_two=TWO_TESTS)
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    args.append(f"--neon-local-url={local_server.admin_url}")
    runs = [
        subprocess.Popen(
            args,
            cwd=neon_project.path,
            env=neon_project.subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    for output in outputs:
        assert "2 passed" in output and "already exists" not in output, output
    assert _server_objects(local_server.admin_url) == (set(), set())


FREEZE = """
import os
import signal

import psycopg
import pytest


def children(pid):
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        yield int(entry)
            except OSError:
                pass


def test_1_freezes_the_server(neon_branch_isolated):
    with psycopg.connect(neon_branch_isolated.connection_string, autocommit=True) as c:
        backend = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        with open(f"/proc/{backend}/stat") as f:
            postmaster = int(f.read().rsplit(")", 1)[1].split()[1])
        for pid in [postmaster, *children(postmaster)]:
            os.kill(pid, signal.SIGSTOP)
        with pytest.raises(psycopg.OperationalError):
            c.execute("SELECT 1")  # would hang forever


def test_2_after(neon_branch_isolated):
    pass
"""


def test_a_frozen_server_is_reported_and_ends_within_a_bound(
    neon_project: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_NEON_ALEMBIC_FROZEN_SECONDS", "1")
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_freeze=FREEZE)

    result = neon_project.run(timeout=120)
    output = neon_project.output(result)

    assert "stopped (SIGSTOP) for 1 s" in output and "was killed" in output, output
    assert "1 passed" in output and "INTERNALERROR" not in output
    neon_project.assert_nothing_left()


SESSIONS_KILLED = """
import psycopg


def test_1_terminates_every_session(neon_branch_isolated):
    with psycopg.connect(neon_branch_isolated.connection_string, autocommit=True) as c:
        killed = c.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND usename = current_user"
        ).fetchone()[0]
        assert killed >= 1  # the plugin's own connections among them


def test_2_still_isolated(neon_branch_isolated):
    with psycopg.connect(neon_branch_isolated.connection_string) as c:
        assert c.execute("SELECT count(*) FROM items").fetchone() == (1,)
        c.execute("INSERT INTO items (name) VALUES ('two')")


def test_3_still_fine(neon_branch_isolated):
    with psycopg.connect(neon_branch_isolated.connection_string) as c:
        assert c.execute("SELECT count(*) FROM items").fetchone() == (1,)


def test_4_readonly_needs_createrole(neon_branch_readonly):
    pass
"""


def test_sessions_killed_by_a_test_and_a_role_without_createrole(
    neon_project: NeonProject, local_server
) -> None:
    with psycopg.connect(local_server.admin_url, autocommit=True) as connection:
        connection.execute("DROP ROLE IF EXISTS e2e_createdb_only")
        connection.execute(
            "CREATE ROLE e2e_createdb_only LOGIN CREATEDB NOCREATEROLE PASSWORD 'cr3atedb-pw'"
        )
    url = _url_with_role(local_server.admin_url, "e2e_createdb_only", "cr3atedb-pw")
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_sessions=SESSIONS_KILLED)

    result = neon_project.run(f"--neon-local-url={url}")
    output = neon_project.output(result)

    assert result.parseoutcomes() == {"passed": 3, "errors": 1}, output
    assert "CREATEROLE" in output and "cr3atedb-pw" not in output
    assert _server_objects(local_server.admin_url) == (set(), set())  # nothing leaked
    neon_project.assert_nothing_left()


def test_a_bad_state_directory_is_a_usage_error(
    neon_project: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    neon_project.pytester.makepyfile(test_x=NEEDS_DATABASE)
    a_file = neon_project.path / "not-a-directory"
    a_file.write_text("")
    for bad, why in ((a_file, "is not a directory"), (a_file / "sub", "cannot be created")):
        monkeypatch.setenv("PYTEST_NEON_ALEMBIC_STATE_DIR", str(bad))
        result = neon_project.pytester.runpytest("-p", "no:cacheprovider")  # starts no server
        output = neon_project.output(result)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, output
        assert "PYTEST_NEON_ALEMBIC_STATE_DIR" in output and why in output, output
        assert "INTERNALERROR" not in output and "Traceback" not in output


def test_sys_exit_in_env_py_is_one_clear_error(neon_project: NeonProject) -> None:
    neon_project.write_alembic(env_prologue="import sys\nsys.exit(1)\n")
    neon_project.pytester.makepyfile(test_x=NEEDS_DATABASE)

    result = neon_project.run()

    output = _assert_setup_error(result, "sys.exit(1)", "env.py")
    assert output.count("sys.exit(1)") <= 3, output
    neon_project.assert_nothing_left()
