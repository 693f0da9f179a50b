"""Inner sessions with pytest-xdist (-n 2): one migration, shared dirty branch, isolation."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import NeonProject

ISOLATED_TESTS = """
import os

import psycopg
import pytest


def record(kind, branch):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    with open("ids.txt", "a") as file:
        file.write(f"{kind} {worker} {branch.branch_id}\\n")


@pytest.mark.parametrize("n", range(COUNT))
def test_isolated(neon_branch_isolated, neon_branch_dirty, n):
    assert os.environ["DATABASE_URL"] == neon_branch_isolated.connection_string
    record("isolated", neon_branch_isolated)
    record("dirty", neon_branch_dirty)
    with psycopg.connect(neon_branch_isolated.connection_string) as connection:
        # Pristine: whatever the tests before it on this worker wrote is gone.
        names = [row[0] for row in connection.execute("SELECT name FROM items ORDER BY id")]
        assert names == ["seed"]
        tables = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'extra%'"
        ).fetchone()
        assert tables == (0,)
        assert connection.execute("SELECT last_value FROM items_id_seq").fetchone() == (1,)
        connection.execute("INSERT INTO items (name) VALUES (%s)", (f"test-{n}",))
        connection.execute(f"CREATE TABLE extra_{n} (x int)")
        assert connection.execute("SELECT nextval('items_id_seq')").fetchone() == (3,)
    with psycopg.connect(neon_branch_dirty.connection_string) as connection:
        connection.execute("INSERT INTO items (name) VALUES (%s)", (f"dirty-{n}",))
