"""A run touches only the databases it created.

A developer's database — a database with its own password-protected role on a
scratch server this test starts — is named by ``DATABASE_URL`` before pytest
starts, as on most developers' machines. Inner sessions reach for it in every
way the issue found (an engine built at import, a session fixture, an env.py
that ignores the injected connection, with and without pytest-alembic's
checks, drivers used directly), serially and with ``-n 2``. Afterwards it
holds exactly what it held before, and its password was never printed.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg
import pytest

from pytest_neon_alembic.guard import SANDBOX_HOST
from pytest_neon_alembic.urls import replace_database

if TYPE_CHECKING:
    from conftest import NeonProject

DEV_PASSWORD = "dev-Secret-42"

APP_SETTINGS = """\
import os

# Read once, at import, the way settings modules do (pydantic-settings, Flask config).
DATABASE_URL = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
"""

APP_DB = """\
import sqlalchemy as sa

import app_settings

engine = sa.create_engine(app_settings.DATABASE_URL)  # at import: the sandbox
"""

CONFTEST = """\
import os

import pytest
import sqlalchemy as sa

import app_db  # the application, imported before any test (and before migrations)


@pytest.fixture(scope="session")
def session_engine():
    # No branch asked for: DATABASE_URL is the sandbox while this sets up.
    return sa.create_engine(os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))


