"""The safety boundary: the sandbox URL in the connection variables, and the connection guard.

From the plugin's earliest hook, before conftest.py files and the application
are imported, ``DATABASE_URL`` (and every ``--neon-env-var`` name) holds
``SANDBOX_URL``: valid syntax, so ``create_engine(os.environ["DATABASE_URL"])``
at import works, but it leads to no database. During a test (or the setup of a
fixture that asked for a branch) it holds that branch; the user's value comes
back at the end of the session.

The guard refuses, before it connects, every connection of this process to a
database the run did not create: SQLAlchemy engines of any driver, async ones
included, and psycopg 3, psycopg2 and asyncpg used directly (``hooks.py``
passes each connection's target to ``check``).
It is not a security boundary against hostile code, it is a seat belt: no test
run reaches a developer's database by accident.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import sysconfig
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import ForeignDatabaseError
from .redact import mask_url
from .urls import LOOPBACK

SANDBOX_HOST = "sandbox.pytest-neon-alembic.invalid"  # .invalid never resolves (RFC 2606)
SANDBOX_DATABASE = "no_branch_outside_a_test"
SANDBOX_URL = f"postgresql://pytest_neon_sandbox:sandbox@{SANDBOX_HOST}:5432/{SANDBOX_DATABASE}"

FIXTURES_HINT = (
    "neon_branch_isolated, neon_branch_shared, neon_branch_dirty or neon_branch_readonly "
    "(or neon_engine, neon_session, ...)"
)


def is_sandbox_url(url: str | None) -> bool:
    """Whether ``url`` is the sandbox (any driver, any form SQLAlchemy renders it in)."""
    try:
        return bool(url) and urlsplit(str(url)).hostname == SANDBOX_HOST
    except ValueError:
        return False


# -- the connection variables ----------------------------------------------------------------


class ConnectionVariables:
    """The environment variables the plugin owns for one session, and the user's values."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)
        self._saved: dict[str, str | None] | None = None

    def take(self) -> None:
        """Save the user's values and put the sandbox in their place."""
        if self._saved is None:
            self._saved = {name: os.environ.get(name) for name in self.names}
        for name in self.names:
            os.environ[name] = SANDBOX_URL

    def give_back(self) -> None:
        """The user's values, exactly as they were before the session."""
        if self._saved is None:
            return
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved = None

    @contextmanager
    def pointing_at(self, url: str) -> Iterator[None]:
        """Every variable set to ``url``, the previous values back afterwards."""
        previous = {name: os.environ.get(name) for name in self.names}
        for name in self.names:
            os.environ[name] = url
        try:
            yield
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


# -- where a connection goes -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a connection goes: host (or socket directory), port and database."""

    host: str
    port: int | None
    database: str
    shown: str = ""  # the URL or DSN as given, masked, for messages

    @property
    def key(self) -> tuple[str, int | None, str]:
        host = "127.0.0.1" if self.host in LOOPBACK else self.host
        return host, self.port, self.database

    def __str__(self) -> str:
        return self.shown or f"{self.host}:{self.port}/{self.database}"


def target_of_url(url: str) -> Target:
    """The target of a URL (``postgresql://``, ``postgresql+driver://``, any scheme)."""
    parts = urlsplit(url)
    query = dict(
        pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair
    )  # ?host=/socket/dir is libpq's way to name a socket
    host = parts.hostname or unquote(query.get("host", "")) or os.environ.get("PGHOST", "")
    port = parts.port or _int(query.get("port") or os.environ.get("PGPORT")) or 5432
    database = unquote(parts.path.lstrip("/")) or unquote(query.get("dbname", ""))
    user = unquote(parts.username or "") or os.environ.get("PGUSER", "")
    return Target(host, port, database or os.environ.get("PGDATABASE") or user, mask_url(url))


