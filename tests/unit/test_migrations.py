"""migrations.AlembicProject: real Alembic projects upgraded on fresh databases of the server."""

from __future__ import annotations

import textwrap
from pathlib import Path

import psycopg
import pytest

from pytest_neon_alembic.errors import MigrationError
from pytest_neon_alembic.migrations import (
    ENV_PY_SNIPPET,
    AlembicProject,
    find_alembic_ini,
    server_fingerprint,
)
from pytest_neon_alembic.urls import sqlalchemy_url

# env.py in the shape of pytest-alembic's snippet: the injected object is used like an Engine.
ENV_CONNECT = """\
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_migrations_online():
    connectable = config.attributes.get("connection", None)
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section), prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
"""

# env.py that uses the injected object as a Connection and commits on it itself.
ENV_DIRECT = """\
from alembic import context

config = context.config
connection = config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
connection.commit()
"""

# env.py that ignores the injected connection and migrates another database.
ENV_IGNORES_INJECTION = """\
from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

REVISION = '''\
"""{doc}

Revision ID: {rev}
"""
from alembic import op
import sqlalchemy as sa

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{upgrade}


def downgrade():
    pass
'''

CREATE_WIDGETS = (
    "a1000000000a",
    None,
    "create widgets",
    'op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True), '
    'sa.Column("name", sa.Text))',
)
ADD_GADGETS = (
    "b2000000000b",
    "a1000000000a",
    "add gadgets",
    'op.execute("CREATE TABLE gadgets (id serial PRIMARY KEY)")\n'
    "op.execute(\"INSERT INTO widgets (name) VALUES ('first')\")",
)
BROKEN = (
    "c3000000000c",
    "b2000000000b",
    "break things on purpose",
    'op.execute("INSERT INTO no_such_table VALUES (1)")',
)


def write_project(
    root: Path,
    *,
    env: str = ENV_CONNECT,
    revisions: tuple[tuple, ...] = (CREATE_WIDGETS, ADD_GADGETS),
    script_location: str | None = "%(here)s/migrations",
    folder: str = "migrations",
    extra_ini: str = "",
) -> Path:
    """An alembic.ini plus a migrations folder (env.py, versions/) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    scripts = root / folder
    (scripts / "versions").mkdir(parents=True, exist_ok=True)
    (scripts / "env.py").write_text(env)
    (scripts / "script.py.mako").write_text("# unused\n")
    for index, (rev, down, doc, upgrade) in enumerate(revisions):
        (scripts / "versions" / f"{index:03d}_{rev}.py").write_text(
            REVISION.format(rev=rev, down=down, doc=doc, upgrade=textwrap.indent(upgrade, "    "))
        )
    lines = ["[alembic]"]
    if script_location is not None:
        lines.append(f"script_location = {script_location}")
    lines.append("sqlalchemy.url = postgresql+psycopg://nobody@127.0.0.1:1/never_used")
    ini = root / "alembic.ini"
    ini.write_text("\n".join(lines) + "\n" + extra_ini)
    return ini


def version_of(url: str) -> list[str]:
    with psycopg.connect(url) as connection:
        exists = connection.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        if not exists[0]:
            return []
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