"""


def _ids(project: NeonProject) -> dict[str, dict[str, set[str]]]:
    """kind -> worker -> branch ids, from ids.txt."""
    ids: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for line in (project.path / "ids.txt").read_text().splitlines():
        kind, worker, branch_id = line.split()
        ids[kind][worker].add(branch_id)
    return ids


def test_custom_hook_runs_once_dirty_shared_isolated_per_worker(neon_project: NeonProject) -> None:
    neon_project.pytester.makeconftest(
        """
        import os
        import time

        import psycopg
        import pytest


        @pytest.fixture(scope="session")
        def neon_apply_migrations(neon_migration_branch):
            with open("hook_calls.txt", "a") as file:
                file.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
            time.sleep(0.5)  # widen the window in which the other worker could start a second run
            with psycopg.connect(os.environ["DATABASE_URL"]) as connection:
                connection.execute("CREATE TABLE items (id serial PRIMARY KEY, name text UNIQUE)")
                connection.execute("INSERT INTO items (name) VALUES ('seed')")
        """
    )
    neon_project.pytester.makepyfile(test_isolation=ISOLATED_TESTS.replace("COUNT", "12"))

    result = neon_project.run("-n", "2")
    output = neon_project.output(result)

    result.assert_outcomes(passed=12)
    assert len((neon_project.path / "hook_calls.txt").read_text().splitlines()) == 1
    ids = _ids(neon_project)
    assert set(ids["isolated"]) == {"gw0", "gw1"}, "both workers should have run tests"
    # Each worker has one isolated branch of its own.
    assert all(len(branch_ids) == 1 for branch_ids in ids["isolated"].values())
    assert ids["isolated"]["gw0"] != ids["isolated"]["gw1"]
    # One dirty branch, shared by both workers.
    dirty = set().union(*ids["dirty"].values())
    assert len(dirty) == 1, ids["dirty"]
    assert set(ids["dirty"]) == {"gw0", "gw1"}

    summary = neon_project.summary(result)
    assert re.search(r"^migrations: \d+\.\d+ s", output, re.M)
    # migration, dirty, one isolated branch per worker; all deleted.
    assert (summary.created, summary.deleted) == (4, 4), summary.line("branches:")
    assert (summary.resets, summary.clean) == (12, 0), summary.line("resets:")
    neon_project.assert_nothing_left()


def test_alembic_runs_once_and_isolation_holds_across_workers(neon_project: NeonProject) -> None:
    neon_project.write_alembic(
        "connect",
        env_prologue="""\
            import os

            with open("alembic_runs.txt", "a") as _file:
                _file.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
        """,
    )
    neon_project.pytester.makepyfile(
        test_isolation=ISOLATED_TESTS.replace("COUNT", "16"),
        test_readonly="""
        import os

        def test_readonly(neon_branch_readonly):
            assert os.environ["DATABASE_URL"] == neon_branch_readonly.connection_string
        """,
    )

    result = neon_project.run("-n", "2")
    output = neon_project.output(result)

    result.assert_outcomes(passed=17)
    runs = (neon_project.path / "alembic_runs.txt").read_text().splitlines()
    assert len(runs) == 1, runs
    assert len(re.findall(r"^migrations: \d+\.\d+ s", output, re.M)) == 1
    ids = _ids(neon_project)
    assert set(ids["isolated"]) == {"gw0", "gw1"}
    assert len(set().union(*ids["dirty"].values())) == 1
    summary = neon_project.summary(result)
    # migration, read-only, dirty, one isolated branch per worker; all deleted.
    assert (summary.created, summary.deleted) == (5, 5), summary.line("branches:")
    assert summary.resets == 16
    neon_project.assert_nothing_left()


def test_failing_migration_fails_every_worker_fast(neon_project: NeonProject) -> None:
    neon_project.write_alembic(
        "connect",
        [
            ("r1", "CREATE TABLE items (id serial PRIMARY KEY, name text)", "DROP TABLE items"),
            ("r2bad", "CREATE TABLE notes (item_id int REFERENCES missing_table (id))", ""),
        ],
    )
    neon_project.pytester.makepyfile(
        test_many="""
        import pytest

        @pytest.mark.parametrize("n", range(20))
        def test_isolated(neon_branch_isolated, n):
            pass
        """
    )

    started = time.monotonic()
    result = neon_project.run("-n", "2", "-rE", timeout=60)
    elapsed = time.monotonic() - started
    output = neon_project.output(result)

    assert elapsed < 30, f"the inner run took {elapsed:.1f} s"
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) == 0
    assert outcomes.get("failed", 0) == 0
    # Each worker errors once, on its first test, with the same message naming the
    # revision and the database error; then it stops.
    assert outcomes.get("errors", 0) == 2, output
    assert "[gw0]" in output
    assert "[gw1]" in output
    messages = re.findall(r"^pytest-neon-alembic: (Migration r2bad .*)$", output, re.M)
    assert len(messages) == 2, output
    assert len(set(messages)) == 1
    assert 'relation "missing_table" does not exist' in messages[0]
    assert "Traceback" not in output
    neon_project.assert_nothing_left()


def test_failing_custom_hook_fails_every_worker(neon_project: NeonProject) -> None:
    """A custom neon_apply_migrations that fails (alembic in a subprocess, exit status 3)."""
    neon_project.pytester.makeconftest(
        """
        import subprocess
        import sys

        import pytest


        @pytest.fixture(scope="session")
        def neon_apply_migrations(neon_migration_branch):
            with open("hook_calls.txt", "a") as file:
                file.write("called\\n")
            subprocess.run([sys.executable, "-c", "raise SystemExit(3)"], check=True)
        """
    )
    neon_project.pytester.makepyfile(
        test_many="""
        import pytest

        @pytest.mark.parametrize("n", range(10))
        def test_dirty(neon_branch_dirty, n):
            pass
        """
    )

    result = neon_project.run("-n", "2", timeout=60)
    output = neon_project.output(result)

    assert result.parseoutcomes().get("errors") == 2, output
    messages = re.findall(
        r"^pytest-neon-alembic: (neon_apply_migrations failed: .*)$", output, re.M
    )
    assert len(messages) == 2, output
    assert len(set(messages)) == 1
    assert "CalledProcessError" in messages[0]
    assert "exit status 3" in messages[0]
    assert len((neon_project.path / "hook_calls.txt").read_text().splitlines()) == 1
    assert "Traceback" not in output
    neon_project.assert_nothing_left()
