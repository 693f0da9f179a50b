"""No password printed: one test per path a secret took to the terminal.

A ``NeonBranch`` diff under ``-vv``, a ``?password=`` query parameter in
"Cannot connect", a keyword/value string in "must be a postgresql:// URL", and
the connection guard's refusal.
"""

from __future__ import annotations

import dataclasses

import pytest

from pytest_neon_alembic import guard
from pytest_neon_alembic.backends.local import LocalBackend
from pytest_neon_alembic.branch import NeonBranch
from pytest_neon_alembic.config import read_settings
from pytest_neon_alembic.errors import ConfigError, ForeignDatabaseError, ServerError

SECRET = "Pa55-never-printed"


def test_neon_branch_diff_under_vv_hides_the_password(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        f"""
        import dataclasses
        from pytest_neon_alembic import NeonBranch

        def url(database):  # the password is in neither the source nor a local variable
            return "postgresql://u:" + "{SECRET[:4]}" + "{SECRET[4:]}" + "@h/" + database

        def test_diff():
            left = NeonBranch("br-1", "p", url("db"), "h")
            right = dataclasses.replace(left, branch_id="br-2", connection_string=url("db2"))
            assert left == right
        """
    )
    result = pytester.runpytest_inprocess("-vv", "-l", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "branch_id" in output  # the diff is there ...
    assert SECRET not in output  # ... without the password


def test_neon_branch_equality_ignores_only_the_password_bearing_field() -> None:
    branch = NeonBranch("br-1", "p", f"postgresql://u:{SECRET}@h/db", "h")
    assert branch == dataclasses.replace(branch, connection_string="postgresql://u:other@h/db")
    assert branch != dataclasses.replace(branch, branch_id="br-2")
    assert SECRET not in repr(branch)


def test_cannot_connect_masks_a_password_query_parameter() -> None:
    url = f"postgresql://someone@127.0.0.1:1/db?password={SECRET}&sslmode=disable"
    with pytest.raises(ServerError) as error:
        LocalBackend.connect_admin(url)
    assert "Cannot connect" in str(error.value)
    assert SECRET not in str(error.value)
    assert "password=***" in str(error.value)


def test_keyword_value_local_url_is_masked_in_the_error(tmp_path) -> None:
    with pytest.raises(ConfigError) as error:
        read_settings(
            cli=lambda name: (
                f"host=127.0.0.1 password={SECRET} dbname=x" if name == "local_url" else None
            ),
            ini=lambda name: None,
            environ={},
            rootdir=tmp_path,
            invocation_dir=tmp_path,
            ini_dir=None,
        )
    assert "must be a postgresql:// URL" in str(error.value)
    assert SECRET not in str(error.value)


@pytest.mark.parametrize(
    "target",
    [
        guard.target_of_url(f"postgresql://dev:{SECRET}@db.example:5432/app?password={SECRET}"),
        guard.target_of_params({"host": "db.example", "dbname": "app", "password": SECRET}),
    ],
)
def test_guard_refusal_masks_the_password(target: guard.Target) -> None:
    refusing = guard.ConnectionGuard(
        lambda _target: False, guard.AllowedPatterns([]), guard.ConnectionVariables(["X_URL"])
    )
    with pytest.raises(ForeignDatabaseError) as error:
        refusing.check(target)
    assert "db.example" in str(error.value)
    assert SECRET not in str(error.value)
