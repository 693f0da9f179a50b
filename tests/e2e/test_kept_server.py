"""``--neon-keep-server``: the embedded server outlives the run, and nothing else does.

Real inner sessions on a real kept server: the next run uses the same
postmaster and the cached migrated state; every run's databases and roles go
at its end (or, for a killed run, at the next start); read-only access is the
kept standby, which the readers' role can reach and the server refuses; the
keeper stops an idle server, a server whose keeper was killed is stopped by
the next run, and ``--neon-cleanup`` stops an idle one at once. The standby,
once caught up, replays nothing while a run's tests go on, and catches up
between runs.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

if TYPE_CHECKING:
    from conftest import NeonProject

TESTS = """
import os
import psycopg
import pytest


def test_1_writes(neon_branch_isolated):
    with psycopg.connect(neon_branch_isolated.connection_string) as connection:
        connection.execute("INSERT INTO items (name) VALUES ('x')")


def test_2_isolated(neon_branch_isolated):
    with psycopg.connect(neon_branch_isolated.connection_string) as connection:
        assert connection.execute("SELECT name FROM items").fetchall() == [("seed",)]


def test_3_readonly(neon_branch_readonly):
    url = neon_branch_readonly.connection_string
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT name FROM items").fetchall() == [("seed",)]
        # As migrated (one row), not as the WAL logged it ahead (nextval logs 32 at once).
        sequence = "SELECT last_value, is_called FROM items_id_seq"
        assert connection.execute(sequence).fetchone() == (1, True)
        connection.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            connection.execute("INSERT INTO items (name) VALUES ('y')")
    # The same credentials on the kept server itself (its port, from the outer test).
    port = os.environ.get("KEPT_PORT")
    if port:
        primary = url.replace(f":{neon_branch_readonly_port(url)}/", f":{port}/")
        with pytest.raises(psycopg.OperationalError, match="rejects"):
            psycopg.connect(primary, connect_timeout=5).close()


def neon_branch_readonly_port(url):
    return url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
"""

KILLED = """
import os
import signal


def test_killed(neon_branch_isolated):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _kept(project: NeonProject) -> Path:
    """The kept server's directory (one build: one directory), or where it was."""
    kept = sorted(p for p in (project.state_dir / "kept").glob("*") if p.is_dir())
    assert len(kept) <= 1, kept
    return kept[0] if kept else project.state_dir / "kept" / "none"


def _server_state(project: NeonProject) -> dict:
    return json.loads((_kept(project) / "server.json").read_text())


def _keepers(project: NeonProject) -> list[int]:
    """Live keeper processes of this project's state directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "pytest_neon_alembic.kept_server" in cmdline and str(project.state_dir) in cmdline:
            found.append(int(entry.name))
    return found


def _run_databases_and_roles(admin_url: str) -> tuple[list[str], list[str]]:
    with psycopg.connect(admin_url) as connection:
        databases = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pytest\\_%' "
            "AND datname NOT LIKE 'pytest\\_cache\\_%'"
        ).fetchall()
        roles = connection.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'pytest\\_%' "
            "AND rolname <> 'pytest_neon_readers'"
        ).fetchall()
    return [d for (d,) in databases], [r for (r,) in roles]


def _standby(project: NeonProject, query: str) -> object:
    standby = json.loads((_kept(project) / "standby.json").read_text())
    with psycopg.connect(standby["admin_url"]) as connection:
        return connection.execute(query).fetchone()[0]


def _standby_paused(project: NeonProject) -> bool:
    """Whether the kept standby's replay is paused (it is while a run goes on)."""
    return bool(_standby(project, "SELECT pg_is_wal_replay_paused()"))


def _standby_caught_up(project: NeonProject) -> bool:
    return bool(_standby(project, "SELECT pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()"))


