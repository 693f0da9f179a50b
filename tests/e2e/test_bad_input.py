"""Misconfigurations and crashes: one clear message each, and nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

if TYPE_CHECKING:
    from conftest import NeonProject

# A test that needs the database: it must error (not fail, not skip) when setup fails.
NEEDS_DATABASE = """
def test_1_isolated(neon_branch_isolated):
    pass


def test_2_readonly(neon_branch_readonly):
    pass


def test_3_dirty(neon_branch_dirty):
    pass
"""


def _no_plugin_traceback(output: str) -> None:
    assert "Traceback" not in output
    assert "pytest_neon_alembic/" not in output, "a traceback from inside the plugin was shown"


def _assert_setup_error(result: pytest.RunResult, *expected: str) -> str:
    """The session errored once (first test), stopped, and showed ``expected`` in the message."""
    output = result.stdout.str() + "\n" + result.stderr.str()
    outcomes = result.parseoutcomes()
    # Three tests were collected; only the first ran (and errored): the session stopped.
    assert "collected 3 items" in output
    assert outcomes == {"errors": 1}, output
    for text in expected:
        assert text in output, f"{text!r} not in output:\n{output}"
    _no_plugin_traceback(output)
    return output


def _url_with_role(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _server_objects(admin_url: str) -> tuple[set[str], set[str]]:
    """(databases, roles) on a server, except the built-in ones and the plugin's cache."""
    with psycopg.connect(admin_url, autocommit=True) as connection:
        databases = {
            row[0]
            for row in connection.execute(
                "SELECT datname FROM pg_database WHERE datname NOT IN "
                "('postgres', 'template0', 'template1') AND datname NOT LIKE 'pytest\\_cache\\_%'"
            )
        }
        roles = {
            row[0]
            for row in connection.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE 'pytest%'"
            )
        }
    return databases, roles


def _cache_databases(admin_url: str) -> set[str]:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pytest\\_cache\\_%'"
        )
        return {row[0] for row in rows}


# -- usage errors ---------------------------------------------------------------------------


def test_missing_alembic_ini(neon_project: NeonProject) -> None:
    neon_project.pytester.makepyfile(test_x=NEEDS_DATABASE)

    result = neon_project.run("--neon-alembic-ini=missing.ini")
    output = neon_project.output(result)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "missing.ini" in result.stderr.str()
    assert str(neon_project.path / "missing.ini") in output
    _no_plugin_traceback(output)
    neon_project.assert_nothing_left()


def test_neon_backend_without_credentials(neon_project: NeonProject) -> None:
    neon_project.pytester.makepyfile(test_x=NEEDS_DATABASE)

    result = neon_project.run("--neon-backend=neon")
    output = neon_project.output(result)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    error_lines = [line for line in result.stderr.lines if line.startswith("ERROR")]
    assert len(error_lines) == 1, result.stderr.str()
    assert "NEON_API_KEY" in error_lines[0]
    assert "NEON_PROJECT_ID" in error_lines[0]
    _no_plugin_traceback(output)
    neon_project.assert_nothing_left()


def test_negative_branch_expiry(neon_project: NeonProject) -> None:
    neon_project.pytester.makepyfile(test_x=NEEDS_DATABASE)

    result = neon_project.run("--neon-branch-expiry=-1")
    output = neon_project.output(result)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--neon-branch-expiry" in result.stderr.str()
    assert "-1" in result.stderr.str()
    _no_plugin_traceback(output)
    neon_project.assert_nothing_left()


# -- migrations -----------------------------------------------------------------------------


def test_script_location_without_env_py(neon_project: NeonProject) -> None:
    neon_project.write_alembic(script_location="nowhere")
    neon_project.pytester.makepyfile(test_x=NEEDS_DATABASE)

    result = neon_project.run()

    _assert_setup_error(result, "script_location", "nowhere", "env.py")
    neon_project.assert_nothing_left()


def test_failing_migration_stops_the_session(neon_project: NeonProject) -> None:
    neon_project.write_alembic(
        "connect",
        [
            ("r1", "CREATE TABLE items (id serial PRIMARY KEY, name text)", "DROP TABLE items"),
            ("r2bad", "INSERT INTO items (id, name) VALUES ('not-a-number', 'x')", ""),
        ],
    )
    neon_project.pytester.makepyfile(test_x=NEEDS_DATABASE)

    result = neon_project.run()

    output = _assert_setup_error(
        result, "Migration r2bad", "invalid input syntax for type integer", "not-a-number"
    )
    summary = neon_project.summary(result)
    assert summary.created == summary.deleted, summary.line("branches:")
    assert "migrations: failed (alembic upgrade heads, alembic.ini)" in output
    neon_project.assert_nothing_left()


