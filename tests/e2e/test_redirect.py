"""The app's own objects follow the test's branch, with no glue code.

One inner project has every kind of app object — engines built from
``DATABASE_URL`` at import with psycopg, psycopg2, asyncpg and psycopg async, a
``sessionmaker``, a ``scoped_session``, an ``async_sessionmaker``, a
Flask-SQLAlchemy ``db`` set up by a session fixture during the first test, and
objects built from a hard-coded URL named in ini ``neon_engines`` /
``neon_sessions`` / ``neon_sessionmakers``. For each, a test writes through it
and checks it talks to the branch it asked for; the next test finds the write
gone. Serially and with ``-n 2``; after the session every object points at
its original URL again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import NeonProject

HARD_CODED = "postgresql+psycopg://nobody:nothing@127.0.0.1:1/hard_coded"

APP = f"""\
import os

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import scoped_session, sessionmaker

URL = os.environ["DATABASE_URL"]  # the sandbox, at import


def with_driver(driver):
    return URL.replace("postgresql://", f"postgresql+{{driver}}://", 1)


engine = sa.create_engine(with_driver("psycopg"))
engine_psycopg2 = sa.create_engine(with_driver("psycopg2"))
SessionLocal = sessionmaker(engine)
ScopedSession = scoped_session(sessionmaker(engine_psycopg2))
async_engine = create_async_engine(with_driver("asyncpg"))
async_engine_psycopg = create_async_engine(with_driver("psycopg"))
AsyncSessionLocal = async_sessionmaker(async_engine_psycopg)

# Built from somewhere else than DATABASE_URL: named in the ini file.
settings_engine = sa.create_engine({HARD_CODED!r})
SettingsSession = sessionmaker(sa.create_engine({HARD_CODED!r}))
settings_session = SettingsSession()
settings_scoped = scoped_session(sessionmaker(sa.create_engine({HARD_CODED!r})))

db = SQLAlchemy()


def create_flask_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    db.init_app(app)
    return app
"""

CONFTEST = """\
import json
import os

import pytest

import app


@pytest.fixture(scope="session")
def flask_app():
    # Set up during the first test that uses it, with no branch of its own.
    flask_app = app.create_flask_app()
    with flask_app.app_context():
        yield flask_app


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    # After the plugin: every object as it was before the session.
    named = [app.settings_engine, app.SettingsSession.kw["bind"], app.settings_session.bind]
    refused = []
    for engine in named:
        try:
            engine.connect()
        except Exception as error:
            refused.append(str(error))
    with open(os.path.join(str(config.rootpath), "after.json"), "w") as out:
        json.dump(
            {
                "urls": [str(e.url) for e in (app.engine, *named)],
                "refused": refused,
                "database_url": os.environ.get("DATABASE_URL"),
            },
            out,
        )