def _wait_until(condition, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_the_next_run_uses_the_kept_server_and_no_run_leaves_anything_in_it(
    neon_project: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_kept=TESTS)

    first = neon_project.run("--neon-keep-server=5")
    first.assert_outcomes(passed=3)
    assert "kept embedded PostgreSQL" in neon_project.output(first)
    state = _server_state(neon_project)
    assert neon_project.runs_left() == []
    assert _run_databases_and_roles(state["admin_url"]) == ([], [])
    assert len(_keepers(neon_project)) == 1

    monkeypatch.setenv("KEPT_PORT", str(state["port"]))
    second = neon_project.run("--neon-keep-server=5", "-n", "2")
    second.assert_outcomes(passed=3)
    output = neon_project.output(second)
    assert "migrations: cached" in output, output
    assert _server_state(neon_project)["pid"] == state["pid"]  # the same postmaster
    assert _run_databases_and_roles(state["admin_url"]) == ([], [])
    assert neon_project.runs_left() == []
    assert len(_keepers(neon_project)) == 1
    assert not _standby_paused(neon_project)  # it catches up between runs
    assert _wait_until(lambda: _standby_caught_up(neon_project))

    # A run killed in a test leaves its databases; the next run drops them at its start.
    neon_project.pytester.makepyfile(test_killed=KILLED)
    killed = neon_project.run("--neon-keep-server=5", "test_killed.py")
    assert killed.ret != 0
    assert _run_databases_and_roles(state["admin_url"])[0]  # the killed run's isolated branch
    # Paused at that run's start (it had caught up), though the run read nothing: the
    # standby replays no run's writes while its tests go on. (The end that would have
    # resumed it never came.)
    assert _standby_paused(neon_project)
    # Migrating with the standby already following: its sequences must still be exact.
    again = neon_project.run("--neon-keep-server=5", "--neon-no-cache", "test_kept.py")
    again.assert_outcomes(passed=3)
    assert _run_databases_and_roles(state["admin_url"]) == ([], [])
    assert not _standby_paused(neon_project)

    cleanup = neon_project.run("--neon-cleanup")
    assert "Kept embedded servers stopped" in neon_project.output(cleanup)
    assert not _kept(neon_project).exists()
    assert _wait_until(lambda: not _keepers(neon_project))
    neon_project.assert_nothing_left()


def test_the_keeper_stops_an_idle_server_and_a_server_without_keeper_is_stopped(
    neon_project: NeonProject,
) -> None:
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(
        test_one="def test_one(neon_branch_isolated):\n    assert neon_branch_isolated\n"
    )

    # 0.02 minutes: the keeper stops the server about a second after the run.
    neon_project.run("--neon-keep-server=0.02").assert_outcomes(passed=1)
    assert _wait_until(lambda: not _kept(neon_project).exists())
    assert _wait_until(lambda: not _keepers(neon_project))
    neon_project.assert_nothing_left()

    # A keeper killed with SIGKILL: the next run, kept or not, stops its server.
    neon_project.run("--neon-keep-server=5").assert_outcomes(passed=1)
    (keeper,) = _keepers(neon_project)
    os.kill(keeper, signal.SIGKILL)
    assert _wait_until(lambda: not _keepers(neon_project))
    assert neon_project.postgres_pids(_kept(neon_project))
    past = time.time() - 600  # older than the grace a new server has to get its keeper
    os.utime(_kept(neon_project) / "server.json", (past, past))
    neon_project.run().assert_outcomes(passed=1)
    assert not _kept(neon_project).exists()
    neon_project.assert_nothing_left()


def test_a_standby_that_stopped_replaying_is_replaced_by_a_fresh_copy(
    neon_project: NeonProject,
) -> None:
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_kept=TESTS)
    first = neon_project.run("--neon-keep-server=5", "test_kept.py::test_3_readonly")
    first.assert_outcomes(passed=1)
    stalled = json.loads((_kept(neon_project) / "standby.json").read_text())

    # Its WAL receiver can no longer reach the server (as when the server no longer has
    # the WAL it needs): it replays nothing more.
    with psycopg.connect(stalled["admin_url"], autocommit=True) as connection:
        connection.execute("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1'")
        connection.execute("SELECT pg_reload_conf()")
    streaming = "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'"
    assert _wait_until(lambda: not _standby(neon_project, streaming))

    second = neon_project.run("--neon-keep-server=5", "test_kept.py")
    second.assert_outcomes(passed=3, warnings=1)  # read-only included: on a fresh copy
    assert "no WAL receiver streams" in neon_project.output(second)
    assert "It was replaced by a fresh copy." in neon_project.output(second)
    renewed = json.loads((_kept(neon_project) / "standby.json").read_text())
    assert renewed["pid"] != stalled["pid"]
    assert _standby(neon_project, streaming) == 1  # it follows the server again

    neon_project.run("--neon-cleanup")
    assert _wait_until(lambda: not _keepers(neon_project))
    neon_project.assert_nothing_left()
