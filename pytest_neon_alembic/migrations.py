"""Alembic: find the project's configuration and upgrade a branch to head in-process.

The branch's connection is injected as ``config.attributes["connection"]``
(pytest-alembic's convention). Real ``env.py`` files use the injected object in
one of two shapes: they call ``.connect()`` on it (pytest-alembic's snippet; an
Engine works there, a SQLAlchemy 2 Connection does not), or they use it as a
Connection directly and may commit on it themselves (an Engine fails there, and
so does a Connection already inside ``begin()``). We inject a Connection that
also answers ``.connect()``, outside any transaction, so both shapes work
without the user choosing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from .errors import ForeignDatabaseError, MigrationError
from .redact import mask_text
from .urls import sqlalchemy_url

# Where Alembic's configuration is looked for when no option names it: the rootdir's
# alembic.ini (`alembic init`), else Flask-Migrate's (`flask db init` puts it in migrations/).
ALEMBIC_INI_CANDIDATES = ("alembic.ini", "migrations/alembic.ini")

# SQLSTATEs of "that does not exist": what a history that cannot start from an empty
# database fails with (its first revision alters a table that create_all() makes).
UNDEFINED_OBJECT_STATES = {"42P01", "42703", "42704", "3F000", "42883"}

START_HINT = (
    "If this history does not start from an empty database (its first revision changes "
    "tables that `create_all()` or a schema dump makes), start the migration branch the "
    "same way: yield `MigrationStart(create=..., stamp=...)` from a `neon_migration_context` "
    "fixture in conftest.py (README: Histories that do not start from an empty database). "
    "The migrated state stays cached."
)

ENV_PY_SNIPPET = """\
    connectable = config.attributes.get("connection", None)
    if connectable is None:
        connectable = engine_from_config(config.get_section(config.config_ini_section), ...)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()"""


class InjectedConnection(Connection):
    """A Connection that also behaves like an Engine's ``connect()`` for env.py files."""

    @contextlib.contextmanager
    def connect(self) -> Iterator[InjectedConnection]:  # type: ignore[override]
        # The caller's `with ... as connection:` must not close our connection:
        # we commit and verify after env.py returns.
        yield self


@contextlib.contextmanager
def injected_connection(connection_string: str) -> Iterator[InjectedConnection]:
    """A Connection on the database that env.py can use in either shape, outside any
    transaction (what the plugin injects as ``config.attributes["connection"]``)."""
    engine = sa.create_engine(sqlalchemy_url(connection_string), poolclass=NullPool)
    engine._connection_cls = InjectedConnection  # connect() returns our subclass
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def find_alembic_ini(rootdir: Path) -> Path | None:
    """The project's Alembic configuration when no option names one."""
    for candidate in ALEMBIC_INI_CANDIDATES:
        path = rootdir / candidate
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class MigrationStart:
    """How the migration branch starts when the history cannot start from an empty database.

    ``create(connection)`` runs first on the empty branch (for example
    ``Base.metadata.create_all`` or loading a schema dump), in a transaction
    that is committed; then the branch is stamped at ``stamp`` (a revision,
    ``"heads"``, or ``None`` for no stamp) and upgraded to head from there.
    Yield one from ``neon_migration_context``; the migrated state stays cached.
    """

    create: Callable[[Connection], Any] | None = None
    stamp: str | None = "heads"

    def describe(self) -> str:
        name = getattr(self.create, "__qualname__", None) or type(self.create).__name__
        steps = [f"{name}()"] if self.create is not None else []
        if self.stamp:
            steps.append(f"stamp {self.stamp}")
        return " + ".join(steps) or "nothing"


