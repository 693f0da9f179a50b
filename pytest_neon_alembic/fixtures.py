"""The public fixtures. Their docstrings are user documentation (``pytest --fixtures``)."""

from __future__ import annotations

import contextlib
import functools
import itertools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .branch import NeonBranch
from .choice import ENV_VAR_PRIORITY, asked_branch, reset_strategy
from .errors import NeonAlembicError
from .liveness import ping_only_when_pending
from .redirect import FOLLOW, OuterTransaction
from .resets import renew_pool
from .session import BranchSession
from .urls import sqlalchemy_url

T = TypeVar("T")
SESSION_KEY = pytest.StashKey[BranchSession]()


def _setup(request: pytest.FixtureRequest, step: Callable[[], T]) -> T:
    """Run a setup step; a NeonAlembicError becomes one clear pytest error, not a traceback.

    It also stops the session after the current test: when the database cannot
    be set up, every other test would fail with the same message.
    """
    try:
        return step()
    except NeonAlembicError as error:
        message = str(error)
    # Outside the except block, so the report shows the message, not a chain of tracebacks.
    request.session.shouldfail = "pytest-neon-alembic could not set up the database"
    pytest.fail(f"pytest-neon-alembic: {message}", pytrace=False)


def _engine(branch: NeonBranch) -> Iterator[sa.Engine]:
    """An engine on ``branch`` for a fixture's lifetime; pre-ping survives resets."""
    engine = ping_only_when_pending(
        sa.create_engine(sqlalchemy_url(branch.connection_string), pool_pre_ping=True)
    )
    yield engine
    engine.dispose()


# -- the migration branch ------------------------------------------------------------------


@pytest.fixture(scope="session")
def _neon_session(request: pytest.FixtureRequest) -> BranchSession:
    return request.config.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def neon_migration_branch(
    request: pytest.FixtureRequest, _neon_session: BranchSession
) -> NeonBranch:
    """NeonBranch of the migration branch, where ``neon_apply_migrations`` runs once per run.

    Use it in your own ``neon_apply_migrations``; tests should use the
    read-only, dirty or isolated branches, which are copies of its final state.
    """
    return _setup(request, _neon_session.migration_branch)


@pytest.fixture(scope="session")
def _neon_migration_branch(neon_migration_branch: NeonBranch) -> NeonBranch:
    """pytest-neon 2.x's name for ``neon_migration_branch``, for existing overrides."""
    return neon_migration_branch


@pytest.fixture(scope="session")
def _neon_test_branch(neon_migration_branch: NeonBranch) -> tuple[NeonBranch, bool]:
    """pytest-neon 3.x's ``(branch, is_creator)`` for existing ``neon_apply_migrations``
    overrides: migrations run in exactly one process here, so it is always the creator."""
    return neon_migration_branch, True


@pytest.fixture(scope="session")
def neon_migration_context() -> Iterator[Any]:
    """Wraps the migrations and pytest-alembic's checks; override it in conftest.py.

    A session-long generator: entered the first time a migration or a check
    needs it (never when the migrated state comes from the cache), left at the
    end of the session. For example, migrations that need a Flask application
    context::

        @pytest.fixture(scope="session")
        def neon_migration_context():
            with create_app().app_context():
                yield

    For a history that cannot start from an empty database, yield a
    ``pytest_neon_alembic.MigrationStart``: its ``create(connection)`` runs on
    the empty migration branch, which is then stamped (and upgraded from
    there); the migrated state stays cached::

        yield MigrationStart(create=db.metadata.create_all, stamp="heads")
    """
    yield None


@pytest.fixture(scope="session")
def neon_apply_migrations(
    request: pytest.FixtureRequest, neon_migration_branch: NeonBranch, _neon_session: BranchSession
) -> None:
    """Brings the migration branch to the state every test starts from; runs once per run.

    The default runs ``alembic upgrade head`` in-process, with the migration
    branch's connection injected as ``config.attributes["connection"]``, using
    ``--neon-alembic-ini``, the rootdir's ``alembic.ini`` or Flask-Migrate's
    ``migrations/alembic.ini`` (none: no migration), inside
    ``neon_migration_context``; its state is cached.
    Override it in ``conftest.py`` for other tools; ``DATABASE_URL`` (or
    ``--neon-env-var``) holds the migration branch while it runs, and with
    pytest-xdist it still runs in one process only::

        @pytest.fixture(scope="session")
        def neon_apply_migrations(neon_migration_branch):
            subprocess.run(["alembic", "upgrade", "head"], check=True)
    """
    _neon_session.apply_alembic(
        neon_migration_branch, lambda: request.getfixturevalue("neon_migration_context")
    )


