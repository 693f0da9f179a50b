"""Shared scaffolding of the end-to-end tests.

Every end-to-end test runs real inner pytest sessions (``pytester``) against the
real embedded PostgreSQL and real Alembic migrations. The ``neon_project``
fixture gives each test:

* a small Alembic project written into the pytester directory
  (``write_alembic``): ``alembic.ini`` with a relative ``script_location``, an
  ``env.py`` in one of the shapes real projects use, and revisions given as
  ``(id, upgrade SQL, downgrade SQL)``;
* a private state directory (``PYTEST_NEON_ALEMBIC_STATE_DIR``) for the inner
  sessions, so a test can check that nothing was left behind (run directories,
  server processes) without seeing other runs on this machine. Its ``cache``
  is shared by the tests of the outer session (``e2e_cache_dir``), so the
  initdb template is built once per session;
* ``run(...)``: one inner session in a subprocess, ``-p no:cacheprovider``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_neon_alembic.backends.neon.owner import RunOwner

STATE_DIR_ENV = "PYTEST_NEON_ALEMBIC_STATE_DIR"
SENTINEL = "sentinel"
# Inner test modules of the fixture contract, copied into projects as test_<name>.py.
CONTRACT_DIR = Path(__file__).parent / "e2e" / "contract"

# Where the private state directories live: RAM-backed and traversable by the
# unprivileged user the embedded server runs as (pytester's tmp dirs are 0700).
_SHM = Path("/dev/shm")
SCRATCH_ROOT = _SHM if _SHM.is_dir() and os.access(_SHM, os.W_OK) else Path(tempfile.gettempdir())

# SQL: one statement or a list of them; a revision is (id, upgrade SQL, downgrade SQL).
SQL = str | Sequence[str]
Revision = tuple[str, SQL, SQL]

DEFAULT_REVISIONS: tuple[Revision, ...] = (
    (
        "r1",
        [
            "CREATE TABLE items (id serial PRIMARY KEY, name text UNIQUE)",
            "INSERT INTO items (name) VALUES ('seed')",
        ],
        "DROP TABLE items",
    ),
    (
        "r2",
        "CREATE TABLE notes (id serial PRIMARY KEY, "
        "item_id integer NOT NULL REFERENCES items (id), body text)",
        "DROP TABLE notes",
    ),
)

ENV_PY = {
    # pytest-alembic's documented snippet: the injected object is used like an Engine.
    "connect": """\
        from alembic import context

        config = context.config
        connectable = config.attributes.get("connection")
        if connectable is None:
            raise RuntimeError("e2e: no connection was injected into env.py")
        with connectable.connect() as connection:
            context.configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
        """,
    # Used as a Connection, committing itself.
    "direct": """\
        from alembic import context

        config = context.config
        connection = config.attributes["connection"]
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        """,
    # Ignores the injected connection, but builds its own engine from DATABASE_URL,
    # which the plugin points at the migration branch: the right database.
    "env-url": """\
        import os

        import sqlalchemy as sa
        from alembic import context

        config = context.config
        url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            context.configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
        """,
    # Ignores the injected connection and migrates another database.
    "ignores": """\
        from pathlib import Path

        import sqlalchemy as sa
        from alembic import context

        config = context.config
        other = Path(config.config_file_name).resolve().parent / "other.db"
        engine = sa.create_engine(f"sqlite:///{other}")
        with engine.connect() as connection:
            context.configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        """,
}

_REVISION_PY = '''\
"""e2e revision {revision}"""
from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None

UPGRADE = {upgrade!r}
DOWNGRADE = {downgrade!r}


def upgrade():
    for statement in UPGRADE:
        op.execute(statement)


def downgrade():
    for statement in DOWNGRADE:
        op.execute(statement)
'''

_SUMMARY = re.compile(r"branches: (\d+) created, (\d+) deleted(?:, (\d+) kept)?")
_RESETS = re.compile(r"resets: (\d+) done, (\d+) skipped as clean")


def _statements(sql: str | Sequence[str]) -> list[str]:
    return [sql] if isinstance(sql, str) else list(sql)


def postgres_pids(fragment: str | Path) -> list[int]:
    """Live postgres processes whose command line or working directory contains ``fragment``."""
    fragment = str(fragment)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = ""
            with contextlib.suppress(OSError):
                cwd = os.readlink(entry / "cwd")
        except (OSError, IndexError):
            continue
        if fragment in cmdline or fragment in cwd:
            found.append(int(entry.name))
    return found


def kill_postgres(fragment: str | Path) -> None:
    """SIGKILL every postgres process under ``fragment`` (teardown of a test that leaked)."""
    for pid in postgres_pids(fragment):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while postgres_pids(fragment) and time.monotonic() < deadline:
        time.sleep(0.05)


def new_scratch_dir(prefix: str) -> Path:
    """A fresh directory the embedded server's unprivileged user can traverse."""
    path = SCRATCH_ROOT / f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o755)
    return path


