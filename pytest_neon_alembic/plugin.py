"""pytest wiring: options, the marker, fixtures, xdist hand-over, and the summary.

Everything else lives in plain modules; this file only connects them to pytest.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

from . import alembic_fixtures, guard, hooks, redirect
from .async_fixtures import neon_async_engine, neon_async_session  # noqa: F401
from .check_items import AlembicCheckItem, AlembicTests, TestsPathBinding, ini_check_items
from .choice import branch_fixture_of, neon_branch_scope_mismatch
from .config import OPTIONS, Settings, early_env_var_names, read_settings
from .coordination import STATE_DIR_ENV, RunDirectory, choose_state_root
from .errors import NeonAlembicError
from .fixtures import (  # noqa: F401 - pytest discovers fixtures on the plugin module
    SESSION_KEY,
    _neon_database_url,
    _neon_isolated_branch,
    _neon_isolated_engine,
    _neon_migrated,
    _neon_migration_branch,
    _neon_outer_transaction,
    _neon_session,
    _neon_test_branch,
    neon_apply_migrations,
    neon_branch,
    neon_branch_dirty,
    neon_branch_isolated,
    neon_branch_readonly,
    neon_branch_readwrite,
    neon_branch_shared,
    neon_connection,
    neon_connection_psycopg,
    neon_engine,
    neon_engine_dirty,
    neon_engine_readonly,
    neon_migration_branch,
    neon_migration_context,
    neon_session,
)
from .kept_server import stop_orphaned
from .report import Report
from .run_end import reap_abandoned_runs
from .sealing import RunKey
from .session import BranchSession

RUN_DIR_KEY = "neon_alembic_run_dir"
RUN_KEY_KEY = "neon_alembic_run_key"
REPORT_KEY = pytest.StashKey[Report]()
GUARD_KEY = pytest.StashKey[guard.ConnectionGuard]()
ALLOWED_URLS_HELP = (
    "Databases the connection guard lets tests reach although the run did not create them: "
    "host[:port][/database] patterns with *, whitespace-separated."
)
STATE_NOTE_KEY = pytest.StashKey[str]()
ROOTDIR_NODE_KEY = pytest.StashKey[pytest.Collector]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("neon", "pytest-neon-alembic: database branches for tests")
    for option in OPTIONS:
        where = f" [env {option.env}; ini {option.ini}]" if option.env else f" [ini {option.ini}]"
        default = "" if option.default in (None, False) else f" (default: {option.default})"
        kwargs: dict = {"dest": option.ini, "default": None, "help": option.help + default + where}
        if option.kind == "bool":
            kwargs["action"] = "store_true"
        elif option.kind == "choice":
            kwargs["choices"] = option.choices
        group.addoption(option.flag, **kwargs)
        parser.addini(option.ini, option.help, default=None)
    parser.addini("neon_allowed_urls", ALLOWED_URLS_HELP, type="args", default=[])
    parser.addini(
        "neon_default_branch",
        "The branch every test uses without a fixture argument or marker: isolated, "
        "readonly, dirty or shared (default: none).",
        default=None,
    )
    for kind, what in (
        ("neon_engines", "SQLAlchemy engines (sync or async)"),
        ("neon_sessions", "sessions or scoped_sessions"),
        ("neon_sessionmakers", "sessionmakers or async_sessionmakers"),
    ):
        parser.addini(
            kind,
            f"{what} of the app, built from something else than DATABASE_URL, that follow "
            "the test's branch: import paths (package.module:name), whitespace-separated.",
            type="args",
            default=[],
        )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser, args) -> None:
    """Before any conftest.py or application module is imported: the connection variables
    hold the sandbox, and the connection guard is on (it learns the run's databases later)."""
    names = early_env_var_names(
        getattr(early_config.known_args_namespace, "neon_env_var", None),
        early_config.getini,
        os.environ,
    )
    variables = guard.ConnectionVariables(names)
    variables.take()
    connection_guard = guard.ConnectionGuard(
        lambda target: False,
        guard.AllowedPatterns(early_config.getini("neon_allowed_urls")),
        variables,
    )
    hooks.install()
    guard.activate(connection_guard)
    early_config.stash[GUARD_KEY] = connection_guard


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``--neon-cleanup``: list and delete what earlier runs left, instead of running tests."""
    try:
        settings = _read_settings(config)
    except pytest.UsageError:
        return None  # pytest_configure reports it (and `pytest --version` still works)
    if not settings.cleanup:
        return None
    from .cleanup import clean_up

    lines, removed_all = clean_up(settings)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return pytest.ExitCode.OK if removed_all else pytest.ExitCode.TESTS_FAILED


def _read_settings(config: pytest.Config) -> Settings:
    try:
        return read_settings(
            cli=lambda name: config.getoption("neon_" + name),
            ini=lambda name: config.getini(name),
            environ=os.environ,
            rootdir=Path(config.rootpath),
            invocation_dir=Path(config.invocation_params.dir),
            ini_dir=Path(config.inipath).parent if config.inipath else None,
        )
    except NeonAlembicError as error:
        raise pytest.UsageError(f"pytest-neon-alembic: {error}") from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "neon(kind='isolated', reset='branch'|'transaction'): this test uses a database branch "
        "without a fixture argument — kind is isolated (default), readonly, dirty or shared; "
        "reset is how neon_branch_isolated is reset after it.",
    )
    settings = _read_settings(config)

    # pytest-alembic's collector crashes on pytest >= 9.2 ("'TestCollector' object has no
    # attribute '_nodeid'"): it is blocked, and TestsPathBinding does its job on any pytest.
    config.pluginmanager.set_blocked("pytest-alembic")

    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and RUN_DIR_KEY in workerinput:
        run = RunDirectory(
            Path(workerinput[RUN_DIR_KEY]), RunKey.from_hex(workerinput.get(RUN_KEY_KEY))
        )
        session = BranchSession(settings, run, owner=False, worker=workerinput["workerid"])
    else:
        try:
            root, note = choose_state_root()
        except NeonAlembicError as error:
            raise pytest.UsageError(f"pytest-neon-alembic: {error}") from None
        if note:
            config.stash[STATE_NOTE_KEY] = note
        with contextlib.suppress(Exception):  # cleanup of killed runs must never break this run
            reap_abandoned_runs(root)
            stop_orphaned(root)
        try:
            # Passwords in the run's files are sealed, unless the branches are kept to inspect.
            run = RunDirectory.create(root, sealed=not settings.keep_branches)
        except OSError as error:
            raise pytest.UsageError(
                f"pytest-neon-alembic: cannot create the run's directory in {root}: {error}. "
                f"Free some space there, or set {STATE_DIR_ENV} to another directory."
            ) from None
        session = BranchSession(settings, run, owner=True, worker="main")
    config.stash[SESSION_KEY] = session
    connection_guard = config.stash.get(GUARD_KEY, None)
    if connection_guard is not None:
        connection_guard.owns = session.owns
    # After pytest-alembic's plugin, so these fixtures override its defaults.
    config.pluginmanager.register(alembic_fixtures, "neon-alembic-fixtures")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHandOver(run), "neon-alembic-xdist")


def pytest_report_header(config: pytest.Config) -> str | None:
    """One line when the run's state is not where it usually is (a small /dev/shm)."""
    note = config.stash.get(STATE_NOTE_KEY, None)
    return f"pytest-neon-alembic: {note}" if note else None


class _XdistHandOver:
    """Gives each xdist worker the run directory, so all processes share one run, and the
    run's key (in memory, through xdist's pipe: never on disk)."""

    def __init__(self, run: RunDirectory) -> None:
        self.run = run

    def pytest_configure_node(self, node) -> None:
        node.workerinput[RUN_DIR_KEY] = str(self.run.path)
        node.workerinput[RUN_KEY_KEY] = self.run.key.hex() if self.run.key else None


def pytest_sessionstart(session: pytest.Session) -> None:
    """The app's objects named in ini neon_engines / neon_sessions / neon_sessionmakers
    follow the test from now on (imported here: a bad path fails the session once); and
    pytest-alembic's built-in tests, for --test-alembic and --neon-alembic-checks."""
    config = session.config
    named = {kind: config.getini(kind) for kind in redirect.KINDS}
    if any(named.values()):
        try:
            redirect.follow_named(named)
        except NeonAlembicError as error:
            raise pytest.UsageError(f"pytest-neon-alembic: {error}") from None
    try:
        enabled = config.getini("pytest_alembic_enabled")
    except ValueError:  # pytest-alembic's plugin is disabled
        return
    test_alembic = config.getoption("pytest_alembic_registration_enabled", default=False)
    neon = _checks_settings(config) is not None
    if enabled and (test_alembic or neon):
        binding = TestsPathBinding(config, neon=neon)
        config.pluginmanager.register(binding, "neon-alembic-pytest-alembic")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    hooks.install()  # drivers the application imported since


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest):
    """While a session-, package-, class- or module-scoped fixture that asked for a branch
    sets up (a Flask ``app`` built from DATABASE_URL), the variables hold that branch."""
    branch_fixture = branch_fixture_of(fixturedef)
    branch_session = request.config.stash.get(SESSION_KEY, None)
    if branch_fixture is None or branch_session is None:
        return (yield)
    branch = request.getfixturevalue(branch_fixture)
    with branch_session.environment(branch):
        return (yield)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """alembic.ini named on the command line (`pytest alembic.ini::test_upgrade`)."""
    settings = _checks_settings(parent.config)
    named = settings and settings.alembic_ini and file_path == settings.alembic_ini
    if named and parent.session.isinitpath(file_path):
        return AlembicTests.from_parent(parent, path=file_path, label=False)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items) -> None:
    """--neon-alembic-checks go first (before -k/-m deselection, which runs later); bound to
    alembic.ini when pytest-alembic's tests path was not collected."""
    settings = _checks_settings(config)
    if not (settings and settings.alembic_ini):
        return
    checks = [item for item in items if _is_neon_check(item)]
    if not checks and _wants_checks(config):
        # Under the rootdir's directory node when it was collected: the rootdir conftest's
        # fixtures (alembic_config, alembic_engine) are attached to it on pytest < 9.2.
        parent = config.stash.get(ROOTDIR_NODE_KEY, session)
        checks = ini_check_items(parent, settings.alembic_ini)
    items[:] = checks + [item for item in items if not _is_neon_check(item)]


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report = yield
    if isinstance(collector, pytest.Directory) and collector.path == collector.config.rootpath:
        collector.config.stash[ROOTDIR_NODE_KEY] = collector
    return report


