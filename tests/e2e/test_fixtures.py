"""The fixture contract, each check in real inner pytest sessions on the embedded server."""

from __future__ import annotations

import json
import re
import textwrap
from collections import defaultdict
from typing import TYPE_CHECKING

import psycopg
import pytest

if TYPE_CHECKING:
    from conftest import NeonProject


def _ids(project: NeonProject) -> dict[str, set[str]]:
    ids: dict[str, set[str]] = defaultdict(set)
    for line in (project.path / "shared_ids.txt").read_text().splitlines():
        kind, _worker, branch_id = line.split()
        ids[kind].add(branch_id)
    return ids


def test_fixture_contract(neon_project: NeonProject) -> None:
    """Read-only, isolated, dirty, shared, aliases, engines and DATABASE_URL in one session.

    The inner modules are in tests/e2e/contract/; the migrations use the
    "connect" env.py shape (pytest-alembic's snippet).
    """
    neon_project.write_alembic("connect")
    neon_project.write_contract_tests()

    result = neon_project.run("-v")
    output = neon_project.output(result)

    # The deprecated aliases requested directly warned, into the warnings summary.
    assert "DeprecationWarning: neon_branch_readwrite is deprecated" in output
    assert "DeprecationWarning: neon_branch is deprecated" in output

    ids = _ids(neon_project)
    # One branch per module: the same within a module, different across modules.
    assert len(ids["shared-one"]) == 1
    assert len(ids["shared-two"]) == 1
    assert ids["shared-one"] != ids["shared-two"]
    assert len(ids["dirty"]) == len(ids["isolated"]) == len(ids["readonly"]) == 1
    all_ids = set().union(*ids.values())
    assert len(all_ids) == 5

    summary = neon_project.summary(result)
    assert re.search(r"^backend: local \(embedded PostgreSQL \d+\.\d+", output, re.M)
    assert re.search(r"^migrations: \d+\.\d+ s", output, re.M)
    # migration, read-only, dirty, isolated, and the shared branches of three modules.
    assert (summary.created, summary.deleted, summary.kept) == (7, 7, 0)
    # 15 tests used the isolated branch; 5 of them wrote (b1, b3, g1, g3, g4).
    assert (summary.resets, summary.clean) == (5, 10), summary.line("resets:")
    neon_project.assert_nothing_left()
    failed = [line for line in result.outlines if line.startswith(("FAILED", "ERROR"))]
    assert failed == []
    result.assert_outcomes(passed=31, warnings=2)


def test_fixture_contract_with_the_transaction_strategy(neon_project: NeonProject) -> None:
    """The same contract holds when every test defaults to reset="transaction"."""
    neon_project.write_alembic("connect")
    neon_project.write_contract_tests()

    result = neon_project.run("--neon-reset=transaction")

    result.assert_outcomes(passed=31, warnings=2)
    summary = neon_project.summary(result)
    # Commits through neon_session are rolled back; other connections' commits still reset.
    assert 1 <= summary.resets <= 5, summary.line("resets:")
    assert summary.resets + summary.clean == 15
    neon_project.assert_nothing_left()


