"""The embedded server kept running between runs (``--neon-keep-server=MINUTES``).

Starting PostgreSQL is most of what a short run pays for the plugin. With the
option, the first run starts the embedded server in ``<state dir>/kept/<build>``
and leaves it running; later runs use it as they would a server given with
``--neon-local-url``: their own databases, dropped at their end, and the
migrated state cached in it as a template database. Nothing of one run is left
for the next but that cache.

A keeper process (``python -m pytest_neon_alembic.kept_server``) stops the
server once no run has used it for the given minutes, and removes its files,
the superuser password with them. Every start of the plugin, kept or not,
stops a kept server whose keeper is gone (``stop_orphaned``); ``pytest
--neon-cleanup`` stops an idle one at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from .coordination import live_runs
from .errors import ServerError
from .processes import lock_held

if TYPE_CHECKING:  # the server package is imported only where a kept server is used
    from .server.embedded import EmbeddedServer

try:
    import fcntl
except ImportError:  # Windows: no keeper, so no kept server
    fcntl = None  # type: ignore[assignment]

KEPT_DIR = "kept"
_STATE = "server.json"  # EmbeddedServer.to_state(), with the password: mode 0600
_STANDBY = "standby.json"  # the same for its read-only standby
_IDLE = "idle"  # seconds without a run before the keeper stops the server
_KEEPER_LOCK = "keeper.lock"  # held by the keeper for its whole life
_KEEPER_POLL = 1.0
_KEEPER_GRACE = 60  # seconds a new server may wait for its keeper before it is orphaned


def kept_directory(root: Path, pg_version: int | None) -> Path:
    """One kept server per build (the binaries ``--neon-pg-version`` and
    ``PYTEST_NEON_ALEMBIC_PG_BINDIR`` choose) and state directory."""
    from .server.binaries import find_postgres_bindir

    bindir = str(find_postgres_bindir(pg_version))
    return root / KEPT_DIR / hashlib.sha256(bindir.encode()).hexdigest()[:12]


def _start_lock(directory: Path) -> FileLock:
    # Beside the directory, not in it: the keeper deletes the directory.
    return FileLock(str(directory) + ".lock")


def use_kept_server(
    root: Path, pg_version: int | None, idle_minutes: float
) -> tuple[EmbeddedServer, Path]:
    """The kept server of this build (started now if none runs), and its directory; its
    keeper made sure of.

    Raises:
        ServerError: no keeper can run here (no ``fcntl``), or the server did not start.
    """
    if fcntl is None:
        raise ServerError(
            "--neon-keep-server needs file locks (fcntl) to know when the kept server is idle, "
            "and this platform has none. Drop the option."
        )
    from .server.embedded import EmbeddedServer
    from .server.standby import refuse_readers

    directory = kept_directory(root, pg_version)
    directory.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    with _start_lock(directory):
        server = _running_server(directory)
        if server is None:
            _remove(directory)
            directory.mkdir(mode=0o711)
            server = EmbeddedServer.start(
                directory / "server", root / "cache", pg_version=pg_version
            )
            _write_private(directory / _STATE, server.to_state())
            refuse_readers(server)  # they read on the standby (kept_standby)
        (directory / _IDLE).write_text(str(idle_minutes * 60))
        if not _keeper_alive(directory):
            _spawn_keeper(directory, root)
    return server, directory


def kept_standby(directory: Path) -> EmbeddedServer:
    """The kept server's hot standby, started at the first run that reads from it.

    It follows the server, so every run's read-only clone reaches it (after
    ``replay_until``); it goes when the server goes.
    """
    with _start_lock(directory):
        standby = _recorded(directory / _STANDBY)
        return standby if standby is not None else _new_standby(directory)


def renew_standby(directory: Path, stalled: EmbeddedServer) -> EmbeddedServer:
    """A fresh copy of the kept server in place of its standby *stalled*, which stopped
    replaying (``StandbyStalled``): otherwise no later run could read either.

    The copy has every run's read-only clone and role already; a concurrent run
    that reads from the stalled one loses its connections to it.
    """
    with _start_lock(directory):
        current = _recorded(directory / _STANDBY)
        if current is not None and current.pid != stalled.pid:
            return current  # another run renewed it meanwhile
        return _new_standby(directory)  # the stalled one is stopped first


def _new_standby(directory: Path) -> EmbeddedServer:
    """Start the kept server's standby (under ``_start_lock``), replacing any in its place."""
    from .server.standby import start_hot_standby

    primary = _recorded(directory / _STATE)
    if primary is None:
        raise ServerError(
            f"The kept embedded server in {directory} stopped during the run. Run again."
        )
    standby = start_hot_standby(primary, follow=True)
    _write_private(directory / _STANDBY, standby.to_state())
    return standby


def pause_standby(directory: Path) -> None:
    """A run starts: the kept standby, if one runs and has caught up, stops replaying, so
    that it does not replay the run's writes, restores and copies of databases on the
    cores the tests run on. ``replay_until`` lets it catch up to a read-only clone; the
    run's end resumes it (``release_standby``), and it catches up between runs."""
    from .server.standby import pause_replay_if_caught_up

    standby = _recorded(directory / _STANDBY)
    if standby is not None:
        with contextlib.suppress(ServerError):  # gone: started again when a run reads
            pause_replay_if_caught_up(standby)