@dataclass(frozen=True)
class AlembicProject:
    """A project's Alembic configuration, located once per session."""

    ini_path: Path

    def config(self, *, require_env_py: bool = True):  # -> alembic.config.Config
        """The project's Alembic Config, with its script location resolved.

        ``require_env_py=False`` (pytest-alembic's ``alembic_config``) lets a
        missing env.py fail where pytest-alembic fails, in the checks that run it.
        """
        from alembic.config import Config

        if not self.ini_path.is_file():
            raise MigrationError(f"Alembic configuration {self.ini_path} does not exist.")
        config = Config(str(self.ini_path))
        try:
            location = config.get_main_option("script_location")
        except Exception as error:  # configparser errors on a malformed file
            raise MigrationError(f"Cannot read {self.ini_path}: {error}") from error
        given = location
        if not location:
            location = self._default_script_location(config)
        resolved = self._resolve_script_location(location, require_env_py)
        if resolved != given:
            config.set_main_option("script_location", resolved.replace("%", "%%"))
        return config

    def _default_script_location(self, config) -> str:
        """No script_location in the ini: pyproject.toml's [tool.alembic] (Alembic >= 1.16),
        else the ini's own folder when it holds env.py (Flask-Migrate's layout), else
        ``migrations`` beside the ini (pytest-alembic's default)."""
        toml = self.ini_path.parent / "pyproject.toml"
        if toml.is_file() and hasattr(config, "get_alembic_option"):
            from alembic.config import Config

            with contextlib.suppress(Exception):  # an unreadable pyproject.toml: no opinion
                location = Config(str(self.ini_path), toml_file=str(toml)).get_alembic_option(
                    "script_location"
                )
                if location:
                    return location
        if (self.ini_path.parent / "env.py").is_file():
            return str(self.ini_path.parent)
        return "migrations"

    def _resolve_script_location(self, location: str, require_env_py: bool = True) -> str:
        """Relative locations are read from the ini's folder, whatever the working directory."""
        if ":" in location and not Path(location).is_absolute():
            return location  # package resource, e.g. "myapp:migrations"
        path = Path(location)
        if not path.is_absolute():
            beside_ini = self.ini_path.parent / path
            path = beside_ini if beside_ini.exists() or not path.exists() else path.resolve()
        if require_env_py and not (path / "env.py").is_file():
            raise MigrationError(
                f"script_location in {self.ini_path} is {location!r}, but {path} has no env.py. "
                "Point script_location at the folder `alembic init` created (the one with "
                "env.py and versions/), e.g. `script_location = %(here)s/alembic`."
            )
        return str(path)

    def cache_key(self, *, parent: str | None = None, server: str = "") -> str:
        """A hash of what decides the migrated state: the ini, env.py, every file of the
        script location and of the ``version_locations`` (symlinks followed), the
        parent it was migrated from and the server (``server_fingerprint``).

        Code that migrations import from the application is not part of it;
        ``--neon-no-cache`` forces a migration when that changed.
        """
        script = self.script_directory()
        digest = hashlib.sha256(self.ini_path.read_bytes())
        digest.update(f"\0parent={parent or ''}\0server={server}\0".encode())
        locations = [Path(script.dir)]
        locations += [Path(p) for p in getattr(script, "_version_locations", ())]
        for number, root in enumerate(dict.fromkeys(p.resolve() for p in locations)):
            for path in _files_under(root):
                digest.update(f"{number}:{path.relative_to(root)}\0".encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()

    def script_directory(self):  # -> alembic.script.ScriptDirectory
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.config())

    def project_id(self) -> str:
        """Which project a cached state belongs to (one cache entry per project is kept)."""
        return hashlib.sha256(str(self.ini_path.resolve()).encode()).hexdigest()

    def upgrade(self, connection_string: str, start: MigrationStart | None = None) -> None:
        """Run ``alembic upgrade heads`` in this process on the given database.

        With ``start``, its ``create`` runs first and the database is stamped
        before the upgrade. Raises MigrationError naming the revision and the
        database error when a migration fails, and when env.py migrated some
        other database.
        """
        from alembic.runtime.environment import EnvironmentContext
        from alembic.script import ScriptDirectory

        config = self.config()
        script = ScriptDirectory.from_config(config)
        with injected_connection(connection_string) as connection:
            config.attributes["connection"] = connection
            if start is not None:
                self._start(config, connection, start)
            try:
                # What `alembic.command.upgrade` does, keeping hold of the context
                # env.py configured: it tells which connection env.py used.
                with EnvironmentContext(
                    config,
                    script,
                    fn=lambda revision, _context: script._upgrade_revs("heads", revision),
                    destination_rev="heads",
                ) as environment:
                    script.run_env()
                    migration_context = environment.get_context()
                if connection.in_transaction():
                    connection.commit()
            except (Exception, SystemExit) as error:  # sys.exit() in env.py: one clear error
                with contextlib.suppress(Exception):
                    connection.rollback()
                raise self._explain_failure(error, script) from error
            self._check_migrated(connection, migration_context, script)

    def _start(self, config, connection: Connection, start: MigrationStart) -> None:
        from alembic import command

        try:
            if start.create is not None:
                start.create(connection)
                connection.commit()
            if start.stamp:
                command.stamp(config, start.stamp)
                if connection.in_transaction():
                    connection.commit()
        except Exception as error:
            with contextlib.suppress(Exception):
                connection.rollback()
            raise MigrationError(
                f"neon_migration_context's MigrationStart ({start.describe()}) failed: "
                f"{type(error).__name__}: {mask_text(str(error).strip())}"
            ) from error

    def _check_migrated(self, connection: Connection, migration_context, script) -> None:
        """Detect an env.py that migrated some other database: the branch must be at head.

        Read with env.py's own version table settings. An env.py that builds its
        own engine from DATABASE_URL (pytest-neon's way) reaches the right
        database too, so only the branch's state decides.
        """
        from alembic.runtime.migration import MigrationContext

        options = {
            "version_table": migration_context.version_table,
            "version_table_schema": migration_context.version_table_schema,
        }
        current = set(MigrationContext.configure(connection, opts=options).get_current_heads())
        connection.rollback()
        heads = set(script.get_heads())
        if not heads <= current:
            raise MigrationError(
                f"`alembic upgrade head` finished, but the migration branch is not at head (it is "
                f"at {sorted(current) or 'no revision'}; head is {sorted(heads)}). Your env.py "
                f"({Path(script.dir) / 'env.py'}) ignored the connection the plugin injects as "
                "config.attributes['connection'] and migrated another database. Make "
                "run_migrations_online() use it:\n\n" + ENV_PY_SNIPPET
            )

    def _explain_failure(self, error: BaseException, script) -> MigrationError:
        if isinstance(error, MigrationError):
            return error
        if isinstance(error, ForeignDatabaseError):  # env.py reached for another database
            return MigrationError(str(error))
        revision = failing_revision(error, script)
        where = "Alembic failed"
        if revision is not None:
            where = (
                f"Migration {revision.revision} ({revision.doc or 'no message'}, "
                f"{revision.path}) failed"
            )
        if isinstance(error, SystemExit):
            detail = (
                f"sys.exit({error.code!r}) was called while migrating (in env.py or a revision), "
                "which would end the test run. Raise an exception instead, or skip the exit "
                "when config.attributes['connection'] is set."
            )
        elif isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
            # The database's own words and the statement, without SQLAlchemy's wrapping.
            detail = f"{type(error.orig).__name__}: {str(error.orig).strip()}"
            if error.statement:
                detail += f"\nSQL: {error.statement.strip()}"
        else:
            detail = f"{type(error).__name__}: {str(error).strip()}"
        from .server.extensions import missing_extension, remedies

        extension = missing_extension(detail)
        if extension is not None:
            detail += "\n" + remedies(extension)
        message = f"{where}: {mask_text(detail)}"
        if is_undefined_object(error):
            message += "\n" + START_HINT
        return MigrationError(message)