def test_write_detection_transaction_marker_and_env_var_option(neon_project: NeonProject) -> None:
    """Reads cost no reset, writes one; reset="transaction" rolls a commit back, no reset.

    Also: --neon-env-var=OTHER_URL, and the "direct" env.py shape.
    """
    neon_project.write_alembic("direct")
    neon_project.pytester.makepyfile(
        test_counts="""
        import os

        from pytest_neon_alembic.guard import SANDBOX_URL

        import pytest
        import sqlalchemy as sa


        def count(engine):
            with engine.connect() as connection:
                return connection.execute(sa.text("SELECT count(*) FROM items")).scalar()


        def test_1_reads_only(neon_engine, neon_branch_isolated):
            assert os.environ["OTHER_URL"] == neon_branch_isolated.connection_string
            assert os.environ["DATABASE_URL"] == "sentinel"
            assert count(neon_engine) == 1


        def test_2_writes(neon_engine):
            with neon_engine.begin() as connection:
                connection.execute(sa.text("INSERT INTO items (name) VALUES ('written')"))
            assert count(neon_engine) == 2


        @pytest.mark.neon(reset="transaction")
        def test_3_transaction(neon_session, neon_branch_isolated):
            assert os.environ["OTHER_URL"] == neon_branch_isolated.connection_string
            # A rolled-back nextval is put back too: test_4b.
            neon_session.execute(sa.text("INSERT INTO items (id, name) VALUES (99, 'x')"))
            neon_session.commit()
            total = neon_session.execute(sa.text("SELECT count(*) FROM items")).scalar()
            assert total == 2


        def test_4_commit_was_rolled_back(neon_engine):
            assert count(neon_engine) == 1


        @pytest.mark.neon(reset="transaction")
        def test_4b_sequence_moved_in_a_rolled_back_transaction(neon_session):
            neon_session.execute(sa.text("INSERT INTO items (name) VALUES ('nextval')"))


        def test_4c_sequence_is_back(neon_engine):
            with neon_engine.connect() as connection:
                last = connection.execute(sa.text("SELECT last_value FROM items_id_seq"))
                assert last.scalar() == 1


        def test_5_env_var_is_the_sandbox_again():
            assert os.environ["OTHER_URL"] == SANDBOX_URL
            assert os.environ["DATABASE_URL"] == "sentinel"  # not named: not the plugin's
        """
    )

    result = neon_project.run("--neon-env-var=OTHER_URL")
    output = neon_project.output(result)

    result.assert_outcomes(passed=7)
    summary = neon_project.summary(result)
    # Only test_2 wrote; test_3's commit was inside the rolled-back transaction; the
    # sequence that test_4b's rolled-back INSERT advanced was set back. Both in place.
    assert (summary.resets, summary.clean) == (2, 4), summary.line("resets:")
    assert ", 2 in place" in summary.line("resets:")
    assert (summary.created, summary.deleted) == (2, 2)  # migration and isolated
    assert re.search(r"^migrations: \d+\.\d+ s", output, re.M)
    neon_project.assert_nothing_left()


def test_custom_apply_migrations_with_pytest_neon_parameter_name(
    neon_project: NeonProject,
) -> None:
    """pytest-neon 2.x's override (``_neon_migration_branch``), raw SQL, no alembic.ini."""
    neon_project.pytester.makeconftest(
        """
        import os

        import psycopg
        import pytest


        @pytest.fixture(scope="session")
        def neon_apply_migrations(_neon_migration_branch):
            url = os.environ["DATABASE_URL"]
            assert url == _neon_migration_branch.connection_string
            with psycopg.connect(url) as connection:
                connection.execute("CREATE TABLE custom (id int PRIMARY KEY, label text)")
                connection.execute("INSERT INTO custom VALUES (1, 'from-hook')")
            with open("hook_calls.txt", "a") as file:
                file.write(_neon_migration_branch.branch_id + "\\n")
        """
    )
    neon_project.pytester.makepyfile(
        test_custom="""
        import os

        from pytest_neon_alembic.guard import SANDBOX_URL

        import psycopg


        def labels(url):
            with psycopg.connect(url) as connection:
                rows = connection.execute("SELECT label FROM custom ORDER BY id")
                return [row[0] for row in rows]


        def test_1_readonly_sees_hook(neon_branch_readonly):
            assert labels(neon_branch_readonly.connection_string) == ["from-hook"]


        def test_2_isolated_writes(neon_branch_isolated):
            url = neon_branch_isolated.connection_string
            with psycopg.connect(url) as connection:
                connection.execute("INSERT INTO custom VALUES (2, 'written')")
            assert labels(url) == ["from-hook", "written"]


        def test_3_isolated_reset_to_hook_state(neon_branch_isolated, neon_migration_branch):
            assert labels(neon_branch_isolated.connection_string) == ["from-hook"]
            assert neon_migration_branch.branch_id == neon_branch_isolated.parent_id


        def test_4_env_restored_after_hook():
            assert os.environ["DATABASE_URL"] == SANDBOX_URL
        """
    )
    assert not (neon_project.path / "alembic.ini").exists()

    result = neon_project.run()

    result.assert_outcomes(passed=4)
    hook_calls = (neon_project.path / "hook_calls.txt").read_text().splitlines()
    assert len(hook_calls) == 1
    summary = neon_project.summary(result)
    assert re.search(r"^migrations: \d+\.\d+ s", summary.text, re.M)
    neon_project.assert_nothing_left()


