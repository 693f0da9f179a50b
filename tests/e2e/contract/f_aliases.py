"""The deprecated aliases neon_branch_readwrite and neon_branch."""

import os

import pytest


@pytest.mark.parametrize("alias", ["neon_branch_readwrite", "neon_branch"])
def test_1_alias_warns_and_gives_isolated(request, alias):
    with pytest.deprecated_call(match=f"{alias} is deprecated"):
        branch = request.getfixturevalue(alias)
    assert branch == request.getfixturevalue("neon_branch_isolated")
    assert branch.read_only is False


def test_2_aliases_requested_directly(neon_branch_readwrite, neon_branch, neon_branch_isolated):
    # Their warnings land in the inner session's warnings summary (checked outside).
    assert neon_branch_readwrite == neon_branch == neon_branch_isolated
    assert os.environ["DATABASE_URL"] == neon_branch_isolated.connection_string