def target_of_params(params: Mapping[str, Any], shown: str = "") -> Target:
    """The target of libpq-style keywords, with libpq's environment defaults."""

    def get(*names: str) -> str:
        for name in names:
            value = params.get(name)
            if value not in (None, ""):
                return str(value)
        return ""

    host = get("host", "hostaddr") or os.environ.get("PGHOST", "")
    port = _int(get("port") or os.environ.get("PGPORT")) or 5432
    user = get("user", "username") or os.environ.get("PGUSER", "")
    database = get("dbname", "database", "db") or os.environ.get("PGDATABASE", "") or user
    if not shown:
        shown = mask_url(f"host={host} port={port} dbname={database} user={user}")
    return Target(host.split(",")[0], port, database, shown)


def _int(value: Any) -> int | None:
    try:
        return int(str(value).split(",")[0])
    except (TypeError, ValueError):
        return None


class AllowedPatterns:
    """ini ``neon_allowed_urls``: ``host[:port][/database]`` patterns (``*`` globs), or URLs."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[tuple[str, str, str]] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            if "://" in text:  # a URL: its host, port and database count
                text = text.split("://", 1)[1].rpartition("@")[2].split("?", 1)[0]
            address, _, database = text.partition("/")
            host, port = address, ""
            if address.count(":") == 1:
                host, _, port = address.partition(":")
            database, port = database or "*", port or "*"
            host = host.lower()
            self.patterns.append(("127.0.0.1" if host in LOOPBACK else host, port, database))

    def allows(self, target: Target) -> bool:
        host, port, database = target.key
        for host_pattern, port_pattern, database_pattern in self.patterns:
            if (
                fnmatch.fnmatchcase(host.lower(), host_pattern)
                and fnmatch.fnmatchcase(str(port), port_pattern)
                and fnmatch.fnmatchcase(database, database_pattern)
            ):
                return True
        return False


@dataclass(frozen=True)
class OwnedTargets:
    """What one run created, as the guard compares it: databases, whole servers, and
    database names of the run on a server that is not its own."""

    databases: frozenset[tuple[str, int | None, str]] = frozenset()
    servers: frozenset[tuple[str, int | None]] = frozenset()
    prefixes: frozenset[tuple[str, int | None, str]] = frozenset()

    def owns(self, target: Target) -> bool:
        key = target.key
        return (
            key in self.databases
            or key[:2] in self.servers
            or any(key[:2] == p[:2] and key[2].startswith(p[2]) for p in self.prefixes)
        )

    @classmethod
    def of_run(cls, run: Any) -> OwnedTargets:
        """From a run directory (``coordination.RunDirectory``): its branches and backend."""
        databases = {target_of_url(r.branch.connection_string).key for r in run.branches()}
        servers, prefixes = set(), set()
        state = run.done_quietly("backend") or {}
        if state.get("kind") == "local":
            admin = target_of_url(state["local"]["admin_url"])
            databases.add(admin.key)
            server = state.get("server")
            if server:  # the embedded server the run started: all of it
                servers.add(admin.key[:2])
                if server.get("socket_dir"):
                    servers.add((server["socket_dir"], admin.port))
            else:  # a server given with --neon-local-url: the run's databases
                prefixes.add((*admin.key[:2], f"pytest_{run.run_id}_"))
        return cls(frozenset(databases), frozenset(servers), frozenset(prefixes))


# -- the guard -------------------------------------------------------------------------------


class ConnectionGuard:
    """Refuses connections to databases the run did not create.

    ``owns`` answers for the run (its registry of branches, its server);
    ``allowed`` is the user's opt-out. ``variables`` tells messages which
    environment variables hold the sandbox.
    """

    def __init__(
        self,
        owns: Callable[[Target], bool],
        allowed: AllowedPatterns,
        variables: ConnectionVariables,
    ) -> None:
        self.owns = owns
        self.allowed = allowed
        self.variables = variables

    def check(self, target: Target) -> None:
        if self.allowed.allows(target) or self.owns(target):
            return
        raise ForeignDatabaseError(self.refusal(target))

    def refusal(self, target: Target) -> str:
        names = " / ".join(self.variables.names) or "DATABASE_URL"
        origin = _origin()
        where = f" It came from {origin}." if origin else ""
        if origin and _is_env_py(origin):
            from .migrations import ENV_PY_SNIPPET

            what = str(target)
            if target.host == SANDBOX_HOST:
                what = f"the sandbox URL {names} holds outside tests ({target})"

            return (
                f"pytest-neon-alembic refused a connection to {what}: Alembic's env.py "
                f"({origin}) ignored the connection the plugin injects as "
                "config.attributes['connection'] and connected to a database this test run did "
                "not create (nothing was touched there). Make run_migrations_online() use the "
                "injected connection:\n\n" + ENV_PY_SNIPPET
            )
        if target.host == SANDBOX_HOST:
            return (
                f"pytest-neon-alembic refused a connection to the sandbox URL ({target}): "
                f"outside a test that asked for a branch, {names} holds this placeholder, "
                f"which leads to no database.{where} Ask for a branch in the test or fixture "
                f"that uses the database ({FIXTURES_HINT}, or @pytest.mark.neon), and read "
                f"{names} while it runs."
            )
        return (
            f"pytest-neon-alembic refused a connection to {target}: this test run did not create "
            f"that database, and tests only reach the branches they ask for.{where} Use a "
            f"branch fixture ({FIXTURES_HINT}) or {names}, which holds the test's branch. If "
            "the test really needs that database, allow it in the ini file: "
            "neon_allowed_urls = host:port/database (patterns with *)."
        )


_guards: list[ConnectionGuard] = []  # a stack: pytester runs sessions inside sessions


def activate(guard: ConnectionGuard) -> None:
    """Guard from now on (``hooks.install()`` makes the connections pass through ``check``)."""
    _guards.append(guard)


def active() -> bool:
    return bool(_guards)


def deactivate(guard: ConnectionGuard) -> None:
    if guard in _guards:
        _guards.remove(guard)


class _Trust(threading.local):
    depth = 0  # > 0 while this thread's plugin code connects where the records do not say


_trust = _Trust()


@contextmanager
def trusted() -> Iterator[None]:
    """The plugin's own connections to servers the run's records do not name: while it
    starts a backend (before the run has recorded its server), and a kept server's
    standby (started by whichever run first read from it). No test code runs inside.

    For the calling thread only: a thread the app started (a scheduler, a pool
    warmer) that connects meanwhile is still checked.
    """
    _trust.depth += 1
    try:
        yield
    finally:
        _trust.depth -= 1


def check(target: Target) -> None:
    """Refuse ``target`` if a guard is active and the run does not own it."""
    if _guards and not _trust.depth:
        _guards[-1].check(target)


def _library_dirs() -> tuple[str, ...]:
    dirs = {str(Path(__file__).parent), sysconfig.get_paths()["stdlib"]}
    for name in ("sqlalchemy", "psycopg", "psycopg2", "asyncpg", "alembic", "_pytest", "pluggy"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            dirs.add(str(Path(module.__file__).parent))
    return tuple(sorted(dirs))


def _origin() -> str | None:
    """The innermost frame of the user's code that led to the connection, as ``file:line``.

    An env.py frame wins: Alembic runs it from its own code, and it is the
    file to fix.
    """
    frames = traceback.extract_stack()
    for frame in reversed(frames):
        if Path(frame.filename).name == "env.py" and "alembic" in sys.modules:
            return f"{frame.filename}:{frame.lineno}"
    libraries = _library_dirs()
    for frame in reversed(frames):
        filename = frame.filename
        if filename.startswith("<") or filename.startswith(libraries):
            continue
        if "site-packages" in filename and "/tests/" not in filename:
            continue
        return f"{filename}:{frame.lineno}"
    return None


def _is_env_py(origin: str) -> bool:
    return Path(origin.rpartition(":")[0]).name == "env.py"