def test_no_alembic_config_gives_empty_branches(neon_project: NeonProject) -> None:
    """No alembic.ini and no override: the migration branch is the (empty) parent's state."""
    neon_project.pytester.makepyfile(
        test_empty="""
        import psycopg

        TABLES = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )


        def tables(url):
            with psycopg.connect(url) as connection:
                return sorted(row[0] for row in connection.execute(TABLES))


        def test_1_readonly_is_empty(neon_branch_readonly):
            assert tables(neon_branch_readonly.connection_string) == []


        def test_2_isolated_writes(neon_branch_isolated):
            url = neon_branch_isolated.connection_string
            assert tables(url) == []
            with psycopg.connect(url) as connection:
                connection.execute("CREATE TABLE scratch (x int)")
                connection.execute("INSERT INTO scratch VALUES (1)")
            assert tables(url) == ["scratch"]


        def test_3_isolated_empty_again(neon_branch_isolated):
            assert tables(neon_branch_isolated.connection_string) == []


        def test_4_dirty_works(neon_branch_dirty):
            with psycopg.connect(neon_branch_dirty.connection_string) as connection:
                connection.execute("CREATE TABLE dirty_scratch (x int)")
            assert tables(neon_branch_dirty.connection_string) == ["dirty_scratch"]
        """
    )

    result = neon_project.run()

    result.assert_outcomes(passed=4)
    summary = neon_project.summary(result)
    assert (summary.created, summary.deleted) == (4, 4)
    neon_project.assert_nothing_left()


def test_keep_branches(neon_project: NeonProject) -> None:
    """--neon-keep-branches: every branch of the run is left on the (still running) server."""
    neon_project.write_alembic("connect")
    neon_project.pytester.makepyfile(
        test_keep="""
        import psycopg


        def test_1_isolated(neon_branch_isolated):
            with psycopg.connect(neon_branch_isolated.connection_string) as connection:
                connection.execute("INSERT INTO items (name) VALUES ('kept')")


        def test_2_dirty(neon_branch_dirty, neon_branch_readonly, neon_branch_shared):
            with psycopg.connect(neon_branch_dirty.connection_string) as connection:
                connection.execute("INSERT INTO items (name) VALUES ('kept-dirty')")
        """
    )

    result = neon_project.run("--neon-keep-branches")
    output = neon_project.output(result)

    result.assert_outcomes(passed=2)
    summary = neon_project.summary(result)
    assert "kept (--neon-keep-branches)" in output

    # The run directory and the embedded server are left for inspection.
    runs = neon_project.runs_left()
    assert len(runs) == 1
    assert neon_project.servers_left(), "the embedded server was stopped despite keep-branches"
    prefix = f"pytest_{runs[0].name}_"
    backend = json.loads((runs[0] / "backend.json").read_text())["value"]
    with psycopg.connect(backend["local"]["admin_url"], autocommit=True) as connection:
        databases = {
            row[0]
            for row in connection.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)
            )
        }
        roles = {
            row[0]
            for row in connection.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (prefix + "%",)
            )
        }
        # Clean up ourselves: the kept databases and role (the fixture stops the server).
        for name in databases:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        for name in roles:
            connection.execute(f'DROP ROLE "{name}"')

    suffixes = sorted(name.removeprefix(prefix) for name in databases)
    # The read-only login role, and the NOLOGIN role owning its SECURITY DEFINER functions.
    assert roles == {prefix + "readonly", prefix + "readonly_definer"}
    # migration, isolated, dirty, read-only, shared: all of them kept, none deleted.
    assert (summary.created, summary.deleted, summary.kept) == (5, 0, 5), summary.line("branches:")
    assert len(suffixes) == 5, suffixes
    assert {"migration", "dirty", "readonly"} <= set(suffixes)
    assert any(suffix.startswith("isolated") for suffix in suffixes), suffixes
    assert any(suffix.startswith("shared") for suffix in suffixes), suffixes