@pytest.fixture(scope="session")
def _neon_migrated(request: pytest.FixtureRequest, _neon_session: BranchSession) -> NeonBranch:
    def apply(branch: NeonBranch) -> None:
        with _neon_session.environment(branch):
            request.getfixturevalue("neon_apply_migrations")

    return _setup(request, lambda: _neon_session.migrated_branch(apply))


# -- branches ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def neon_branch_readonly(
    request: pytest.FixtureRequest, _neon_session: BranchSession, _neon_migrated: NeonBranch
) -> NeonBranch:
    """NeonBranch with read-only access to the migrated state; costs nothing per test.

    Read-only is enforced by the database (a read-only endpoint on Neon, a role
    that may only SELECT locally): any write raises. Shared by all tests and
    xdist workers.
    """
    return _setup(request, lambda: _neon_session.readonly_branch(_neon_migrated))


@pytest.fixture(scope="session")
def neon_branch_dirty(
    request: pytest.FixtureRequest, _neon_session: BranchSession, _neon_migrated: NeonBranch
) -> NeonBranch:
    """NeonBranch on one branch shared by all tests and xdist workers; writes persist, no reset.

    Starts from the migrated state. Fast, but tests see each other's data: use
    it for tests that tolerate that, ``neon_branch_isolated`` for the others.
    """
    return _setup(request, lambda: _neon_session.dirty_branch(_neon_migrated))


@pytest.fixture(scope="session")
def _neon_isolated_branch(
    request: pytest.FixtureRequest, _neon_session: BranchSession, _neon_migrated: NeonBranch
) -> Iterator[NeonBranch]:
    branch = _setup(request, lambda: _neon_session.isolated_branch(_neon_migrated))
    # Engines that follow the test drop connections made before a reset.
    _neon_session.resets.on_reset(branch, lambda: FOLLOW.branch_was_reset(branch.connection_string))
    yield branch
    with contextlib.suppress(NeonAlembicError):
        _neon_session.release(branch, run_ends=True)


@pytest.fixture
def neon_branch_isolated(
    request: pytest.FixtureRequest,
    _neon_session: BranchSession,
    _neon_migrated: NeonBranch,
    _neon_isolated_branch: NeonBranch,
) -> Iterator[NeonBranch]:
    """NeonBranch on this worker's own branch, in the migrated state at the start of every test.

    The test may do anything (commit, DDL, several connections). Afterwards the
    branch is reset to the migrated state — data, schema and sequences — but
    only if the database saw a write; its open connections are terminated then,
    so use ``pool_pre_ping=True`` in engines you create. With
    ``@pytest.mark.neon(reset="transaction")`` or ``--neon-reset=transaction``,
    ``neon_session`` runs inside one rolled-back transaction instead, and a
    reset happens only if something was committed anyway.
    """
    strategy = reset_strategy(request, _neon_session)
    marker = _setup(request, lambda: _neon_session.resets.before_test(_neon_isolated_branch))
    yield _neon_isolated_branch
    _setup(
        request,
        lambda: _neon_session.resets.after_test(
            _neon_isolated_branch,
            _neon_migrated,
            marker,
            committed_only=strategy == "transaction",
        ),
    )


def _deprecated(name: str, instead: str, branch: NeonBranch) -> NeonBranch:
    warnings.warn(f"{name} is deprecated: use {instead}.", DeprecationWarning, stacklevel=3)
    return branch


@pytest.fixture
def neon_branch_readwrite(neon_branch_isolated: NeonBranch) -> NeonBranch:
    """Deprecated alias of ``neon_branch_isolated`` (pytest-neon 2.x)."""
    instead = "neon_branch_isolated (writes, reset after each test) or neon_branch_dirty"
    return _deprecated("neon_branch_readwrite", instead, neon_branch_isolated)


@pytest.fixture
def neon_branch(neon_branch_isolated: NeonBranch) -> NeonBranch:
    """Deprecated alias of ``neon_branch_isolated`` (pytest-neon 1.x/2.x)."""
    instead = (
        "neon_branch_isolated (writes, reset after each test), neon_branch_dirty (shared "
        "state) or neon_branch_readonly (reads only)"
    )
    return _deprecated("neon_branch", instead, neon_branch_isolated)


_module_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def neon_branch_shared(
    request: pytest.FixtureRequest, _neon_session: BranchSession, _neon_migrated: NeonBranch
) -> Iterator[NeonBranch]:
    """NeonBranch on one branch per test module (per xdist worker), never reset.

    Starts from the migrated state; the module's tests see each other's writes;
    deleted when the module's tests are done.
    """
    number = next(_module_numbers)
    branch = _setup(request, lambda: _neon_session.shared_branch(_neon_migrated, number))
    yield branch
    with contextlib.suppress(NeonAlembicError):
        _neon_session.release(branch)