def remove_scratch_dir(path: Path) -> None:
    kill_postgres(path)
    shutil.rmtree(path, ignore_errors=True)


def output_of(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


@dataclass
class Summary:
    """The figures of the plugin's terminal summary block."""

    text: str
    created: int
    deleted: int
    kept: int
    resets: int | None
    clean: int | None

    @classmethod
    def parse(cls, text: str) -> Summary:
        assert "pytest-neon-alembic" in text, f"no summary block in output:\n{text}"
        match = _SUMMARY.search(text)
        assert match, f"no 'branches:' line in output:\n{text}"
        resets = _RESETS.search(text)
        return cls(
            text=text,
            created=int(match.group(1)),
            deleted=int(match.group(2)),
            kept=int(match.group(3) or 0),
            resets=int(resets.group(1)) if resets else None,
            clean=int(resets.group(2)) if resets else None,
        )

    def line(self, prefix: str) -> str:
        for line in self.text.splitlines():
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting with {prefix!r} in:\n{self.text}")


class NeonProject:
    """A project directory for inner sessions, with its own plugin state directory."""

    default_revisions = DEFAULT_REVISIONS

    def __init__(
        self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cache_dir: Path
    ) -> None:
        self.pytester = pytester
        self._monkeypatch = monkeypatch
        self.cache_dir = cache_dir
        self.state_dirs: list[Path] = []
        self.state_dir = self.new_state_dir()

    def new_state_dir(self) -> Path:
        """Switch the inner sessions to a new, empty state directory (shared cache); return it."""
        state_dir = new_scratch_dir("pna-e2e")
        self.state_dirs.append(state_dir)
        (state_dir / "cache").symlink_to(self.cache_dir, target_is_directory=True)
        self._monkeypatch.setenv(STATE_DIR_ENV, str(state_dir))
        self.state_dir = state_dir
        return state_dir

    @property
    def path(self) -> Path:
        return self.pytester.path

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    # -- writing the project ----------------------------------------------------------

    def write_alembic(
        self,
        env: str = "connect",
        revisions: Sequence[Revision] = DEFAULT_REVISIONS,
        *,
        ini: bool = True,
        script_location: str = "migrations",
        env_prologue: str = "",
        configure_args: str = "",
    ) -> Path:
        """Write alembic.ini (unless ``ini=False``), migrations/env.py and the revisions.

        ``env_prologue``: code put at the top of env.py; ``configure_args``: extra
        keyword arguments of env.py's ``context.configure(connection=connection, ...)``.
        """
        migrations = self.path / "migrations"
        versions = migrations / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        env_source = textwrap.dedent(env_prologue) + textwrap.dedent(ENV_PY[env])
        if configure_args:
            env_source = env_source.replace(
                "context.configure(connection=connection)",
                f"context.configure(connection=connection, {configure_args})",
            )
        (migrations / "env.py").write_text(env_source)
        (migrations / "script.py.mako").write_text("# unused by the e2e tests\n")
        down_revision = None
        for revision, upgrade, downgrade in revisions:
            (versions / f"{revision}_e2e.py").write_text(
                _REVISION_PY.format(
                    revision=revision,
                    down_revision=down_revision,
                    upgrade=_statements(upgrade),
                    downgrade=_statements(downgrade),
                )
            )
            down_revision = revision
        ini_path = self.path / "alembic.ini"
        if ini:
            ini_path.write_text(
                "[alembic]\n"
                f"script_location = {script_location}\n"
                "sqlalchemy.url = postgresql://nobody:nothing@127.0.0.1:1/not-used\n"
            )
        return ini_path

    def write_contract_tests(self) -> None:
        """Inner test modules covering the fixture contract on the default project.

        They need the default revisions and ``DATABASE_URL=sentinel``; they record
        branch ids in ``shared_ids.txt``. Expected: 31 passed, 7 branches created
        (migration, read-only, dirty, isolated, and three module-shared ones).
        """
        for source in sorted(CONTRACT_DIR.glob("*.py")):
            name = source.name if source.name.startswith("e2e_") else "test_" + source.name
            shutil.copyfile(source, self.path / name)

    # -- running inner sessions ---------------------------------------------------------

    def run(self, *args: str, timeout: float = 120) -> pytest.RunResult:
        """One inner pytest session in a subprocess, in the project directory."""
        return self.pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)

    def subprocess_env(self) -> dict[str, str]:
        """The environment inner sessions get (for tests that start pytest themselves)."""
        env = os.environ.copy()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.path), env.get("PYTHONPATH")]))
        return env

    @staticmethod
    def output(result: pytest.RunResult) -> str:
        return output_of(result)

    @staticmethod
    def summary(result: pytest.RunResult) -> Summary:
        return Summary.parse(output_of(result))

    @staticmethod
    def summary_of(output: str) -> Summary:
        return Summary.parse(output)

    # -- what is left afterwards ----------------------------------------------------------

    def runs_left(self) -> list[Path]:
        return sorted(self.runs_dir.iterdir()) if self.runs_dir.is_dir() else []

    def servers_left(self) -> list[int]:
        return postgres_pids(self.state_dir)

    @staticmethod
    def postgres_pids(fragment: str | Path) -> list[int]:
        return postgres_pids(fragment)

    def assert_nothing_left(self) -> None:
        runs = self.runs_left()
        assert not runs, f"run directories left behind: {[p.name for p in runs]}"
        servers = self.servers_left()
        assert not servers, f"postgres processes left running under {self.state_dir}: {servers}"