def test_env_py_ignoring_the_injected_connection(neon_project: NeonProject) -> None:
    neon_project.write_alembic("ignores")
    neon_project.pytester.makepyfile(test_x=NEEDS_DATABASE)

    result = neon_project.run()

    output = _assert_setup_error(result, "ignored", 'config.attributes.get("connection"')
    assert str(neon_project.path / "migrations" / "env.py") in output
    # env.py did migrate the other database; the plugin noticed that ours is not at head.
    assert (neon_project.path / "other.db").is_file()
    neon_project.assert_nothing_left()


def test_neon_marker_with_unknown_reset_strategy(neon_project: NeonProject) -> None:
    """A typo in @pytest.mark.neon(reset=...) is an error, not silently the default strategy."""
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(
        test_marker="""
        import pytest


        @pytest.mark.neon(reset="transation")
        def test_typo(neon_session):
            pass
        """
    )

    result = neon_project.run()
    output = neon_project.output(result)

    result.assert_outcomes(errors=1)
    assert "transation" in output
    assert "branch" in output
    assert "transaction" in output
    _no_plugin_traceback(output)
    neon_project.assert_nothing_left()


# -- servers --------------------------------------------------------------------------------


def test_no_postgres_binaries(neon_project: NeonProject, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_NEON_ALEMBIC_PG_BINDIR", "/nonexistent")
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_x=NEEDS_DATABASE)

    result = neon_project.run()

    _assert_setup_error(
        result, "PYTEST_NEON_ALEMBIC_PG_BINDIR", "/nonexistent", "pytest-neon-alembic[embedded]"
    )
    neon_project.assert_nothing_left()


def test_local_url_nothing_listening(neon_project: NeonProject) -> None:
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_x=NEEDS_DATABASE)

    result = neon_project.run("--neon-local-url=postgresql://u:s3cretpw@127.0.0.1:1/db")

    output = _assert_setup_error(result, "127.0.0.1:1", "Cannot connect")
    assert "s3cretpw" not in output
    neon_project.assert_nothing_left()


def test_local_url_role_without_createdb(neon_project: NeonProject, local_server) -> None:
    with psycopg.connect(local_server.admin_url, autocommit=True) as connection:
        connection.execute("DROP ROLE IF EXISTS e2e_nocreatedb")
        connection.execute("CREATE ROLE e2e_nocreatedb LOGIN NOCREATEDB PASSWORD 'r0lepw-e2e'")
    url = _url_with_role(local_server.admin_url, "e2e_nocreatedb", "r0lepw-e2e")
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_x=NEEDS_DATABASE)

    result = neon_project.run(f"--neon-local-url={url}")

    output = _assert_setup_error(result, "e2e_nocreatedb", "CREATEDB", "ALTER ROLE")
    assert "r0lepw-e2e" not in output
    neon_project.assert_nothing_left()