def test_real_project_layout_run_from_another_directory(
    neon_project: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest started from a subdirectory, tests in tests/ (with tests/conftest.py).

    alembic.ini is found in the rootdir and its relative script_location is read
    from the ini's folder, not the working directory. env.py builds its own engine
    from DATABASE_URL (a common shape), which must point at the migration branch.
    """
    neon_project.write_alembic("env-url")
    neon_project.pytester.makeini("[pytest]\n")
    tests_dir = neon_project.path / "tests"
    tests_dir.mkdir()
    (tests_dir / "conftest.py").write_text(
        "import pytest\n\n\n@pytest.fixture\ndef answer():\n    return 42\n"
    )
    (tests_dir / "test_layout.py").write_text(
        textwrap.dedent(
            """
            import psycopg


            def test_readonly(neon_branch_readonly, answer):
                with psycopg.connect(neon_branch_readonly.connection_string) as connection:
                    rows = connection.execute("SELECT name FROM items").fetchall()
                    version = connection.execute("SELECT version_num FROM alembic_version")
                    assert version.fetchall() == [("r2",)]
                assert rows == [("seed",)]
                assert answer == 42
            """
        )
    )
    elsewhere = neon_project.path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = neon_project.run(str(neon_project.path))

    result.assert_outcomes(passed=1)
    assert f"rootdir: {neon_project.path}" in neon_project.output(result)
    neon_project.assert_nothing_left()


def test_version_table_configured_in_env_py(neon_project: NeonProject) -> None:
    """env.py passes ``version_table=`` to ``context.configure`` (Alembic's documented way).

    The migration branch is at head, in that table: no "env.py ignored the
    injected connection" error.
    """
    neon_project.write_alembic("connect", configure_args='version_table="app_version"')
    neon_project.pytester.makepyfile(
        test_version_table="""
        import psycopg


        def test_migrated(neon_branch_readonly):
            with psycopg.connect(neon_branch_readonly.connection_string) as connection:
                assert connection.execute("SELECT name FROM items").fetchall() == [("seed",)]
                version = connection.execute("SELECT version_num FROM app_version")
                assert version.fetchall() == [("r2",)]
        """
    )

    result = neon_project.run()

    result.assert_outcomes(passed=1)
    neon_project.assert_nothing_left()


def test_tests_without_database_start_nothing(neon_project: NeonProject) -> None:
    """A session whose tests use no database fixture starts no server and prints no block."""
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(
        test_plain="""
        import os

        from pytest_neon_alembic.guard import SANDBOX_URL


        def test_plain():
            assert os.environ["DATABASE_URL"] == SANDBOX_URL
        """
    )

    result = neon_project.run()

    result.assert_outcomes(passed=1)
    assert "pytest-neon-alembic" not in neon_project.output(result)
    neon_project.assert_nothing_left()


def test_migrated_state_is_cached_until_migrations_change(
    neon_project: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Second run: no migration (cached); a new revision invalidates; --neon-no-cache migrates."""
    prologue = """\
        import os

        with open("alembic_runs.txt", "a") as _file:
            _file.write("run\\n")
    """
    neon_project.write_alembic("connect", env_prologue=prologue)
    neon_project.pytester.makepyfile(
        test_cached="""
        import os

        import psycopg


        def state(url):
            with psycopg.connect(url) as connection:
                version = connection.execute("SELECT version_num FROM alembic_version").fetchall()
                tables = connection.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' ORDER BY 1"
                ).fetchall()
                names = connection.execute("SELECT name FROM items").fetchall()
            return [row[0] for row in version], [row[0] for row in tables], names


        def test_1_readonly(neon_branch_readonly):
            version, tables, names = state(neon_branch_readonly.connection_string)
            assert version == [os.environ["E2E_HEAD"]]
            assert tables == os.environ["E2E_TABLES"].split(",")
            assert names == [("seed",)]


        def test_2_isolated_writes(neon_branch_isolated):
            with psycopg.connect(neon_branch_isolated.connection_string) as connection:
                connection.execute("INSERT INTO items (name) VALUES ('written')")
                assert connection.execute("SELECT nextval('items_id_seq')").fetchone() == (3,)


        def test_3_isolated_pristine(neon_branch_isolated):
            version, tables, names = state(neon_branch_isolated.connection_string)
            assert version == [os.environ["E2E_HEAD"]]
            assert names == [("seed",)]
        """
    )
    runs_file = neon_project.path / "alembic_runs.txt"

    def run(*args: str) -> str:
        result = neon_project.run(*args)
        result.assert_outcomes(passed=3)
        neon_project.assert_nothing_left()
        return neon_project.summary(result).line("migrations:")

    monkeypatch.setenv("E2E_HEAD", "r2")
    monkeypatch.setenv("E2E_TABLES", "alembic_version,items,notes")
    first = run()
    assert len(runs_file.read_text().splitlines()) == 1
    assert "cached" not in first

    second = run()
    assert len(runs_file.read_text().splitlines()) == 1, "the unchanged migrations ran again"
    assert second.startswith("migrations: cached"), second

    revisions = [
        *neon_project.default_revisions,
        ("r3", "CREATE TABLE tags (id int)", "DROP TABLE tags"),
    ]
    neon_project.write_alembic("connect", revisions, env_prologue=prologue)
    monkeypatch.setenv("E2E_HEAD", "r3")
    monkeypatch.setenv("E2E_TABLES", "alembic_version,items,notes,tags")
    third = run()
    assert len(runs_file.read_text().splitlines()) == 2, "a new revision did not invalidate"
    assert "cached" not in third

    fourth = run("--neon-no-cache")
    assert len(runs_file.read_text().splitlines()) == 3, "--neon-no-cache did not migrate"
    assert "cached" not in fourth