@pytest.fixture(scope="session")
def e2e_cache_dir() -> Iterator[Path]:
    """The plugin's cache (initdb template, snapshots) shared by this session's inner runs.

    Per outer session (per xdist worker) and removed at its end: the plugin keeps
    a snapshot per project path, and every pytester directory is a new path.
    """
    cache_dir = new_scratch_dir("pna-e2e-cache")
    try:
        yield cache_dir
    finally:
        remove_scratch_dir(cache_dir)


@pytest.fixture
def neon_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, e2e_cache_dir: Path
) -> Iterator[NeonProject]:
    """A project directory for inner sessions, with a private plugin state directory.

    The inner sessions see ``DATABASE_URL=sentinel`` and none of the Neon or
    xdist variables of the outer run.
    """
    monkeypatch.setenv("DATABASE_URL", SENTINEL)
    for name in list(os.environ):
        if name.startswith(("NEON_", "PYTEST_XDIST_", "PYTEST_NEON_ALEMBIC_PG")) or name in (
            "PYTEST_ADDOPTS",
            "OTHER_URL",
        ):
            monkeypatch.delenv(name)
    project = NeonProject(pytester, monkeypatch, e2e_cache_dir)
    try:
        yield project
    finally:
        for state_dir in project.state_dirs:
            remove_scratch_dir(state_dir)


@pytest.fixture(scope="module")
def local_server(e2e_cache_dir: Path) -> Iterator[object]:
    """An embedded PostgreSQL started for one test module, for ``--neon-local-url`` tests.

    It is ``pytest_neon_alembic.server.embedded.EmbeddedServer``; ``admin_url``
    is its superuser URL.
    """
    from pytest_neon_alembic.server.embedded import EmbeddedServer

    scratch = new_scratch_dir("pna-e2e-server")
    try:
        server = EmbeddedServer.start(scratch / "run", e2e_cache_dir)
        try:
            yield server
        finally:
            with contextlib.suppress(Exception):
                server.stop()
    finally:
        remove_scratch_dir(scratch)


@pytest.fixture
def dead_run_owner() -> Callable[[str], RunOwner]:
    """Makes the owner record (``backends.neon.owner.RunOwner``) of a run on this machine
    whose owning process is gone: a process that started, was recorded, and was killed."""

    def make(run_id: str) -> RunOwner:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            return RunOwner.of_process(child.pid, run_id)
        finally:
            child.kill()
            child.wait()

    return make
