"""conftest.py of the generated suite: the ``db_ro``/``db_rw``/``db_url`` fixtures of each strategy.

``BENCH_STRATEGY`` picks the strategy; the tests are the same for all of them.
A read-only test asks for ``db_ro``, a writing one for ``db_rw`` (and
``db_url`` when it also commits on a connection of its own). Every
``pytest_runtest_logreport`` is recorded (phase, duration, start), and
written with the tests' fingerprint checks to ``BENCH_OUT`` at the end.

Strategies:

- ``branch``, ``transaction``: pytest-neon-alembic (``--neon-reset=transaction``
  for the second); read-only tests use ``neon_engine_readonly`` in ``branch``.
- ``pgclone``: pytest-postgresql's ``postgresql_noproc`` with the template
  loaded by Alembic (``load=[...]``), and its ``postgresql`` fixture: a
  ``CREATE DATABASE … TEMPLATE`` per test, dropped afterwards.
- ``savepoint``: one migrated database; each test runs in an outer
  transaction, the Session joins it through savepoints
  (``join_transaction_mode="create_savepoint"``), rolled back afterwards.
- ``truncate``: one migrated database; after each test, TRUNCATE every table
  and copy the seed rows back in (``session_replication_role = replica``
  during the copy), sequences set back.
- ``dirty``: pytest-clean-database's idea, made correct: a statement-level
  trigger on every table (``ENABLE ALWAYS``) notes the tables a test wrote;
  after the test only those are emptied and reseeded (``DELETE`` under
  ``session_replication_role = replica``: no cascade into clean tables), and
  sequences that moved are set back.
- ``noiso``, ``noiso_session``: no isolation at all (the baseline), with a
  Connection or a Session per test.

The peers and the baselines use the PostgreSQL server the runner started
(``BENCH_ADMIN_URL``), from the same build and on the same tmpfs as ours.
"""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import quote, unquote, urlsplit

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