def tables_of(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


# -- both env.py shapes reach head -----------------------------------------------------------------


@pytest.mark.parametrize("env", [ENV_CONNECT, ENV_DIRECT], ids=["connect", "direct"])
def test_upgrade_reaches_head(tmp_path: Path, fresh_database: str, env: str) -> None:
    project = AlembicProject(write_project(tmp_path, env=env))

    project.upgrade(fresh_database)

    assert version_of(fresh_database) == ["b2000000000b"]
    assert tables_of(fresh_database) == {"alembic_version", "widgets", "gadgets"}
    with psycopg.connect(fresh_database) as connection:  # committed, visible to others
        assert connection.execute("SELECT name FROM widgets").fetchall() == [("first",)]


def test_upgrade_of_an_already_migrated_database_is_a_no_op(
    tmp_path: Path, fresh_database: str
) -> None:
    project = AlembicProject(write_project(tmp_path))
    project.upgrade(fresh_database)
    project.upgrade(fresh_database)
    assert version_of(fresh_database) == ["b2000000000b"]


def test_upgrade_accepts_a_sqlalchemy_style_url(tmp_path: Path, fresh_database: str) -> None:
    assert sqlalchemy_url(fresh_database).startswith("postgresql+psycopg://")
    project = AlembicProject(write_project(tmp_path))
    project.upgrade(sqlalchemy_url(fresh_database))
    assert version_of(fresh_database) == ["b2000000000b"]


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", [ENV_CONNECT, ENV_DIRECT], ids=["connect", "direct"])
def test_failing_revision_names_revision_message_and_database_error(
    tmp_path: Path, fresh_database: str, env: str
) -> None:
    project = AlembicProject(
        write_project(tmp_path, env=env, revisions=(CREATE_WIDGETS, ADD_GADGETS, BROKEN))
    )

    with pytest.raises(MigrationError) as caught:
        project.upgrade(fresh_database)

    message = str(caught.value)
    assert "c3000000000c" in message
    assert "break things on purpose" in message
    assert "no_such_table" in message
    assert "does not exist" in message  # PostgreSQL's own words
    assert "a1000000000a" not in message  # not the revisions that worked
    # The whole upgrade was one transaction: nothing of it is left.
    assert version_of(fresh_database) == []
    assert tables_of(fresh_database) == set()


def test_failing_revision_error_masks_passwords(tmp_path: Path, fresh_database: str) -> None:
    leaky = (
        "d4000000000d",
        None,
        "leaks a url",
        "raise RuntimeError('cannot reach postgresql://admin:TopSecret99@db:5432/x')",
    )
    project = AlembicProject(write_project(tmp_path, revisions=(leaky,)))
    with pytest.raises(MigrationError) as caught:
        project.upgrade(fresh_database)
    message = str(caught.value)
    assert "d4000000000d" in message
    assert "leaks a url" in message
    assert "TopSecret99" not in message
    assert "admin:***@db:5432" in message


def test_env_py_ignoring_the_injected_connection_is_explained(
    tmp_path: Path, fresh_database: str
) -> None:
    other = tmp_path / "other.db"
    ini = write_project(
        tmp_path,
        env=ENV_IGNORES_INJECTION,
        revisions=(CREATE_WIDGETS,),
        extra_ini="",
    )
    ini.write_text(
        ini.read_text().replace(
            "postgresql+psycopg://nobody@127.0.0.1:1/never_used", f"sqlite:///{other}"
        )
    )
    project = AlembicProject(ini)

    with pytest.raises(MigrationError) as caught:
        project.upgrade(fresh_database)

    message = str(caught.value)
    assert "inject" in message
    assert ENV_PY_SNIPPET in message
    assert str(tmp_path / "migrations" / "env.py") in message
    assert other.exists()  # env.py really migrated the other database
    assert version_of(fresh_database) == []


def test_missing_script_location_defaults_to_migrations_as_in_pytest_alembic(
    tmp_path: Path, fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = AlembicProject(write_project(tmp_path / "app", script_location=None))
    monkeypatch.chdir(tmp_path)  # read beside the ini, whatever the working directory
    project.upgrade(fresh_database)
    assert version_of(fresh_database) == ["b2000000000b"]
    assert project.config().get_main_option("script_location") == str(
        tmp_path / "app" / "migrations"
    )


def test_flask_migrate_layout_is_found_and_upgraded(tmp_path: Path, fresh_database: str) -> None:
    """`flask db init`: migrations/alembic.ini without script_location, env.py beside it."""
    write_project(tmp_path, script_location=None)
    ini = tmp_path / "migrations" / "alembic.ini"
    (tmp_path / "alembic.ini").rename(ini)
    assert find_alembic_ini(tmp_path) == ini
    AlembicProject(ini).upgrade(fresh_database)
    assert version_of(fresh_database) == ["b2000000000b"]


def test_rootdir_alembic_ini_wins_over_flask_migrate_layout(tmp_path: Path) -> None:
    ini = write_project(tmp_path)
    (tmp_path / "migrations" / "alembic.ini").write_text("[alembic]\n")
    assert find_alembic_ini(tmp_path) == ini
    assert find_alembic_ini(tmp_path / "migrations" / "versions") is None


def test_missing_script_location_without_migrations_folder_is_explained(
    tmp_path: Path, fresh_database: str
) -> None:
    ini = write_project(tmp_path, script_location=None, folder="elsewhere")
    with pytest.raises(MigrationError) as caught:
        AlembicProject(ini).upgrade(fresh_database)
    message = str(caught.value)
    assert "'migrations'" in message and "env.py" in message and "script_location" in message


def test_script_location_without_env_py_is_a_migration_error(
    tmp_path: Path, fresh_database: str
) -> None:
    ini = write_project(tmp_path, script_location="%(here)s/nowhere")
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(MigrationError) as caught:
        AlembicProject(ini).upgrade(fresh_database)
    message = str(caught.value)
    assert "env.py" in message
    assert str(tmp_path / "nowhere") in message


def test_missing_alembic_ini_is_a_migration_error(tmp_path: Path, fresh_database: str) -> None:
    missing = tmp_path / "alembic.ini"
    with pytest.raises(MigrationError, match="does not exist"):
        AlembicProject(missing).upgrade(fresh_database)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("script_location = migrations\n[alembic\n", id="no-section-header"),
        pytest.param("[alembic]\nscript_location = %(nope)s/migrations\n", id="interpolation"),
        pytest.param("[something_else]\nkey = value\n", id="no-alembic-section"),
    ],
)
def test_malformed_alembic_ini_is_a_migration_error(
    tmp_path: Path, fresh_database: str, content: str
) -> None:
    ini = write_project(tmp_path)
    ini.write_text(content)
    with pytest.raises(MigrationError) as caught:
        AlembicProject(ini).upgrade(fresh_database)
    assert str(ini) in str(caught.value)