def test_fixture_contract_on_a_given_server(
    neon_project: NeonProject, local_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same contract as on the embedded server, through NEON_LOCAL_URL as superuser."""
    admin_url = local_server.admin_url
    password = urlsplit(admin_url).password
    monkeypatch.setenv("NEON_LOCAL_URL", admin_url)
    neon_project.write_alembic("connect")
    neon_project.write_contract_tests()
    objects_before = _server_objects(admin_url)
    caches_before = _cache_databases(admin_url)

    result = neon_project.run()
    output = neon_project.output(result)

    assert "backend: local (server PostgreSQL" in output
    summary = neon_project.summary(result)
    assert (summary.created, summary.deleted) == (7, 7)
    assert password
    assert password not in output
    # Nothing of the run is left on the server (no database, no read-only role); at most
    # one new database: the migrated state cached for later runs (DESIGN, "Migrations").
    assert _server_objects(admin_url) == objects_before
    assert len(_cache_databases(admin_url) - caches_before) <= 1
    neon_project.assert_nothing_left()
    failed = [line for line in result.outlines if line.startswith(("FAILED", "ERROR"))]
    assert failed == []
    result.assert_outcomes(passed=31, warnings=2)


# -- a killed run ---------------------------------------------------------------------------


SLEEPING_TESTS = {
    "test_sleep": """
        import time
        from pathlib import Path


        def test_sleep(neon_branch_isolated, neon_branch_dirty, neon_branch_readonly):
            Path("marker").write_text("branches created")
            time.sleep(60)
        """,
    "test_after": """
        import psycopg


        def test_after(neon_branch_isolated):
            with psycopg.connect(neon_branch_isolated.connection_string) as connection:
                assert connection.execute("SELECT count(*) FROM items").fetchone() == (1,)
        """,
}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_sleeping_run(project: NeonProject, output: Path | None = None) -> subprocess.Popen:
    """An inner pytest whose only test holds its branches and sleeps; returns once it sleeps."""
    project.write_alembic()
    project.pytester.makepyfile(**SLEEPING_TESTS)
    marker = project.path / "marker"
    stdout = open(output, "w") if output else subprocess.DEVNULL  # noqa: SIM115
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_sleep.py"],
            cwd=project.path,
            env=project.subprocess_env(),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            # Ctrl-C as in a terminal, even when this suite was started in the background
            # (a shell's background job inherits SIGINT ignored, and Python keeps it so).
            preexec_fn=_default_sigint,
        )
    finally:
        if output:
            stdout.close()
    deadline = time.monotonic() + 60
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the inner run ended or hung before its test started")
        time.sleep(0.05)
    return process


def test_sigkilled_run_is_cleaned_up_by_the_next_run(neon_project: NeonProject) -> None:
    process = _start_sleeping_run(neon_project)
    try:
        runs = neon_project.runs_left()
        assert len(runs) == 1
        killed_run = runs[0]
        assert neon_project.postgres_pids(killed_run), "no server was started for the run"

        # A second run while the first one is alive must leave the live run alone.
        concurrent = neon_project.run("test_after.py")
        concurrent.assert_outcomes(passed=1)
        assert process.poll() is None
        assert killed_run.is_dir()
        assert neon_project.postgres_pids(killed_run)
        assert neon_project.runs_left() == [killed_run]

        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The server outlives the killed test process...
    time.sleep(0.2)
    assert neon_project.postgres_pids(killed_run), "the server died with the killed process"
    assert killed_run.is_dir()

    # ...until the next run in the same state directory cleans up after it.
    result = neon_project.run("test_after.py")

    result.assert_outcomes(passed=1)
    assert not neon_project.postgres_pids(killed_run)
    assert not killed_run.exists()
    neon_project.assert_nothing_left()


def test_interrupted_run_cleans_up_at_once(neon_project: NeonProject) -> None:
    """Ctrl-C (SIGINT) during a test: branches deleted and server stopped before exiting."""
    log = neon_project.path / "interrupted.log"
    process = _start_sleeping_run(neon_project, log)
    try:
        runs = neon_project.runs_left()
        assert len(runs) == 1
        assert neon_project.postgres_pids(runs[0])
        os.kill(process.pid, signal.SIGINT)
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()

    assert returncode == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    summary = neon_project.summary_of(output)
    assert summary.created == summary.deleted, summary.line("branches:")
    neon_project.assert_nothing_left()


def test_sigkilled_run_on_a_given_server_is_cleaned_up(
    neon_project: NeonProject, local_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--neon-local-url: a killed run's databases and role are dropped by a later run.

    The later run uses another state directory, so it cannot know the killed run
    from its files: only the markers on the server's databases tell.
    """
    admin_url = local_server.admin_url
    monkeypatch.setenv("NEON_LOCAL_URL", admin_url)

    def leftovers() -> tuple[set[str], set[str]]:
        return _server_objects(admin_url)

    assert leftovers() == (set(), set())
    process = _start_sleeping_run(neon_project)
    try:
        databases, roles = leftovers()
        assert len(databases) == 4, databases  # migration, isolated, dirty, read-only
        assert len(roles) == 2, roles  # the read-only role and its SECURITY DEFINER owner
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert leftovers() == (databases, roles)

    neon_project.new_state_dir()
    result = neon_project.run("test_after.py")

    result.assert_outcomes(passed=1)
    assert leftovers() == (set(), set())
    neon_project.assert_nothing_left()


SERVER_DIES = """
import os
import signal
from pathlib import Path

import psycopg


def test_1_kills_the_server(neon_branch_isolated):
    with psycopg.connect(neon_branch_isolated.connection_string) as connection:
        data_dir = connection.execute("SHOW data_directory").fetchone()[0]
    pid = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)


def test_2_needs_the_server(neon_branch_isolated):
    pass


def test_3_needs_it_too(neon_branch_isolated):
    pass
"""


def test_server_dying_mid_run_is_one_clear_error(neon_project: NeonProject) -> None:
    """The embedded server is killed during a test: the next test errors once, naming the
    server, the session stops, and nothing is left behind (no process, no files)."""
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_dies=SERVER_DIES)

    result = neon_project.run()
    output = neon_project.output(result)

    # The next look at the server finds it gone (test_1's teardown, or test_2's setup or
    # teardown: a killed postmaster's backends linger for a moment): one error, and the
    # session stops there.
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors") == 1, outcomes
    assert outcomes.get("passed", 0) <= 2, outcomes
    assert "failed" not in outcomes, outcomes
    assert "pytest-neon-alembic: Lost the connection to PostgreSQL" in output
    assert "The embedded PostgreSQL server stopped working" in output
    assert "Traceback" not in output
    assert "test_3_needs_it_too" not in output
    assert re.search(r"^backend: local \(embedded PostgreSQL \d+", output, re.M)
    neon_project.assert_nothing_left()