def _is_neon_check(item: pytest.Item) -> bool:
    return isinstance(item, AlembicCheckItem) and getattr(item.parent, "neon", False)


def _checks_settings(config: pytest.Config):
    branch_session = config.stash.get(SESSION_KEY, None)
    if branch_session is None or not branch_session.settings.alembic_checks:
        return None
    return branch_session.settings


def _wants_checks(config: pytest.Config) -> bool:
    """Checks belong to runs of the whole suite, not to `pytest tests/test_one.py`.

    Also when asked for on the command line (--neon-alembic-checks).
    """
    if config.args_source is not pytest.Config.ArgsSource.ARGS:
        return True  # plain `pytest`: testpaths or the invocation directory
    if config.getoption("neon_alembic_checks"):
        return True
    invoked = Path(config.invocation_params.dir)
    rootpath = Path(config.rootpath).resolve()
    return any((invoked / arg.split("::")[0]).resolve() == rootpath for arg in config.args)


def pytest_collection_finish(session: pytest.Session) -> None:
    mismatch = neon_branch_scope_mismatch(session.items)
    if mismatch:
        raise pytest.UsageError(f"pytest-neon-alembic: {mismatch}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    _finish(session.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    _finish(config)  # no-op after sessionfinish; cleans up if the session never finished
    connection_guard = config.stash.get(GUARD_KEY, None)
    if connection_guard is not None:
        del config.stash[GUARD_KEY]
        guard.deactivate(connection_guard)
        connection_guard.variables.give_back()
        redirect.restore_named()


def _finish(config: pytest.Config) -> None:
    branch_session = config.stash.get(SESSION_KEY, None)
    if branch_session is None:
        return
    del config.stash[SESSION_KEY]
    branch_session.finish_worker()
    if branch_session.owner:
        report = branch_session.finish_run()
        if report is not None:
            config.stash[REPORT_KEY] = report


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    report = config.stash.get(REPORT_KEY, None)
    if report is None or not report.used:
        return
    terminalreporter.write_sep("-", "pytest-neon-alembic")
    for line in report.lines():
        terminalreporter.write_line(line)
