"""DATABASE_URL: the branch the test asked for (isolated > shared > dirty > read-only)."""

import os

from pytest_neon_alembic.guard import SANDBOX_URL


def test_1_isolated_wins(
    neon_branch_readonly, neon_branch_dirty, neon_branch_shared, neon_branch_isolated
):
    branches = (neon_branch_readonly, neon_branch_dirty, neon_branch_shared, neon_branch_isolated)
    assert len({branch.connection_string for branch in branches}) == 4
    assert os.environ["DATABASE_URL"] == neon_branch_isolated.connection_string


def test_2_isolated_wins_when_requested_first(neon_branch_isolated, neon_branch_readonly):
    assert os.environ["DATABASE_URL"] == neon_branch_isolated.connection_string


def test_3_shared_wins(neon_branch_dirty, neon_branch_shared, neon_branch_readonly):
    assert os.environ["DATABASE_URL"] == neon_branch_shared.connection_string


def test_4_dirty_wins(neon_branch_readonly, neon_branch_dirty):
    assert os.environ["DATABASE_URL"] == neon_branch_dirty.connection_string


def test_5_readonly(neon_branch_readonly):
    assert os.environ["DATABASE_URL"] == neon_branch_readonly.connection_string


def test_6_sandbox_again_after_the_tests():
    assert os.environ["DATABASE_URL"] == SANDBOX_URL  # outside tests: the sandbox