STRATEGY = os.environ["BENCH_STRATEGY"]
_reports: list[tuple[str, str, float, float, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _reports.append(
        (report.nodeid.split("::")[-1], report.when, report.duration, report.start, report.outcome)
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    suitelib = sys.modules.get("suitelib")
    checks = suitelib.CHECKS if suitelib is not None else {}
    with open(os.environ["BENCH_OUT"], "w") as out:
        json.dump({"reports": _reports, "checks": checks}, out)


# -- helpers for the strategies that bring their own database --------------------------------


def _sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _database_url(name: str) -> str:
    parts = urlsplit(os.environ["BENCH_ADMIN_URL"])
    return parts._replace(path="/" + quote(name)).geturl()


def migrate(url: str) -> None:
    """``alembic upgrade head`` in-process, the engine injected (as pytest-alembic does)."""
    from alembic import command
    from alembic.config import Config

    engine = sa.create_engine(_sqlalchemy_url(url), poolclass=NullPool)
    try:
        config = Config(os.environ["BENCH_ALEMBIC_INI"])
        config.attributes["connection"] = engine
        command.upgrade(config, "head")
    finally:
        engine.dispose()


def _admin(statement: str) -> None:
    with psycopg.connect(os.environ["BENCH_ADMIN_URL"], autocommit=True) as admin:
        admin.execute(statement)


@pytest.fixture(scope="session")
def _database_url_fixture():
    """A database created and migrated for this session, dropped at the end."""
    name = os.environ["BENCH_DBNAME"]
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{name}"')
    url = _database_url(name)
    migrate(url)
    yield url
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _both(function):
    """The same fixture as ``db_rw`` and ``db_ro`` (for strategies that do not tell them apart)."""
    return pytest.fixture(name="db_rw")(function), pytest.fixture(name="db_ro")(function)


@pytest.fixture(scope="session")
def _engine(_database_url_fixture):
    engine = sa.create_engine(_sqlalchemy_url(_database_url_fixture))
    yield engine
    engine.dispose()


# -- the seeded state, for the strategies that reseed -------------------------------------


class Seed:
    """The seeded state, read once: every table's rows and every sequence's position."""

    def __init__(self, url: str) -> None:
        self.connection = psycopg.connect(url, autocommit=True)
        tables = self.connection.execute(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version' ORDER BY tablename"
        ).fetchall()
        self.rows: dict[str, bytes] = {}
        for (table,) in tables:
            with self.connection.cursor().copy(f"COPY {table} TO STDOUT (FORMAT binary)") as c:
                self.rows[table] = b"".join(bytes(block) for block in c)
        self.sequences = [
            (
                name,
                *self.connection.execute(f"SELECT last_value, is_called FROM {name}").fetchone(),
            )
            for (name,) in self.connection.execute(
                "SELECT quote_ident(sequencename) FROM pg_sequences WHERE schemaname = 'public'"
            ).fetchall()
        ]

    def restore(self) -> None:
        connection = self.connection
        with connection.transaction():
            connection.execute("SET LOCAL session_replication_role = replica")
            connection.execute("TRUNCATE " + ", ".join(self.rows))
            cursor = connection.cursor()
            for table, data in self.rows.items():
                if data:
                    with cursor.copy(f"COPY {table} FROM STDIN (FORMAT binary)") as copy:
                        copy.write(data)
            for name, last_value, is_called in self.sequences:
                connection.execute("SELECT setval(%s, %s, %s)", (name, last_value, is_called))

    def install(self) -> None:
        """Nothing to prepare: every table is reseeded."""

    @property
    def moved_sequences(self) -> str:
        """A query of the sequences no longer where the seed has them (name, value, called)."""
        return " UNION ALL ".join(
            f"SELECT '{name}', {value}::bigint, {called} FROM {name} "
            f"WHERE last_value <> {value} OR is_called <> {called}"
            for name, value, called in self.sequences
        )


class DirtyTables(Seed):
    """Triggers note written tables (outside the public schema); only those are reseeded."""

    def install(self) -> None:
        connection = self.connection
        connection.execute(
            "CREATE SCHEMA bench; CREATE UNLOGGED TABLE bench.dirty (t text);"
            "CREATE FUNCTION bench.mark() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO bench.dirty SELECT TG_ARGV[0] WHERE NOT EXISTS "
            "(SELECT 1 FROM bench.dirty WHERE t = TG_ARGV[0]); RETURN NULL; END $$"
        )
        for table in self.rows:
            connection.execute(
                f"CREATE TRIGGER bench_dirty AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION bench.mark('{table}');"
                f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER bench_dirty"
            )

    def restore(self) -> None:
        connection = self.connection
        with connection.transaction():
            connection.execute("SET LOCAL session_replication_role = replica")
            dirty = [row[0] for row in connection.execute("SELECT t FROM bench.dirty")]
            cursor = connection.cursor()
            for table in dirty:
                connection.execute(f"DELETE FROM {table}")
                if self.rows[table]:
                    with cursor.copy(f"COPY {table} FROM STDIN (FORMAT binary)") as copy:
                        copy.write(self.rows[table])
            connection.execute("DELETE FROM bench.dirty")
            moved = connection.execute(self.moved_sequences).fetchall()
            for name, last_value, is_called in moved:
                connection.execute("SELECT setval(%s, %s, %s)", (name, last_value, is_called))


# -- pytest-neon-alembic ------------------------------------------------------------------

if STRATEGY == "branch":

    @pytest.fixture
    def db_ro(neon_engine_readonly):
        with neon_engine_readonly.connect() as connection:
            yield connection

    @pytest.fixture
    def db_rw(neon_engine):
        with neon_engine.connect() as connection:
            yield connection

    @pytest.fixture
    def db_url(neon_branch_isolated):
        return neon_branch_isolated.connection_string

elif STRATEGY == "transaction":

    @pytest.fixture
    def db_ro(neon_session):
        return neon_session

    @pytest.fixture
    def db_rw(neon_session):
        return neon_session

    @pytest.fixture
    def db_url(neon_branch_isolated):
        return neon_branch_isolated.connection_string

# -- pytest-postgresql: clone of a template database per test ------------------------------

elif STRATEGY == "pgclone":
    from pytest_postgresql import factories

    _server = urlsplit(os.environ["BENCH_ADMIN_URL"])

    def _load_with_alembic(host, port, user, dbname, password, **_):
        migrate(f"postgresql://{user}:{quote(password)}@{host}:{port}/{dbname}")

    postgresql_noproc = factories.postgresql_noproc(
        host=_server.hostname,
        port=_server.port,
        user=unquote(_server.username or ""),
        password=unquote(_server.password or ""),
        dbname=os.environ["BENCH_DBNAME"],
        load=[_load_with_alembic],
    )
    postgresql = factories.postgresql("postgresql_noproc")
    _current: list = []

    @pytest.fixture(scope="session")
    def _pg_engine():
        # One engine for the session (dialect set up once) on each test's own connection.
        engine = sa.create_engine(
            "postgresql+psycopg://", creator=lambda: _current[-1], poolclass=NullPool
        )
        yield engine
        engine.dispose()

    def _clone_per_test(postgresql, _pg_engine):
        _current.append(postgresql)
        try:
            with _pg_engine.connect() as connection:
                yield connection
        finally:
            _current.clear()

    db_rw, db_ro = _both(_clone_per_test)

    @pytest.fixture
    def db_url(postgresql):
        return _database_url(postgresql.info.dbname)

# -- a savepoint per test (SQLAlchemy's join_transaction_mode="create_savepoint") -----------

elif STRATEGY == "savepoint":

    def _savepoint_session(_engine):
        with _engine.connect() as connection:
            outer = connection.begin()
            session = Session(bind=connection, join_transaction_mode="create_savepoint")
            try:
                yield session
            finally:
                session.close()
                outer.rollback()

    db_rw, db_ro = _both(_savepoint_session)

    @pytest.fixture
    def db_url(_database_url_fixture):
        return _database_url_fixture

# -- TRUNCATE every table and copy the seed back -----------------------------------------

elif STRATEGY in ("truncate", "dirty"):

    @pytest.fixture(scope="session")
    def _seed(_database_url_fixture):
        seed = (Seed if STRATEGY == "truncate" else DirtyTables)(_database_url_fixture)
        seed.install()
        yield seed
        seed.connection.close()

    def _reseeded_after(_engine, _seed):
        try:
            with _engine.connect() as connection:
                yield connection
        finally:
            _seed.restore()

    db_rw, db_ro = _both(_reseeded_after)

    @pytest.fixture
    def db_url(_database_url_fixture):
        return _database_url_fixture

# -- no isolation: the baseline -----------------------------------------------------------

elif STRATEGY == "noiso":

    def _plain_connection(_engine):
        with _engine.connect() as connection:
            yield connection

    db_rw, db_ro = _both(_plain_connection)

    @pytest.fixture
    def db_url(_database_url_fixture):
        return _database_url_fixture

elif STRATEGY == "noiso_session":

    def _plain_session(_engine):
        with Session(_engine) as session:
            yield session

    db_rw, db_ro = _both(_plain_session)

    @pytest.fixture
    def db_url(_database_url_fixture):
        return _database_url_fixture

else:  # pragma: no cover - the runner sets it
    raise RuntimeError(f"unknown BENCH_STRATEGY {STRATEGY!r}")
