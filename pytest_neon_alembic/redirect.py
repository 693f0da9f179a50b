"""The app's own engines, sessions and async engines follow the running test's branch.

An engine built from the sandbox URL (``DATABASE_URL`` at import, in a
session fixture, in a Flask-SQLAlchemy ``db``), or named in ini
``neon_engines`` / ``neon_sessions`` / ``neon_sessionmakers``, connects to
the branch the running test asked for. Three class-level SQLAlchemy hooks do
it, for every engine, sync and async, whatever the driver:

* ``do_connect`` rewrites the connection parameters to the current branch
  (and refuses, with one clear error, when no test asked for a branch);
* pool ``checkout`` drops a pooled connection made for another branch, before
  the branch's last reset, or on another event loop (pytest-asyncio gives each
  test its own), so the engine reconnects — no ``pool_pre_ping`` needed;
* with the ``transaction`` strategy, a sync psycopg engine's new connections
  are the test's one connection in its outer transaction, where ``commit()``
  and ``rollback()`` work on a savepoint: the app commits, nothing persists.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError, NoBranchError
from .guard import SANDBOX_HOST

NO_BRANCH_HINT = (
    "Ask for a branch: a fixture argument (neon_branch_isolated, neon_branch_shared, "
    "neon_branch_dirty, neon_branch_readonly, neon_engine, neon_session, ...), the marker "
    '@pytest.mark.neon (isolated) or @pytest.mark.neon("readonly" | "dirty" | "shared"), '
    "or ini neon_default_branch for the whole suite."
)
_FOLLOW = "_neon_follows_the_test"  # set on a dialect whose engine follows the test
_DATABASE_KEY = {"psycopg": "dbname", "psycopg2": "dbname", "psycopg2cffi": "dbname"}


@dataclass
class OuterTransaction:
    """The test's one connection in its outer transaction (``transaction`` strategy).

    Opened on first use, by ``neon_session`` or by an app engine; rolled back
    after the test. ``connect`` opens it on the plugin's engine.
    """

    connect: Callable[[], Any]  # -> sqlalchemy Connection
    connection: Any = None
    _savepoints: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def sqlalchemy_connection(self) -> Any:
        if self.connection is None:
            self.connection = self.connect()
            self.connection.begin()
        return self.connection

    def dbapi_connection(self) -> Any:
        return self.sqlalchemy_connection().connection.dbapi_connection

    def savepoint_name(self) -> str:
        return f"neon_app_{next(self._savepoints)}"

    def rollback(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.rollback()
            self.connection.close()
            self.connection = None


@dataclass(frozen=True)
class FollowTarget:
    """Where followed engines go now: a branch's URL, and the test's outer transaction."""

    url: str
    outer: OuterTransaction | None = None


class Follow:
    """The current target of every followed engine, and the branches' reset counts."""

    def __init__(self) -> None:
        self._targets: list[FollowTarget] = []
        self._resets: dict[str, int] = {}
        self.explicit: list[Any] = []  # named in ini neon_engines/..., restored at the end

    @contextlib.contextmanager
    def pointing_at(self, url: str, outer: OuterTransaction | None = None) -> Iterator[None]:
        self._targets.append(FollowTarget(url, outer))
        try:
            yield
        finally:
            self._targets.pop()

    def current(self) -> FollowTarget | None:
        return self._targets[-1] if self._targets else None

    def branch_was_reset(self, url: str) -> None:
        self._resets[url] = self._resets.get(url, 0) + 1

    def key(self, target: FollowTarget | None) -> tuple[Any, ...]:
        if target is None:
            return (None,)
        return (target.url, self._resets.get(target.url, 0), id(target.outer), _running_loop())


FOLLOW = Follow()


def _running_loop() -> int | None:
    try:
        return id(asyncio.get_running_loop())
    except RuntimeError:
        return None


def follows(dialect: Any, cparams: dict[str, Any]) -> bool:
    """Whether this connection belongs to an engine that follows the test: one built from
    the sandbox URL, or named in the ini file."""
    return getattr(dialect, _FOLLOW, False) or cparams.get("host") == SANDBOX_HOST


def route(dialect: Any, connection_record: Any, cparams: dict[str, Any]) -> Any:
    """Point a followed engine's new connection at the current branch.

    Returns a DBAPI connection to use instead of connecting (the ``transaction``
    strategy's savepoint connection), or None to connect with the new parameters.
    """
    target = FOLLOW.current()
    if target is None:
        raise NoBranchError(
            "pytest-neon-alembic: an engine built from DATABASE_URL (the sandbox URL outside "
            "tests) or named in ini neon_engines/neon_sessions/neon_sessionmakers was used "
            f"by a test that asked for no database branch. {NO_BRANCH_HINT}"
        )
    parts = urlsplit(target.url)
    cparams.update(
        host=parts.hostname,
        port=parts.port or 5432,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )
    database = unquote(parts.path.lstrip("/"))
    key = _DATABASE_KEY.get(dialect.driver, "database")
    cparams.pop("dbname" if key == "database" else "database", None)
    cparams[key] = database
    options = dict(parse_qsl(parts.query)).get("options")
    if options:
        if key == "dbname":
            cparams["options"] = options
        else:  # asyncpg: server settings instead of libpq options
            settings = dict(
                item.split("=", 1) for item in options.replace("-c ", " ").split() if "=" in item
            )
            cparams["server_settings"] = {**cparams.get("server_settings", {}), **settings}
    connection_record.info["neon_follow"] = FOLLOW.key(target)
    if target.outer is not None and dialect.driver == "psycopg" and not dialect.is_async:
        # The outer transaction is on the plugin's psycopg 3 engine; other drivers commit
        # for real and the branch is reset after the test, as with the branch strategy.
        return SavepointConnection(target.outer)
    return None