# -- where script_location is read from ------------------------------------------------------------


def test_relative_script_location_is_read_from_the_ini_dir(
    tmp_path: Path, fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = write_project(tmp_path / "project", script_location="migrations")
    # The working directory has a `migrations` folder too, whose env.py must not run.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "migrations" / "versions").mkdir(parents=True)
    (elsewhere / "migrations" / "env.py").write_text("raise SystemExit('wrong env.py ran')\n")
    monkeypatch.chdir(elsewhere)

    AlembicProject(ini).upgrade(fresh_database)

    assert version_of(fresh_database) == ["b2000000000b"]


def test_relative_script_location_works_from_an_unrelated_directory(
    tmp_path: Path, fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = write_project(
        tmp_path / "project", script_location="db/migrations", folder="db/migrations"
    )
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    monkeypatch.chdir(unrelated)

    project = AlembicProject(ini)
    assert Path(project.config().get_main_option("script_location")) == (
        tmp_path / "project" / "db" / "migrations"
    )
    project.upgrade(fresh_database)
    assert version_of(fresh_database) == ["b2000000000b"]


def test_here_script_location_works(
    tmp_path: Path, fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = write_project(tmp_path / "project", script_location="%(here)s/migrations")
    monkeypatch.chdir(tmp_path)
    AlembicProject(ini).upgrade(fresh_database)
    assert version_of(fresh_database) == ["b2000000000b"]


def test_script_location_in_a_folder_with_a_percent_sign(
    tmp_path: Path, fresh_database: str
) -> None:
    ini = write_project(tmp_path / "100%", script_location="migrations")
    AlembicProject(ini).upgrade(fresh_database)
    assert version_of(fresh_database) == ["b2000000000b"]


# -- the cache key: everything that decides the migrated state -----------------------------------


def test_cache_key_covers_version_locations_outside_the_script_location(tmp_path: Path) -> None:
    extra = tmp_path / "more_versions"
    extra.mkdir()
    (extra / "x1.py").write_text("revision = 'x1'\ndown_revision = 'b2000000000b'\n")
    ini = write_project(
        tmp_path / "p",
        extra_ini="path_separator = space\n"
        f"version_locations = %(here)s/migrations/versions {extra}\n",
    )
    project = AlembicProject(ini)
    before = project.cache_key()
    (extra / "x1.py").write_text("revision = 'x1'\ndown_revision = 'b2000000000b'\n# changed\n")
    assert project.cache_key() != before


def test_cache_key_follows_a_symlinked_versions_directory(tmp_path: Path) -> None:
    ini = write_project(tmp_path / "p")
    shared = tmp_path / "shared_versions"
    (tmp_path / "p" / "migrations" / "versions").rename(shared)
    (tmp_path / "p" / "migrations" / "versions").symlink_to(shared, target_is_directory=True)
    (shared / "loop").symlink_to(shared, target_is_directory=True)  # a cycle is read once
    project = AlembicProject(ini)
    before = project.cache_key()
    revision = next(shared.glob("001_*.py"))
    revision.write_text(revision.read_text() + "\n# edited through the symlink\n")
    assert project.cache_key() != before


def test_cache_key_covers_the_parent_and_the_server(tmp_path: Path, admin_url: str) -> None:
    project = AlembicProject(write_project(tmp_path / "p"))
    fingerprint = server_fingerprint(admin_url)
    assert fingerprint.startswith("18") and "vector=" in fingerprint and "citext=" in fingerprint
    keys = {
        project.cache_key(),
        project.cache_key(parent="template1", server=fingerprint),
        project.cache_key(parent="my_parent", server=fingerprint),
        project.cache_key(parent="template1", server=fingerprint.replace("18", "17", 1)),
        project.cache_key(parent="template1", server=fingerprint + ",postgis=3.5"),
    }
    assert len(keys) == 5
    assert project.cache_key(parent="template1", server=fingerprint) in keys  # stable


def test_sys_exit_in_env_py_is_one_migration_error(tmp_path: Path, fresh_database: str) -> None:
    project = AlembicProject(write_project(tmp_path / "p", env="import sys\nsys.exit(3)\n"))
    with pytest.raises(MigrationError) as info:
        project.upgrade(fresh_database)
    assert "sys.exit(3)" in str(info.value)