@pytest.fixture(scope="session")
def dirty_engine(neon_branch_dirty):
    # A branch asked for: DATABASE_URL is that branch while this sets up.
    assert os.environ["DATABASE_URL"] == neon_branch_dirty.connection_string
    return sa.create_engine(os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
"""

TESTS = """\
import asyncio
import os
from pathlib import Path

import psycopg
import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import app_db
from pytest_neon_alembic.errors import ForeignDatabaseError, NoBranchError

DEV_URL = Path(__file__).with_name("dev_url.txt").read_text().strip()  # e.g. from a .env file
INSERT = sa.text("INSERT INTO items (name) VALUES ('from-a-test')")


WHERE = sa.text("SELECT current_database()")


def test_app_engine_built_at_import(neon_branch_isolated):
    # Built from the sandbox: it follows the test to its branch.
    with app_db.engine.begin() as connection:
        connection.execute(INSERT)
        assert connection.execute(WHERE).scalar() == neon_branch_isolated.branch_id


def test_session_fixture_without_a_branch(session_engine, neon_branch_isolated):
    with session_engine.begin() as connection:
        connection.execute(INSERT)
        assert connection.execute(WHERE).scalar() == neon_branch_isolated.branch_id


def test_app_engine_in_a_test_without_a_branch():
    with pytest.raises(NoBranchError, match="asked for no database branch"):
        app_db.engine.connect()


def test_session_fixture_with_a_branch(dirty_engine):
    with dirty_engine.begin() as connection:
        connection.execute(INSERT)  # the dirty branch: allowed


def test_the_development_database_by_every_driver(neon_branch_isolated):
    sync_url = DEV_URL.replace("postgresql://", "postgresql+psycopg://")
    attempts = {
        "psycopg": lambda: psycopg.connect(DEV_URL),
        "psycopg keywords": lambda: psycopg.connect(
            psycopg.conninfo.make_conninfo(DEV_URL)
        ),
        "psycopg2": lambda: psycopg2.connect(DEV_URL),
        "sqlalchemy psycopg": lambda: sa.create_engine(sync_url).connect(),
        "sqlalchemy psycopg2": lambda: sa.create_engine(
            DEV_URL.replace("postgresql://", "postgresql+psycopg2://")
        ).connect(),
        "sqlalchemy creator": lambda: sa.create_engine(
            "postgresql+psycopg://", creator=lambda: psycopg.connect(DEV_URL)
        ).connect(),
        "sqlalchemy asyncpg": lambda: asyncio.run(_async_connect("asyncpg")),
        "sqlalchemy psycopg async": lambda: asyncio.run(_async_connect("psycopg")),
        "asyncpg": lambda: asyncio.run(_asyncpg_connect()),
    }
    for name, attempt in attempts.items():
        with pytest.raises(ForeignDatabaseError) as refused:
            attempt()
        assert "this test run did not create that database" in str(refused.value), name


async def _async_connect(driver):
    engine = create_async_engine(DEV_URL.replace("postgresql://", f"postgresql+{driver}://"))
    try:
        async with engine.connect():
            pass
    finally:
        await engine.dispose()


async def _asyncpg_connect():
    import asyncpg

    await asyncpg.connect(DEV_URL)
"""


def _fingerprint(admin_url: str, database: str) -> list:
    """Every table and every row of the database, and its transaction count."""
    with psycopg.connect(replace_database(admin_url, database), autocommit=True) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname NOT IN "
                "('pg_catalog', 'information_schema') ORDER BY 1"
            )
        ]
        rows = [
            (table, connection.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall())
            for table in tables
        ]
        roles = connection.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'dev%' ORDER BY 1"
        ).fetchall()
    return [tables, rows, roles]


@pytest.fixture
def dev_database(local_server, neon_project: NeonProject, monkeypatch) -> Iterator[str]:
    """A developer's database with its own role, named by DATABASE_URL before pytest starts."""
    name = f"dev_{uuid.uuid4().hex[:8]}"
    admin = local_server.admin_url
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{DEV_PASSWORD}'")
        connection.execute(f"CREATE DATABASE {name} OWNER {name}")
    url = replace_database(admin, name, user=name, password=DEV_PASSWORD)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE items (id serial PRIMARY KEY, name text UNIQUE)")
        connection.execute("INSERT INTO items (name) VALUES ('dev-1'), ('dev-2')")
    monkeypatch.setenv("DATABASE_URL", url)
    (neon_project.path / "dev_url.txt").write_text(url)
    before = _fingerprint(admin, name)
    yield url
    assert _fingerprint(admin, name) == before, "the development database changed"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE {name} WITH (FORCE)")
        connection.execute(f"DROP ROLE {name}")


def _write_app(neon_project: NeonProject) -> None:
    neon_project.pytester.makepyfile(app_settings=APP_SETTINGS, app_db=APP_DB)
    neon_project.pytester.makeconftest(CONFTEST)


@pytest.mark.parametrize("workers", [None, "2"])
def test_app_engines_fixtures_and_drivers_never_reach_the_development_database(
    neon_project: NeonProject, dev_database: str, workers: str | None
) -> None:
    neon_project.write_alembic("connect")
    _write_app(neon_project)
    neon_project.pytester.makepyfile(test_reach=TESTS)

    result = neon_project.run(*(["-n", workers] if workers else []))

    result.assert_outcomes(passed=5)
    assert DEV_PASSWORD not in neon_project.output(result)
    neon_project.assert_nothing_left()


ENV_PY_FROM_SETTINGS = """\
import sqlalchemy as sa
from alembic import context

import app_settings  # imported by conftest.py first: it holds the sandbox

engine = sa.create_engine(app_settings.DATABASE_URL, poolclass=sa.pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
"""
# Reads the development URL from a file of its own (a .env file, alembic.ini's sqlalchemy.url).
ENV_PY_FROM_A_FILE = ENV_PY_FROM_SETTINGS.replace(
    "app_settings.DATABASE_URL",
    'open("dev_url.txt").read().strip().replace("postgresql://", "postgresql+psycopg://")',
)


@pytest.mark.parametrize("checks", [False, True])
def test_env_py_ignoring_the_connection_is_stopped_before_it_connects(
    neon_project: NeonProject, dev_database: str, checks: bool
) -> None:
    neon_project.write_alembic("connect")
    (neon_project.path / "migrations" / "env.py").write_text(ENV_PY_FROM_A_FILE)
    _write_app(neon_project)
    neon_project.pytester.makepyfile(
        test_one="def test_needs_the_database(neon_branch_isolated):\n    pass\n"
    )

    result = neon_project.run(*(["--neon-alembic-checks"] if checks else []))

    output = neon_project.output(result)
    assert DEV_PASSWORD not in output
    assert "env.py" in output and 'config.attributes.get("connection", None)' in output
    assert "this test run did" in output  # ... not create
    if checks:  # each check that migrates fails with the same explanation
        assert "FAILED alembic.ini::test_upgrade" in output
    assert result.ret != 0
    neon_project.assert_nothing_left()


def test_env_py_using_the_apps_sandbox_engine_migrates_the_right_branch(
    neon_project: NeonProject, dev_database: str
) -> None:
    """An env.py that ignores the injected connection but uses the app's settings (the
    sandbox, captured at import) follows the migration branch, and the checks' branches."""
    neon_project.write_alembic("connect")
    (neon_project.path / "migrations" / "env.py").write_text(ENV_PY_FROM_SETTINGS)
    _write_app(neon_project)
    neon_project.pytester.makepyfile(
        test_one="""
        import sqlalchemy as sa

        import app_db


        def test_migrated(neon_branch_isolated):
            with app_db.engine.connect() as connection:
                assert connection.execute(sa.text("SELECT count(*) FROM items")).scalar() == 1
        """
    )

    # (no target_metadata in this env.py: the model/DDL check does not apply)
    result = neon_project.run("--neon-alembic-checks", "-k", "not model_definitions")

    result.assert_outcomes(passed=4, deselected=1)  # three checks and the test
    assert DEV_PASSWORD not in neon_project.output(result)
    neon_project.assert_nothing_left()


def test_connection_variables_outside_and_inside_tests(
    neon_project: NeonProject, dev_database: str
) -> None:
    """The sandbox from the earliest hook (conftest import), every --neon-env-var name;
    the branch during a test; the sandbox again after it."""
    neon_project.write_alembic("connect")
    neon_project.pytester.makeconftest(
        textwrap.dedent(
            """
            import os

            AT_IMPORT = {n: os.environ.get(n) for n in ("DATABASE_URL", "OTHER_URL")}
            """
        )
    )
    neon_project.pytester.makepyfile(
        test_vars=f"""
        import os

        from conftest import AT_IMPORT

        def test_1_import_time():
            assert all("{SANDBOX_HOST}" in v for v in AT_IMPORT.values()), AT_IMPORT

        def test_2_in_a_test(neon_branch_dirty):
            assert os.environ["DATABASE_URL"] == neon_branch_dirty.connection_string
            assert os.environ["OTHER_URL"] == neon_branch_dirty.connection_string

        def test_3_no_branch():
            assert "{SANDBOX_HOST}" in os.environ["DATABASE_URL"]
        """
    )
    result = neon_project.run("--neon-env-var", "DATABASE_URL OTHER_URL")
    result.assert_outcomes(passed=3)