def release_standby(directory: Path) -> None:
    """A run ends: the kept standby, if one runs, catches up from now on (its replay
    was paused for the run, ``pause_standby``)."""
    from .server.standby import resume_replay

    standby = _recorded(directory / _STANDBY)
    if standby is not None:
        with contextlib.suppress(ServerError):  # gone: started again when a run reads
            resume_replay(standby)


def _write_private(path: Path, state: dict) -> None:
    """A state with a password in it: readable by this user only."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        json.dump(state, file)


def _running_server(directory: Path) -> EmbeddedServer | None:
    """The kept server if it runs and lets the administrator in; else None (stopped)."""
    server = _recorded(directory / _STATE)
    if server is None:
        return None
    import psycopg

    try:
        with psycopg.connect(server.admin_url, connect_timeout=5):
            return server
    except psycopg.Error:
        with contextlib.suppress(ServerError):
            server.stop(discard=True)  # ours, but unusable: a fresh one takes its place
        return None


def _remove(directory: Path) -> None:
    """Stop whatever server still runs in ``directory``, then delete it."""
    from .server.embedded import stop_abandoned_server
    from .server.standby import stop_hot_standby

    stop_hot_standby(directory / "server")
    stop_abandoned_server(directory / "server")
    shutil.rmtree(directory, ignore_errors=True)


def _keeper_alive(directory: Path) -> bool:
    return lock_held(directory / _KEEPER_LOCK)


def _spawn_keeper(directory: Path, root: Path) -> None:
    """Start the keeper, detached from the run (its own session, no inherited secrets)."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([package_parent, *(p for p in sys.path if p)]),
    }
    subprocess.Popen(
        [sys.executable, "-m", "pytest_neon_alembic.kept_server", str(directory), str(root)],
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def stop_orphaned(root: Path) -> list[Path]:
    """Stop kept servers whose keeper is gone (killed): nothing would ever stop them."""
    stopped: list[Path] = []
    if fcntl is None:
        return stopped
    for directory in _kept_directories(root):
        if _keeper_alive(directory) or _younger_than(directory, _KEEPER_GRACE):
            continue
        if _stop_if_unused(directory, idle_for=0):
            stopped.append(directory)
    return stopped


def stop_idle(root: Path) -> list[Path]:
    """``--neon-cleanup``: stop every kept server that no run is using, now."""
    return [d for d in _kept_directories(root) if _stop_if_unused(d, idle_for=0)]


def _kept_directories(root: Path) -> list[Path]:
    base = root / KEPT_DIR
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def _younger_than(directory: Path, seconds: float) -> bool:
    try:
        return time.time() - (directory / _STATE).stat().st_mtime < seconds
    except OSError:
        return False


def _stop_if_unused(directory: Path, *, idle_for: float, since: float = 0.0) -> bool:
    """Stop and delete the kept server if no run is alive and none has been for
    ``idle_for`` seconds (counted from ``since``); never waits for a starting run."""
    root = directory.parent.parent
    if live_runs(root) or time.time() - since < idle_for:
        return False
    try:
        with _start_lock(directory).acquire(timeout=0):
            if live_runs(root):  # a run that started while the lock was being taken
                return False
            _remove(directory)
    except Timeout:
        return False  # a run is starting on it
    return True


def keep(directory: Path, root: Path) -> None:
    """The keeper: stop the server after ``idle`` seconds without a live run in ``root``."""
    try:
        fd = os.open(directory / _KEEPER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another keeper has it, or the server is gone already
    last_used = time.time()
    while True:
        time.sleep(_KEEPER_POLL)
        if not (_still_ours(fd, directory / _KEEPER_LOCK) and (directory / _STATE).exists()):
            return  # removed (--neon-cleanup, a new server, the state directory deleted)
        if _recorded(directory / _STATE) is None:  # the server died
            with _start_lock(directory):
                if _recorded(directory / _STATE) is None:
                    _remove(directory)
                    return
        if live_runs(root):
            last_used = time.time()
            continue
        try:
            idle = float((directory / _IDLE).read_text())
        except (OSError, ValueError):
            idle = 0.0
        if _stop_if_unused(directory, idle_for=idle, since=last_used):
            return


def _still_ours(fd: int, lock: Path) -> bool:
    """Whether the lock file is still the one this keeper holds (not of a newer server's)."""
    try:
        return os.fstat(fd).st_ino == os.stat(lock).st_ino
    except OSError:
        return False


def _recorded(state: Path) -> EmbeddedServer | None:
    """The server whose state is in the file ``state``, if its postmaster runs (no
    connection made)."""
    from .server.embedded import EmbeddedServer

    try:
        server = EmbeddedServer.from_state(json.loads(state.read_text()))
    except (OSError, ValueError, ServerError):
        return None
    return server if server.is_running() else None


if __name__ == "__main__":
    keep(Path(sys.argv[1]), Path(sys.argv[2]))
