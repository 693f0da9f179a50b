"""Resets in place in real inner sessions: per-worker detection, the missed write of
issue 10, and the fixture contract with two xdist workers under both strategies."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import NeonProject

# Per round: the shape of the missed write (a write that resets, a write right after
# that reset, a check), then a DDL test (a swap, with a spare made in the background)
# and again a write right after it; and reads, which must never be reset. And read-only
# tests in between, which never touch the isolated branch.
WORKLOAD = """
import psycopg
import pytest

ROUNDS = 5


def pristine(url):
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT name FROM items ORDER BY id").fetchall() == [("seed",)]
        assert connection.execute("SELECT last_value FROM items_id_seq").fetchone() == (1,)
        assert connection.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass "
            "AND attname LIKE 'extra%'"
        ).fetchone() == (0,)


def write(url, name):
    with psycopg.connect(url) as connection:
        connection.execute("INSERT INTO items (name) VALUES (%s)", (name,))


@pytest.mark.parametrize("n", range(ROUNDS))
class TestRound:
    def test_1_write(self, neon_branch_isolated, n):
        pristine(neon_branch_isolated.connection_string)
        write(neon_branch_isolated.connection_string, f"first-{n}")

    def test_1b_read_only_meanwhile(self, neon_branch_readonly, n):
        pristine(neon_branch_readonly.connection_string)

    def test_2_write_right_after_the_reset(self, neon_branch_isolated, n):
        pristine(neon_branch_isolated.connection_string)
        write(neon_branch_isolated.connection_string, f"second-{n}")

    def test_3_check(self, neon_branch_isolated, n):
        pristine(neon_branch_isolated.connection_string)

    def test_4_ddl(self, neon_branch_isolated, n):
        pristine(neon_branch_isolated.connection_string)
        with psycopg.connect(neon_branch_isolated.connection_string) as connection:
            connection.execute(f"ALTER TABLE items ADD COLUMN extra_{n} int")

    def test_4b_read_only_meanwhile(self, neon_branch_readonly, n):
        pristine(neon_branch_readonly.connection_string)

    def test_5_write_right_after_the_swap(self, neon_branch_isolated, n):
        pristine(neon_branch_isolated.connection_string)
        write(neon_branch_isolated.connection_string, f"fifth-{n}")

    def test_6_read(self, neon_branch_isolated, n):
        pristine(neon_branch_isolated.connection_string)

    def test_7_read(self, neon_engine, n):
        with neon_engine.connect() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM items").scalar_one()
"""


def test_two_workers_no_missed_write_and_no_reset_of_a_clean_test(
    neon_project: NeonProject,
) -> None:
    """With -n 2 and loadfile-free distribution, each worker's tests interleave with the
    other's writes: a test that wrote nothing is never reset, a write never missed."""
    neon_project.write_alembic("connect")
    neon_project.pytester.makepyfile(test_workload=WORKLOAD)

    result = neon_project.run("-n", "2")

    result.assert_outcomes(passed=5 * 9)
    summary = neon_project.summary(result)
    # Per round 4 writing tests (1, 2, 4, 5), 3 that only read (3, 6, 7), 2 read-only.
    assert (summary.resets, summary.clean) == (5 * 4, 5 * 3), summary.line("resets:")
    assert f", {5 * 3} in place" in summary.line("resets:")  # only the DDL tests swapped
    neon_project.assert_nothing_left()


@pytest.mark.parametrize("strategy", ["branch", "transaction"])
def test_fixture_contract_with_two_workers(neon_project: NeonProject, strategy: str) -> None:
    neon_project.write_alembic("connect")
    neon_project.write_contract_tests()

    # --dist loadfile: the dirty and shared modules' tests build on each other in order.
    result = neon_project.run("-n", "2", "--dist", "loadfile", f"--neon-reset={strategy}")

    result.assert_outcomes(passed=31)
    summary = neon_project.summary(result)
    assert summary.resets + summary.clean == 15, summary.line("resets:")
    # Five tests wrote; with the transaction strategy, neon_session's commits are rolled back.
    assert summary.resets == 5 if strategy == "branch" else 1 <= summary.resets <= 5
    neon_project.assert_nothing_left()