def on_checkout(_dbapi_connection: Any, connection_record: Any, _proxy: Any) -> None:
    """A pooled connection of a followed engine serves only its own branch, state and loop."""
    recorded = connection_record.info.get("neon_follow")
    now = FOLLOW.key(FOLLOW.current())
    if recorded is None or recorded == now:
        return
    from sqlalchemy.exc import DisconnectionError

    if recorded[-1] != now[-1]:
        # Made in another event loop (pytest-asyncio's previous test): closing it would
        # need that loop, which is gone. Let it go unclosed; the pool connects anew.
        connection_record.dbapi_connection = None
    raise DisconnectionError("pytest-neon-alembic: made for another branch, reset or loop")


class SavepointConnection:
    """A followed sync engine's connection during a ``transaction``-strategy test.

    It is the test's one connection; ``commit()`` releases a savepoint and
    opens the next, ``rollback()`` goes back to it, ``close()`` leaves the
    connection to the test. Everything else is the real connection's.
    """

    def __init__(self, outer: OuterTransaction) -> None:
        self.__dict__["_outer"] = outer
        self.__dict__["_real"] = outer.dbapi_connection()
        self.__dict__["_savepoint"] = outer.savepoint_name()
        self._execute(f"SAVEPOINT {self._savepoint}")

    def _execute(self, statement: str) -> None:
        cursor = self._real.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()

    def commit(self) -> None:
        self._execute(f"RELEASE SAVEPOINT {self._savepoint}")
        self._execute(f"SAVEPOINT {self._savepoint}")

    def rollback(self) -> None:
        if self._outer.connection is not None:
            self._execute(f"ROLLBACK TO SAVEPOINT {self._savepoint}")

    def close(self) -> None:
        pass

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance checks of the driver (psycopg's TypeInfo)
        return type(self.__dict__["_real"])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # autocommit / isolation level: the outer transaction decides; nothing to change.
        self.__dict__[name] = value


# -- ini neon_engines, neon_sessions, neon_sessionmakers -----------------------------------

KINDS = ("neon_engines", "neon_sessions", "neon_sessionmakers")


def resolve(kind: str, path: str) -> Any:
    """The object an ini path names (``package.module:attribute`` or ``package.module.attr``)."""
    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except Exception as error:
        raise ConfigError(
            f"ini {kind} names {path!r}, which cannot be imported: {type(error).__name__}: "
            f"{error}. Give the import path of the object, e.g. myapp.db:engine."
        ) from None
    return value


def engines_of(kind: str, path: str, value: Any) -> list[Any]:
    """The sync engines behind an object named in ini ``kind`` (validated by type)."""
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
    from sqlalchemy.orm import Session, scoped_session, sessionmaker

    expected = {
        "neon_engines": (Engine, AsyncEngine),
        "neon_sessions": (Session, scoped_session, AsyncSession),
        "neon_sessionmakers": (sessionmaker, async_sessionmaker),
    }[kind]
    if not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in expected)
        raise ConfigError(
            f"ini {kind} names {path!r}, a {type(value).__name__}; it must be a {names}."
        )
    if isinstance(value, scoped_session):
        value = value.session_factory
    if isinstance(value, (sessionmaker, async_sessionmaker)):
        value = value.kw.get("bind")
    elif isinstance(value, (Session, AsyncSession)):
        value = value.bind
    if value is None:
        raise ConfigError(f"ini {kind} names {path!r}, which is bound to no engine.")
    return [getattr(value, "sync_engine", value)]


def follow_named(paths: dict[str, list[str]]) -> list[Any]:
    """Make the engines behind the named objects follow the test; the engines marked."""
    engines = []
    for kind, kind_paths in paths.items():
        for path in kind_paths:
            engines += engines_of(kind, path, resolve(kind, path))
    for engine in engines:
        engine.dispose()  # connections made before now went to the original URL
        setattr(engine.dialect, _FOLLOW, True)
    FOLLOW.explicit = engines
    return engines


def restore_named() -> None:
    """The named engines exactly as they were: their own URL, no branch connections."""
    for engine in FOLLOW.explicit:
        with contextlib.suppress(AttributeError):
            delattr(engine.dialect, _FOLLOW)
        engine.dispose()
    FOLLOW.explicit = []