def is_undefined_object(error: BaseException) -> bool:
    """The database said a table, column, type or schema the migration uses does not exist."""
    current: BaseException | None = error
    while current is not None:
        state = getattr(getattr(current, "orig", None), "sqlstate", None) or getattr(
            current, "sqlstate", None
        )
        if state in UNDEFINED_OBJECT_STATES:
            return True
        current = current.__cause__ or current.__context__
    return False


def _files_under(root: Path) -> list[Path]:
    """Every file under *root*, through symlinked files and directories (once each)."""
    found: list[Path] = []
    seen: set[str] = set()
    for directory, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:  # a symlink loop, or a directory reached twice
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        found += [Path(directory, name) for name in sorted(filenames)]
    return [path for path in found if path.is_file()]


def server_fingerprint(connection_string: str) -> str:
    """The server's version and the extensions it offers: the same migrations can
    leave another state on another build (``CREATE EXTENSION IF NOT EXISTS``)."""
    import psycopg

    with psycopg.connect(connection_string, connect_timeout=10) as connection:
        row = connection.execute(
            "SELECT current_setting('server_version_num'), string_agg(name || '=' || "
            "coalesce(default_version, ''), ',' ORDER BY name) FROM pg_available_extensions"
        ).fetchone()
    return f"{row[0]}:{row[1]}" if row else ""


def failing_revision(error: BaseException, script):
    """The revision whose script raised, found from the traceback's frames."""
    by_path = {}
    for revision in script.walk_revisions():
        if revision.path:
            by_path[str(Path(revision.path).resolve())] = revision
    current: BaseException | None = error
    while current is not None:
        for frame in reversed(traceback.extract_tb(current.__traceback__)):
            found = by_path.get(str(Path(frame.filename).resolve()))
            if found is not None:
                return found
        current = current.__cause__ or current.__context__
    return None