@pytest.fixture(autouse=True)
def _neon_database_url(request: pytest.FixtureRequest) -> Iterator[None]:
    """Points DATABASE_URL, and the app's engines that follow the test, at the branch this
    test asked for (by argument, marker or ini neon_default_branch); restores them after."""
    session: BranchSession | None = request.config.stash.get(SESSION_KEY, None)
    chosen = next((name for name in ENV_VAR_PRIORITY if name in request.fixturenames), None)
    if chosen is None and session is not None:
        chosen = asked_branch(request, session)
    if chosen is None or session is None:
        yield
        return
    branch = request.getfixturevalue(chosen)
    outer = None
    if chosen == "neon_branch_isolated" and reset_strategy(request, session) == "transaction":
        outer = request.getfixturevalue("_neon_outer_transaction")
    with session.environment(branch, outer):
        yield


@pytest.fixture
def _neon_outer_transaction(
    neon_branch_isolated: NeonBranch, _neon_isolated_engine: sa.Engine
) -> Iterator[OuterTransaction]:
    """The ``transaction`` strategy's one connection in one outer transaction, opened on
    first use by ``neon_session`` or by the app's engines; rolled back after the test."""
    outer = OuterTransaction(_neon_isolated_engine.connect)
    yield outer
    outer.rollback()


# -- engines, sessions and connections -----------------------------------------------------


@pytest.fixture(scope="session")
def _neon_isolated_engine(
    _neon_session: BranchSession, _neon_isolated_branch: NeonBranch
) -> Iterator[sa.Engine]:
    for engine in _engine(_neon_isolated_branch):
        _neon_session.resets.on_reset(_neon_isolated_branch, functools.partial(renew_pool, engine))
        yield engine


@pytest.fixture
def neon_engine(neon_branch_isolated: NeonBranch, _neon_isolated_engine: sa.Engine) -> sa.Engine:
    """SQLAlchemy Engine (psycopg 3, pool_pre_ping=True) on ``neon_branch_isolated``.

    Its pool lives for the whole session: a test that wrote nothing leaves its
    connections open for the next test; after a reset they are replaced.
    """
    return _neon_isolated_engine


@pytest.fixture
def neon_session(
    request: pytest.FixtureRequest, _neon_session: BranchSession, neon_engine: sa.Engine
) -> Iterator[Session]:
    """SQLAlchemy Session on ``neon_engine``, closed after the test.

    With the ``transaction`` reset strategy it is bound to the test's one
    connection in an outer transaction that is rolled back after the test;
    ``commit()`` inside the test releases a savepoint instead
    (``join_transaction_mode="create_savepoint"``). The app's own sync engines
    that follow the test use that same connection and transaction.
    """
    if reset_strategy(request, _neon_session) != "transaction":
        with Session(neon_engine) as session:
            yield session
        return
    outer: OuterTransaction = request.getfixturevalue("_neon_outer_transaction")
    session = Session(bind=outer.sqlalchemy_connection(), join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def neon_engine_readonly(neon_branch_readonly: NeonBranch) -> Iterator[sa.Engine]:
    """SQLAlchemy Engine (pool_pre_ping=True) on ``neon_branch_readonly``; writes raise."""
    yield from _engine(neon_branch_readonly)


@pytest.fixture(scope="session")
def neon_engine_dirty(neon_branch_dirty: NeonBranch) -> Iterator[sa.Engine]:
    """SQLAlchemy Engine (pool_pre_ping=True) on ``neon_branch_dirty``."""
    yield from _engine(neon_branch_dirty)


def _rolled_back_and_closed(connection: Any) -> Iterator[Any]:
    try:
        yield connection
    finally:
        with contextlib.suppress(Exception):
            connection.rollback()
        connection.close()


@pytest.fixture
def neon_connection(neon_branch_isolated: NeonBranch) -> Iterator[Any]:
    """psycopg2 connection on ``neon_branch_isolated``; rolled back and closed after the test.

    Needs psycopg2: ``pip install "pytest-neon-alembic[psycopg2]"``.
    """
    try:
        import psycopg2
    except ImportError:
        pytest.fail(
            "neon_connection needs psycopg2: pip install 'pytest-neon-alembic[psycopg2]' "
            "(or use neon_connection_psycopg for psycopg 3).",
            pytrace=False,
        )
    yield from _rolled_back_and_closed(psycopg2.connect(neon_branch_isolated.connection_string))


@pytest.fixture
def neon_connection_psycopg(neon_branch_isolated: NeonBranch) -> Iterator[Any]:
    """psycopg 3 connection on ``neon_branch_isolated``; rolled back and closed after the test."""
    import psycopg

    yield from _rolled_back_and_closed(psycopg.connect(neon_branch_isolated.connection_string))