"""

# (kind, how to write one row, how to read (current_database(), count))
SYNC_KINDS = {
    "engine_psycopg": (
        "with app.engine.begin() as c: c.execute(INSERT)",
        "with app.engine.connect() as c: return c.execute(READ).one()",
    ),
    "engine_psycopg2": (
        "with app.engine_psycopg2.begin() as c: c.execute(INSERT)",
        "with app.engine_psycopg2.connect() as c: return c.execute(READ).one()",
    ),
    "sessionmaker": (
        "with app.SessionLocal() as s: s.execute(INSERT); s.commit()",
        "with app.SessionLocal() as s: return s.execute(READ).one()",
    ),
    "scoped_session": (
        "app.ScopedSession.execute(INSERT); app.ScopedSession.commit(); app.ScopedSession.remove()",
        "row = app.ScopedSession.execute(READ).one(); app.ScopedSession.remove(); return row",
    ),
    "named_engine": (
        "with app.settings_engine.begin() as c: c.execute(INSERT)",
        "with app.settings_engine.connect() as c: return c.execute(READ).one()",
    ),
    "named_sessionmaker": (
        "with app.SettingsSession() as s: s.execute(INSERT); s.commit()",
        "with app.SettingsSession() as s: return s.execute(READ).one()",
    ),
    "named_session": (
        "app.settings_session.execute(INSERT); app.settings_session.commit()",
        "row = app.settings_session.execute(READ).one(); app.settings_session.commit(); return row",
    ),
    "named_scoped_session": (
        "app.settings_scoped.execute(INSERT); app.settings_scoped.commit()",
        "row = app.settings_scoped.execute(READ).one(); app.settings_scoped.remove(); return row",
    ),
    "flask_sqlalchemy": (
        "app.db.session.execute(INSERT); app.db.session.commit()",
        "row = app.db.session.execute(READ).one(); app.db.session.remove(); return row",
    ),
}
ASYNC_KINDS = {
    "async_engine_asyncpg": "app.async_engine",
    "async_sessionmaker_psycopg": "app.AsyncSessionLocal",
}


HEADER = [
    "import pytest",
    "import sqlalchemy as sa",
    "from sqlalchemy.ext.asyncio import AsyncEngine",
    "",
    "import app",
    "",
    "INSERT = sa.text(\"INSERT INTO items (name) VALUES ('written')\")",
    "READ = sa.text('SELECT current_database(), (SELECT count(*) FROM items)')",
    "",
]


def _sync_module() -> str:
    lines = list(HEADER)
    for kind, (write, read) in SYNC_KINDS.items():
        fixture = ", flask_app" if kind == "flask_sqlalchemy" else ""
        lines += [
            f"def read_{kind}():",
            f"    {read}",
            "",
            f"def test_{kind}_1_writes(neon_branch_isolated{fixture}):",
            f"    {write}",
            f"    assert tuple(read_{kind}()) == (neon_branch_isolated.branch_id, 2)",
            "",
            "@pytest.mark.neon",
            f"def test_{kind}_2_write_is_gone(neon_branch_isolated{fixture}):",
            f"    assert tuple(read_{kind}()) == (neon_branch_isolated.branch_id, 1)",
            "",
            '@pytest.mark.neon("readonly")',
            f"def test_{kind}_3_reads_the_readonly_branch(neon_branch_readonly{fixture}):",
            f"    assert tuple(read_{kind}()) == (neon_branch_readonly.branch_id, 1)",
            "",
        ]
    return "\n".join(lines)


def _async_module() -> str:
    lines = [
        *HEADER,
        "async def write(target):",
        "    if isinstance(target, AsyncEngine):",
        "        async with target.begin() as c:",
        "            await c.execute(INSERT)",
        "    else:",
        "        async with target() as s:",
        "            await s.execute(INSERT)",
        "            await s.commit()",
        "",
        "async def read(target):",
        "    if isinstance(target, AsyncEngine):",
        "        async with target.connect() as c:",
        "            return tuple((await c.execute(READ)).one())",
        "    async with target() as s:",
        "        return tuple((await s.execute(READ)).one())",
        "",
    ]
    for kind, target in ASYNC_KINDS.items():
        lines += [
            "@pytest.mark.asyncio",
            f"async def test_{kind}_1_writes(neon_branch_isolated):",
            f"    await write({target})",
            f"    assert await read({target}) == (neon_branch_isolated.branch_id, 2)",
            "",
            "@pytest.mark.asyncio",
            f"async def test_{kind}_2_write_is_gone(neon_branch_isolated):",
            f"    assert await read({target}) == (neon_branch_isolated.branch_id, 1)",
            "",
            "@pytest.mark.asyncio",
            f"async def test_{kind}_3_reads_the_dirty_branch(neon_branch_dirty):",
            f"    assert (await read({target}))[0] == neon_branch_dirty.branch_id",
            "",
        ]
    return "\n".join(lines)


def _write_project(neon_project: NeonProject) -> None:
    neon_project.write_alembic("connect")
    neon_project.pytester.makepyfile(app=APP, test_sync=_sync_module(), test_async=_async_module())
    neon_project.pytester.makeconftest(CONFTEST)
    neon_project.pytester.makeini(
        """
        [pytest]
        asyncio_default_fixture_loop_scope = function
        neon_engines = app:settings_engine
        neon_sessionmakers = app.SettingsSession
        neon_sessions = app:settings_session app:settings_scoped
        """
    )


@pytest.mark.parametrize("workers", [None, "2"])
def test_every_kind_of_app_object_follows_the_test(
    neon_project: NeonProject, workers: str | None
) -> None:
    _write_project(neon_project)

    result = neon_project.run(*(["-n", workers, "--dist", "loadfile"] if workers else []))

    expected = 3 * (len(SYNC_KINDS) + len(ASYNC_KINDS))
    result.assert_outcomes(passed=expected)
    after = json.loads((neon_project.path / "after.json").read_text())
    assert after["database_url"] == "sentinel"  # the user's value
    assert after["urls"][0].startswith("postgresql+psycopg://pytest_neon_sandbox:***@sandbox")
    assert all(
        url.startswith("postgresql+psycopg://nobody:***@127.0.0.1:1/") for url in after["urls"][1:]
    )
    # The named engines reach for their own URL again (nothing listens on port 1).
    assert len(after["refused"]) == 3
    assert all("127.0.0.1" in error and "port 1 " in error for error in after["refused"])
    neon_project.assert_nothing_left()


def test_transaction_strategy_covers_the_apps_sessions(neon_project: NeonProject) -> None:
    """The app's sessions commit and roll back inside the test's outer transaction:
    nothing persists; only the sequence the rolled-back inserts moved is set back
    (in place: no new database, no connection ended)."""
    neon_project.write_alembic("connect")
    neon_project.pytester.makepyfile(
        app=APP,
        test_tx="""
        import pytest
        import sqlalchemy as sa

        import app

        COUNT = sa.text("SELECT count(*) FROM items")


        def test_1_app_commits_and_rolls_back(neon_session):
            with app.SessionLocal() as s:
                s.execute(sa.text("INSERT INTO items (name) VALUES ('kept')"))
                s.commit()
                s.execute(sa.text("INSERT INTO items (name) VALUES ('rolled back')"))
                s.rollback()
            with app.engine.begin() as c:
                c.execute(sa.text("INSERT INTO items (name) VALUES ('engine')"))
            # The test's own session sees the app's commits: one transaction.
            assert neon_session.execute(COUNT).scalar() == 3


        @pytest.mark.neon
        def test_2_nothing_persisted():
            with app.engine.connect() as c:
                assert c.execute(COUNT).scalar() == 1
        """,
    )
    result = neon_project.run("--neon-reset=transaction")
    result.assert_outcomes(passed=2)
    summary = neon_project.summary(result)
    assert (summary.resets, summary.clean) == (1, 1), summary.line("resets:")
    assert ", 1 in place" in summary.line("resets:")


def test_app_object_without_a_branch_is_one_clear_error(neon_project: NeonProject) -> None:
    neon_project.write_alembic("connect")
    neon_project.pytester.makepyfile(
        app=APP,
        test_none="""
        import app


        def test_forgot_the_branch():
            with app.engine.connect():
                pass
        """,
    )
    result = neon_project.run()
    result.assert_outcomes(failed=1)
    output = neon_project.output(result)
    assert "asked for no database branch" in output
    assert "@pytest.mark.neon" in output and "neon_branch_isolated" in output


def test_bad_named_object_fails_the_session_once(neon_project: NeonProject) -> None:
    neon_project.write_alembic("connect")
    neon_project.pytester.makepyfile(app=APP, test_one="def test_one():\n    pass\n")
    neon_project.pytester.makeini("[pytest]\nneon_engines = app:SessionLocal app:missing\n")
    result = neon_project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    error = result.stderr.str()
    assert "neon_engines names 'app:SessionLocal', a sessionmaker" in error
    assert error.count("pytest-neon-alembic:") == 1


PYTEST_NEON_3_CONFTEST = """\
import psycopg
import pytest


