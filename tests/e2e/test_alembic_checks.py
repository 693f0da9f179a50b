"""pytest-alembic's checks (``--neon-alembic-checks``) on a corpus of small Alembic projects.

Each project of ``tests/alembic_corpus`` is copied into a pytester directory and
run as a whole suite. The four check items must come first, pass on the good
project and fail on each bad one with pytest-alembic's own message. As a
reference, every project run also holds pytest-alembic's own four tests, run the
way its documentation shows (``from pytest_alembic.tests import ...``) through
its ``alembic_runner`` fixture (whose ``alembic_engine`` the plugin points at a
fresh branch): each check item must end the way pytest-alembic's own test does.
A last inner test lists the server's databases after everything else ran, to
prove that no fresh branch is left behind, also after a failing check.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import NeonProject

CORPUS = Path(__file__).resolve().parents[1] / "alembic_corpus"
CHECKS = (
    "test_single_head_revision",
    "test_upgrade",
    "test_model_definitions_match_ddl",
    "test_up_down_consistency",
)
ITEM = "alembic.ini::{}"
REFERENCE_MODULE = "test_pytest_alembic_reference"
REFERENCE = REFERENCE_MODULE + ".py::{}"

# pytest-alembic's own default tests, collected as ordinary tests of the inner session.
REFERENCE_SOURCE = """
from pytest_alembic.tests import (  # noqa: F401
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
"""

# Runs last (test_zz...): which databases the server still has once the checks and
# the reference tests are done. Only the migration branch (created by this test)
# may be there besides the server's own databases and the plugin's cache.
DATABASES_SOURCE = """
import json

import psycopg


def test_zz_no_fresh_branch_left(neon_migration_branch):
    with psycopg.connect(neon_migration_branch.connection_string) as connection:
        current = connection.execute("SELECT current_database()").fetchone()[0]
        names = [row[0] for row in connection.execute("SELECT datname FROM pg_database")]
    with open("databases.json", "w") as file:
        json.dump({"current": current, "names": sorted(names)}, file)
"""
SERVER_DATABASES = {"postgres", "template0", "template1"}

# Instrumentation added on top of a project's env.py: which process ran it.
ENV_RUNS_PROLOGUE = """\
import os as _os

from alembic import context as _context

_here = _os.path.dirname(_context.config.config_file_name)
with open(_os.path.join(_here, "env_runs.txt"), "a") as _file:
    _file.write(_os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
"""

_SHORT_SUMMARY = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)", re.M)
_VERBOSE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)\b", re.M)
_SECTION = re.compile(r"^_{3,} (.+?) _{3,}$")
_SECTION_END = re.compile(r"^(={3,}|-{3,} pytest-neon-alembic -{3,}$)")


# -- helpers --------------------------------------------------------------------------------


def copy_project(neon_project: NeonProject, name: str) -> Path:
    shutil.copytree(
        CORPUS / name,
        neon_project.path,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return neon_project.path


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """node id -> PASSED/FAILED/..., from the ``-rA`` short test summary."""
    return {nodeid: word for word, nodeid in _SHORT_SUMMARY.findall(result.stdout.str())}


def run_order(result: pytest.RunResult) -> list[str]:
    """The node ids in the order they ran, from ``-v`` lines (no xdist)."""
    return [nodeid for nodeid, _ in _VERBOSE.findall(result.stdout.str())]


def failure_sections(result: pytest.RunResult) -> dict[str, str]:
    """Failure section title (``[pytest-alembic] test_upgrade``, ``test_upgrade``) -> its text."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in result.stdout.lines:
        header = _SECTION.match(line)
        if header:
            current = sections.setdefault(header.group(1), [])
        elif _SECTION_END.match(line):
            current = None
        elif current is not None:
            current.append(line)
    return {title: "\n".join(lines) for title, lines in sections.items()}


def plugin_section(sections: dict[str, str], check: str) -> str:
    title = f"[pytest-alembic] {check}"
    assert title in sections, f"no failure section {title!r}; sections: {sorted(sections)}"
    return sections[title]


def assert_lines(text: str, patterns: list[str]) -> None:
    """Each fnmatch pattern matches a line of ``text``, in this order."""
    lines = text.splitlines()
    position = 0
    for pattern in patterns:
        for index in range(position, len(lines)):
            if fnmatch(lines[index], pattern):
                position = index + 1
                break
        else:
            raise AssertionError(f"no line matching {pattern!r} (in order) in:\n{text}")


# -- the corpus -----------------------------------------------------------------------------


@dataclass
class Failure:
    """How one check fails: ``key`` is in pytest-alembic's own test's failure too."""

    key: str
    lines: list[str]
    absent: list[str] = field(default_factory=list)
    contains: list[str] = field(default_factory=list)


@dataclass
class Case:
    project: str
    failures: dict[str, Failure] = field(default_factory=dict)
    app_tests: int = 1  # tests in the project's test_app.py
    app_branches: int = 0  # fresh branches they use (pytest-alembic's alembic_engine)

    def __str__(self) -> str:
        return self.project


ROUNDTRIP = (
    "Failed to upgrade through each revision individually after performing a roundtrip "
    "upgrade -> downgrade -> upgrade cycle."
)
OUT_OF_SYNC = (
    "The models describing the DDL of your database are out of sync with the set of steps "
    "described in the revision history.*"
)
CAST = 'column "quantity" cannot be cast automatically to type integer'

CASES = [
    # FKs, server defaults, an enum type dropped by its downgrade, data migrations; its
    # test_app.py also tests a data migration with pytest-alembic's alembic_runner.
    Case("good_basic", app_tests=2, app_branches=1),
    # pytest-alembic's examples/test_multiple_heads; the other checks pass on a branched
    # history, as in its examples/test_branched_history.
    Case(
        "multiple_heads",
        {
            "test_single_head_revision": Failure(
                "Expected 1 head revision, found 2",
                ["Expected 1 head revision, found 2", "", "Heads:", "    ????0002", "    ????0002"],
                contains=["\n    bbbb0002", "\n    cccc0002"],
            )
        },
    ),
    # examples/test_model_definitions_out_of_sync: the would-be upgrade is shown.
    Case(
        "drifted_model",
        {
            "test_model_definitions_match_ddl": Failure(
                "out of sync with the set of steps described in the revision history",
                [
                    OUT_OF_SYNC,
                    "The upgrade which would have been generated would look like:",
                    "    op.add_column('users', sa.Column('email', sa.String(length=320), "
                    "nullable=True))",
                ],
                absent=["*op.add_column('users', sa.Column('name'*"],
            )
        },
    ),
    # examples/test_consistency_doesnt_roundtrip: a downgrade that does not undo its upgrade.
    Case(
        "bad_downgrade",
        {
            "test_up_down_consistency": Failure(
                "after performing a roundtrip",
                [
                    ROUNDTRIP,
                    "Failing Revision:",
                    "    e002",
                    "Alembic Error:",
                    '    (psycopg.errors.DuplicateTable) relation "tags" already exists',
                ],
            )
        },
    ),
    # examples/test_failing_downgrade: the downgrade of f002 drops f001's table, so
    # downgrading to base (f001's downgrade) fails.
    Case(
        "downgrade_drops_too_much",
        {
            "test_up_down_consistency": Failure(
                "Failed to downgrade through each revision individually.",
                [
                    "Failed to downgrade through each revision individually.",
                    "Failing Revision:",
                    "    base",
                    "Alembic Error:",
                    '    (psycopg.errors.UndefinedTable) table "accounts" does not exist',
                    "*DROP TABLE accounts*",
                ],
            )
        },
    ),
    # examples/test_failing_upgrade, with a failure only PostgreSQL has: 3 checks fail.
    Case(
        "pg_only_failure",
        {
            # The revision is named (pytest-alembic's traceback shows its file).
            "test_upgrade": Failure(
                CAST,
                [f"*{CAST}*", "*USING quantity::integer*"],
                absent=["Traceback*"],
                contains=["g002", "g002_quantity_integer.py"],
            ),
            "test_model_definitions_match_ddl": Failure(
                CAST, [f"*{CAST}*"], absent=["Traceback*"], contains=["g002"]
            ),
            "test_up_down_consistency": Failure(
                "Failed to upgrade through each revision individually.",
                [
                    "Failed to upgrade through each revision individually.",
                    "Failing Revision:",
                    "    g002",
                    "Alembic Error:",
                    f"*{CAST}*",
                ],
            ),
        },
    ),
    # The downgrade drops the table; PostgreSQL keeps its enum type; re-upgrading fails.
    Case(
        "enum_left_behind",
        {
            "test_up_down_consistency": Failure(
                "after performing a roundtrip",
                [
                    ROUNDTRIP,
                    "Failing Revision:",
                    "    h001",
                    "Alembic Error:",
                    '    (psycopg.errors.DuplicateObject) type "ticket_priority" already exists',
                    "*CREATE TYPE ticket_priority AS ENUM*",
                ],
            )
        },
    ),
    # Ten differences: counted by kind first, then pytest-alembic's full would-be upgrade.
    Case(
        "drifted_many",
        {
            "test_model_definitions_match_ddl": Failure(
                "out of sync with the set of steps described in the revision history",
                [
                    OUT_OF_SYNC,
                    "Differences by kind:",
                    "    10 operations (the full upgrade follows):",
                    "       3  table missing from the migrations (create_table)",
                    "       3  index missing (create_index)",
                    "       3  column type changed",
                    "       3  nullability changed",
                    "       1  column missing from the migrations (add_column)",
                    "The upgrade which would have been generated would look like:",
                    "    op.create_table('audits',",
                    "*op.alter_column('accounts', 'status',",
                ],
            )
        },
    ),
    # env.py without target_metadata: pytest-alembic's RuntimeError, plus the plugin's hint.
    Case(
        "no_target_metadata",
        {
            "test_model_definitions_match_ddl": Failure(
                "does not provide a MetaData object",
                [
                    "*does not provide a MetaData object*",
                    "*env.py must give Alembic your models' MetaData*"
                    "`target_metadata = Base.metadata`*",
                ],
                absent=["Traceback*"],
            )
        },
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_corpus_project(neon_project: NeonProject, case: Case) -> None:
    copy_project(neon_project, case.project)
    neon_project.pytester.makepyfile(
        **{REFERENCE_MODULE: REFERENCE_SOURCE, "test_zz_databases": DATABASES_SOURCE}
    )

    result = neon_project.run("--neon-alembic-checks", "-v", "-rA")
    output = neon_project.output(result)

    # The four checks are the first items of the session, in pytest-alembic's order,
    # followed by the project's own tests.
    order = run_order(result)
    assert order[:4] == [ITEM.format(check) for check in CHECKS], output
    app = order[4 : 4 + case.app_tests]
    assert all(nodeid.startswith("test_app.py::") for nodeid in app), order
    assert len(order) == 4 + case.app_tests + 4 + 1, order  # ..., reference tests, test_zz

    # Each check: the expected outcome, and the same as pytest-alembic's own test.
    seen = outcomes(result)
    sections = failure_sections(result)
    for check in CHECKS:
        expected = "FAILED" if check in case.failures else "PASSED"
        assert seen[ITEM.format(check)] == expected, f"{check}:\n{output}"
        assert seen[REFERENCE.format(check)] == expected, (
            f"pytest-alembic's own {check} ended {seen[REFERENCE.format(check)]}, "
            f"the plugin's item {expected}:\n{output}"
        )
    failed = len(case.failures)
    result.assert_outcomes(passed=2 * (4 - failed) + case.app_tests + 1, failed=2 * failed)

    # Failures: pytest-alembic's message, without the plugin's traceback.
    for check, failure in case.failures.items():
        text = plugin_section(sections, check)
        assert_lines(text, failure.lines)
        for text_part in failure.contains:
            assert text_part in text, text
        for pattern in failure.absent:
            assert not any(fnmatch(line, pattern) for line in text.splitlines()), text
        assert "pytest_neon_alembic/" not in text, text
        assert failure.key in sections[check], (
            f"pytest-alembic's own {check} failed differently:\n{sections[check]}"
        )
    short_summary = output.split("short test summary info", 1)[1]
    for check in case.failures:
        assert f"FAILED {ITEM.format(check)} - " in short_summary

    # After the checks (and the reference tests' fresh branches): no fresh database left.
    databases = json.loads((neon_project.path / "databases.json").read_text())
    leftover = [
        name
        for name in databases["names"]
        if name not in SERVER_DATABASES | {databases["current"]}
        and not name.startswith("pytest_cache_")
    ]
    assert leftover == [], f"databases left on the server after the checks: {leftover}"
    # One fresh branch per check (4; alembic_engine, as pytest-alembic gives each test its
    # own database), one per reference test (4), those of test_app.py, and the migration
    # branch of the last test; all deleted.
    summary = neon_project.summary(result)
    branches = 4 + 4 + case.app_branches + 1
    assert (summary.created, summary.deleted) == (branches, branches), summary.line("branches:")
    # The migration branch was created, but no test needed it migrated.
    assert summary.line("migrations:") == "migrations: not run (no test used the migrated state)"
    neon_project.assert_nothing_left()


# -- selection ------------------------------------------------------------------------------


def test_k_selects_one_check(neon_project: NeonProject) -> None:
    copy_project(neon_project, "bad_downgrade")
    result = neon_project.run("--neon-alembic-checks", "-k", "up_down", "-rA")
    output = neon_project.output(result)

    assert outcomes(result) == {ITEM.format("test_up_down_consistency"): "FAILED"}, output
    result.assert_outcomes(failed=1, deselected=4)
    assert "collected 5 items / 4 deselected / 1 selected" in output
    assert_lines(
        plugin_section(failure_sections(result), "test_up_down_consistency"),
        [ROUNDTRIP, "Failing Revision:", "    e002"],
    )
    # Only the selected check ran: one fresh branch.
    summary = neon_project.summary(result)
    assert (summary.created, summary.deleted) == (1, 1), summary.line("branches:")
    neon_project.assert_nothing_left()


def test_m_not_alembic_deselects_all_checks(neon_project: NeonProject) -> None:
    copy_project(neon_project, "bad_downgrade")
    result = neon_project.run("--neon-alembic-checks", "-m", "not alembic", "-rA")
    output = neon_project.output(result)

    assert outcomes(result) == {"test_app.py::test_post_title": "PASSED"}, output
    result.assert_outcomes(passed=1, deselected=4)
    assert "collected 5 items / 4 deselected / 1 selected" in output
    assert "alembic.ini::" not in output
    # No check ran: no database was created.
    if "branches:" in output:
        assert neon_project.summary(result).created == 0, output
    neon_project.assert_nothing_left()


def test_m_alembic_with_k_runs_the_chosen_checks_only(neon_project: NeonProject) -> None:
    copy_project(neon_project, "drifted_model")
    result = neon_project.run(
        "--neon-alembic-checks", "-m", "alembic", "-k", "not model_definitions", "-rA"
    )
    output = neon_project.output(result)

    assert outcomes(result) == {
        ITEM.format("test_single_head_revision"): "PASSED",
        ITEM.format("test_upgrade"): "PASSED",
        ITEM.format("test_up_down_consistency"): "PASSED",
    }, output
    # The drifted model is not looked at: the check that would fail was not selected.
    result.assert_outcomes(passed=3, deselected=2)
    assert "out of sync" not in output
    summary = neon_project.summary(result)
    assert (summary.created, summary.deleted) == (3, 3), summary.line("branches:")
    neon_project.assert_nothing_left()


# -- xdist, ini, misconfiguration -----------------------------------------------------------


def test_xdist_runs_the_checks_once_enabled_from_the_ini(neon_project: NeonProject) -> None:
    copy_project(neon_project, "enum_left_behind")
    env_py = neon_project.path / "migrations" / "env.py"
    env_py.write_text(ENV_RUNS_PROLOGUE + env_py.read_text())
    neon_project.pytester.makeini("[pytest]\nneon_alembic_checks = true\n")
    neon_project.pytester.makepyfile(
        test_more="""
        import pytest


        @pytest.mark.parametrize("n", range(8))
        def test_more(n):
            pass
        """
    )

    result = neon_project.run("-n", "2", "-v", "-rA")
    output = neon_project.output(result)

    seen = outcomes(result)
    assert {nodeid: word for nodeid, word in seen.items() if nodeid.startswith("alembic.ini")} == {
        ITEM.format("test_single_head_revision"): "PASSED",
        ITEM.format("test_upgrade"): "PASSED",
        ITEM.format("test_model_definitions_match_ddl"): "PASSED",
        ITEM.format("test_up_down_consistency"): "FAILED",
    }, output
    result.assert_outcomes(passed=12, failed=1)
    # Both workers took part; each check ran once in the run, in one of them.
    assert re.search(r"^\[gw0\] .*(PASSED|FAILED)", output, re.M), output
    assert re.search(r"^\[gw1\] .*(PASSED|FAILED)", output, re.M), output
    for check in CHECKS:
        ran = re.findall(rf"^\[gw\d\] .* {re.escape(ITEM.format(check))} *$", output, re.M)
        assert len(ran) == 1, (check, ran, output)
    runs = (neon_project.path / "env_runs.txt").read_text().split()
    assert set(runs) <= {"gw0", "gw1"}, runs
    # The failure is reported once, with pytest-alembic's message.
    sections = failure_sections(result)
    assert list(sections) == ["[pytest-alembic] test_up_down_consistency"], list(sections)
    assert_lines(
        sections["[pytest-alembic] test_up_down_consistency"],
        [ROUNDTRIP, "Failing Revision:", "    h001", '*type "ticket_priority" already exists'],
    )
    # One fresh branch per check, once in the run (not once per worker); all deleted
    # although a check failed.
    summary = neon_project.summary(result)
    assert (summary.created, summary.deleted) == (4, 4), summary.line("branches:")
    neon_project.assert_nothing_left()


@pytest.mark.parametrize("enable", ["flag", "ini"])
def test_checks_without_alembic_ini_are_a_usage_error(
    neon_project: NeonProject, enable: str
) -> None:
    neon_project.pytester.makepyfile(test_app="def test_app():\n    pass\n")
    args = ["--neon-alembic-checks"] if enable == "flag" else []
    if enable == "ini":
        neon_project.pytester.makeini("[pytest]\nneon_alembic_checks = true\n")

    result = neon_project.run(*args)
    output = neon_project.output(result)

    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    errors = [line for line in output.splitlines() if line.startswith("ERROR: ")]
    source = "--neon-alembic-checks" if enable == "flag" else "neon_alembic_checks"
    assert len(errors) == 1, output
    assert errors[0].startswith("ERROR: pytest-neon-alembic: "), errors
    assert source in errors[0]
    assert "no alembic.ini in" in errors[0]
    assert "--neon-alembic-ini" in errors[0]
    assert "Traceback" not in output
    assert "passed" not in output
    neon_project.assert_nothing_left()


# -- layouts real projects use ----------------------------------------------------------------


def test_history_that_cannot_start_from_an_empty_database(neon_project: NeonProject) -> None:
    """base_alters_created_table: its first revision alters a table create_all() made.

    Without the recipe, the migration fails naming the revision and pointing at the
    recipe, and the report says the migration failed. With it (conftest.py yields a
    MigrationStart from neon_migration_context), the branch is create_all() + stamp,
    the report says so, the context wraps the upgrade and the checks, and the next
    run takes the cached state without entering the context.
    """
    copy_project(neon_project, "base_alters_created_table")
    recipe = (neon_project.path / "conftest.py").read_text()
    log = neon_project.path / "context.log"

    (neon_project.path / "conftest.py").unlink()
    result = neon_project.run("-rA")
    output = neon_project.output(result)
    assert result.parseoutcomes() == {"errors": 1}, output
    for text in ("Migration a001", 'relation "users" does not exist', "MigrationStart"):
        assert text in output, text
    assert "neon_migration_context" in output
    assert neon_project.summary(result).line("migrations:") == (
        "migrations: failed (alembic upgrade heads, alembic.ini)"
    )
    neon_project.assert_nothing_left()

    (neon_project.path / "conftest.py").write_text(recipe)
    result = neon_project.run("--neon-alembic-checks", "-rA")
    output = neon_project.output(result)
    seen = outcomes(result)
    assert seen["test_app.py::test_migrated_state"] == "PASSED", output
    # pytest-alembic's checks start from an empty branch, as pytest-alembic's do: the
    # upgrade fails there too, and the failure points at the recipe.
    assert seen[ITEM.format("test_upgrade")] == "FAILED", output
    assert "MigrationStart" in plugin_section(failure_sections(result), "test_upgrade")
    assert log.read_text().splitlines() == ["enter sandbox", "exit"]  # once, around both
    assert re.fullmatch(
        r"migrations: \d+\.\d\d s \(MetaData\.create_all\(\) \+ stamp heads, upgrade heads, "
        r"alembic\.ini\)",
        neon_project.summary(result).line("migrations:"),
    )
    neon_project.assert_nothing_left()

    log.unlink()
    result = neon_project.run("-rA", "-k", "migrated_state")
    result.assert_outcomes(passed=1)
    assert neon_project.summary(result).line("migrations:").startswith("migrations: cached (")
    assert not log.exists(), "neon_migration_context was entered although nothing migrated"
    neon_project.assert_nothing_left()


def test_flask_migrate_layout(neon_project: NeonProject) -> None:
    """`flask db init`: migrations/alembic.ini without script_location, no rootdir alembic.ini.

    It is found, migrated, checked (items bound to it), and the report names it.
    """
    copy_project(neon_project, "good_basic")
    migrations = neon_project.path / "migrations"
    ini = (neon_project.path / "alembic.ini").read_text()
    (neon_project.path / "alembic.ini").unlink()
    (migrations / "alembic.ini").write_text(
        "\n".join(
            line for line in ini.splitlines() if not line.startswith("script_location")
        ).replace("%(here)s", str(neon_project.path))
    )
    neon_project.pytester.makepyfile(
        test_state="""
        import sqlalchemy as sa


        def test_tables(neon_engine_readonly):
            with neon_engine_readonly.connect() as connection:
                names = set(sa.inspect(connection).get_table_names())
            assert {"customers", "orders", "alembic_version"} <= names
        """
    )

    result = neon_project.run("--neon-alembic-checks", "-rA")
    output = neon_project.output(result)

    checks = {k: v for k, v in outcomes(result).items() if k.startswith("migrations/alembic")}
    assert checks == {f"migrations/{ITEM.format(check)}": "PASSED" for check in CHECKS}, output
    assert outcomes(result)["test_state.py::test_tables"] == "PASSED", output
    assert re.fullmatch(
        r"migrations: \d+\.\d\d s \(alembic upgrade heads, migrations/alembic\.ini\)",
        neon_project.summary(result).line("migrations:"),
    ), output
    neon_project.assert_nothing_left()


def test_test_alembic_works_on_this_pytest(neon_project: NeonProject) -> None:
    """pytest-alembic's own --test-alembic, through the plugin (its collector crashes on
    pytest >= 9.2): its items, node ids, order and options, on a fresh branch each."""
    copy_project(neon_project, "good_basic")
    neon_project.pytester.makeconftest("")
    result = neon_project.run(
        "--test-alembic",
        "--alembic-tests-path",
        "conftest.py",
        "--alembic-exclude",
        "upgrade",
        "-v",
        "-rA",
        "-p",
        "no:randomly",
    )
    output = neon_project.output(result)

    assert run_order(result)[:3] == [
        "conftest.py::pytest-alembic::test_model_definitions_match_ddl",
        "conftest.py::pytest-alembic::test_single_head_revision",
        "conftest.py::pytest-alembic::test_up_down_consistency",
    ], output
    result.assert_outcomes(passed=3 + 2)  # and test_app.py's two
    assert "'_nodeid'" not in output
    summary = neon_project.summary(result)
    assert (summary.created, summary.deleted) == (3 + 1, 3 + 1), summary.line("branches:")
    neon_project.assert_nothing_left()


def test_checks_use_the_projects_alembic_config_and_alembic_engine(
    neon_project: NeonProject,
) -> None:
    """The project's alembic_engine (here: the plugin's, with a schema made first) and
    alembic_config (pytest-alembic's at_revision_data) are the ones the checks run with."""
    copy_project(neon_project, "good_basic")
    (neon_project.path / "migrations" / "versions" / "0004_audit.py").write_text(
        '"""audit events, in the audit schema the DBA creates"""\n'
        "from alembic import op\n\n"
        'revision = "0004"\ndown_revision = "0003"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade():\n"
        '    op.execute("CREATE TABLE audit.events (id serial PRIMARY KEY)")\n\n\n'
        "def downgrade():\n"
        '    op.execute("DROP TABLE audit.events")\n'
    )
    engine_override = """
        import pytest
        import sqlalchemy as sa


        @pytest.fixture
        def alembic_engine(alembic_engine):
            with alembic_engine.begin() as connection:
                connection.execute(sa.text("CREATE SCHEMA audit"))
            return alembic_engine
        """
    neon_project.pytester.makeconftest(engine_override)
    result = neon_project.run("--neon-alembic-checks", "-k", "test_upgrade", "-rA")
    assert outcomes(result) == {ITEM.format("test_upgrade"): "PASSED"}, neon_project.output(result)

    # Without it: the schema is missing, as the database says.
    (neon_project.path / "conftest.py").unlink()
    result = neon_project.run("--neon-alembic-checks", "-k", "test_upgrade", "-rA")
    text = plugin_section(failure_sections(result), "test_upgrade")
    assert "Migration 0004" in text and 'schema "audit" does not exist' in text, text

    # at_revision_data: a row inserted right after 0001 collides with 0002's seed.
    neon_project.pytester.makeconftest(
        engine_override
        + """

        @pytest.fixture
        def alembic_config():
            return {
                "at_revision_data": {
                    "0001": {"__tablename__": "customers", "email": "house@example.com"}
                }
            }
        """
    )
    result = neon_project.run("--neon-alembic-checks", "-k", "test_upgrade", "-rA")
    text = plugin_section(failure_sections(result), "test_upgrade")
    assert "Migration 0002" in text and "duplicate key" in text, text
    neon_project.assert_nothing_left()