@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_test_branch):  # pytest-neon 3.x's override, unchanged
    branch, is_creator = _neon_test_branch
    if is_creator:
        with psycopg.connect(branch.connection_string) as connection:
            connection.execute("CREATE TABLE users (name text)")


@pytest.fixture(scope="session")
def users(BRANCH):
    with psycopg.connect(BRANCH.connection_string) as connection:
        connection.execute("INSERT INTO users VALUES ('ada')")
    return BRANCH
"""


@pytest.mark.parametrize("branch", ["neon_branch", "neon_branch_dirty"])
def test_pytest_neon_3_users_migration_path(neon_project: NeonProject, branch: str) -> None:
    """pytest-neon 3.x's session-long ``neon_branch`` is ``neon_branch_dirty`` here: asking
    for ``neon_branch`` from a session fixture is one clear error saying so; with the
    one-word change the suite passes, its ``neon_apply_migrations`` override unchanged."""
    neon_project.pytester.makeconftest(PYTEST_NEON_3_CONFTEST.replace("BRANCH", branch))
    neon_project.pytester.makepyfile(
        test_users="""
        import psycopg

        from pytest_neon_alembic import NeonBranch  # was: from pytest_neon import NeonBranch


        def test_users(users: NeonBranch):
            with psycopg.connect(users.connection_string) as connection:
                assert connection.execute("SELECT name FROM users").fetchall() == [("ada",)]
        """
    )
    result = neon_project.run()
    if branch == "neon_branch":
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert "replace neon_branch with neon_branch_dirty in 'users'" in result.stderr.str()
    else:
        result.assert_outcomes(passed=1)


def test_transaction_strategy_with_other_drivers_resets_instead(neon_project: NeonProject) -> None:
    """psycopg2 and async engines commit for real under the transaction strategy; the
    branch is reset after the test, so the next test still starts clean."""
    neon_project.write_alembic("connect")
    neon_project.pytester.makepyfile(
        app=APP,
        test_tx="""
        import pytest
        import sqlalchemy as sa

        import app

        COUNT = sa.text("SELECT count(*) FROM items")


        @pytest.mark.neon(reset="transaction")
        def test_1_psycopg2_commits():
            with app.engine_psycopg2.begin() as c:
                c.execute(sa.text("INSERT INTO items (name) VALUES ('psycopg2')"))


        @pytest.mark.asyncio
        @pytest.mark.neon(reset="transaction")
        async def test_2_async_commits():
            async with app.async_engine.begin() as c:
                await c.execute(sa.text("INSERT INTO items (name) VALUES ('asyncpg')"))


        @pytest.mark.neon
        def test_3_clean_again():
            with app.engine_psycopg2.connect() as c:
                assert c.execute(COUNT).scalar() == 1
        """,
    )
    result = neon_project.run("-o", "asyncio_default_fixture_loop_scope=function")
    result.assert_outcomes(passed=3)
    summary = neon_project.summary(result)
    assert (summary.resets, summary.clean) == (2, 1), summary.line("resets:")


def test_marker_module_marker_ini_default_and_async_fixtures(neon_project: NeonProject) -> None:
    """Which branch a test gets without a fixture argument: ``@pytest.mark.neon`` (isolated),
    ``pytestmark`` for a module, ini ``neon_default_branch`` for the rest; and the async
    fixtures under per-test and per-module loops, with both reset strategies."""
    neon_project.write_alembic("connect")
    neon_project.pytester.makeini(
        "[pytest]\nneon_default_branch = readonly\nasyncio_default_fixture_loop_scope = function\n"
    )
    where = "SELECT current_database()"
    neon_project.pytester.makepyfile(
        app=APP,
        test_a_default=f"""
        import os

        import pytest
        import sqlalchemy as sa

        import app


        def test_ini_default_is_readonly():
            with app.engine.connect() as c:
                assert c.execute(sa.text("{where}")).scalar().endswith("_readonly")
            assert os.environ["DATABASE_URL"].endswith("_readonly")


        @pytest.mark.neon
        def test_bare_marker_is_isolated():
            with app.engine.connect() as c:
                assert c.execute(sa.text("{where}")).scalar().endswith("_isolated_main")
        """,
        test_b_module=f"""
        import pytest
        import sqlalchemy as sa

        import app

        pytestmark = pytest.mark.neon("dirty")


        def test_module_marker_is_dirty():
            with app.engine.connect() as c:
                assert c.execute(sa.text("{where}")).scalar().endswith("_dirty")
        """,
        test_c_async="""
        import pytest
        import sqlalchemy as sa

        INSERT = sa.text("INSERT INTO items (name) VALUES ('async')")
        COUNT = sa.text("SELECT count(*) FROM items")


        @pytest.mark.asyncio
        async def test_1_engine_per_test_loop(neon_async_engine):
            async with neon_async_engine.begin() as c:
                await c.execute(INSERT)


        @pytest.mark.asyncio
        @pytest.mark.neon(reset="transaction")
        async def test_2_session_transaction_strategy(neon_async_session):
            assert await neon_async_session.scalar(COUNT) == 1
            await neon_async_session.execute(INSERT)
            await neon_async_session.commit()


        @pytest.mark.asyncio(loop_scope="module")
        async def test_3_module_loop(neon_async_session):
            assert await neon_async_session.scalar(COUNT) == 1


        @pytest.mark.asyncio(loop_scope="module")
        async def test_4_module_loop_again(neon_async_engine):
            async with neon_async_engine.connect() as c:
                assert await c.scalar(COUNT) == 1
        """,
    )
    result = neon_project.run()
    result.assert_outcomes(passed=7)
    summary = neon_project.summary(result)
    assert summary.resets == 2, summary.line("resets:")  # the two async tests that wrote


def test_marker_with_an_unknown_branch_is_one_clear_error(neon_project: NeonProject) -> None:
    neon_project.write_alembic("connect")
    neon_project.pytester.makepyfile(
        test_typo="""
        import pytest


        @pytest.mark.neon("readnoly")
        def test_typo():
            pass
        """
    )
    result = neon_project.run()
    result.assert_outcomes(errors=1)
    assert "@pytest.mark.neon('readnoly') is not understood" in neon_project.output(result)
