"""A throw-away PostgreSQL server owned by one test run (the "embedded" backend).

Most developers have no Neon project (or no network) when they run the
tests, but every test still needs a real PostgreSQL to run Alembic migrations
against.  This module starts one on a free loopback port and stops it again,
also from another process (the pytest-xdist controller) and after the owning
process was SIGKILLed.  Finding the binaries, running as an unprivileged user
under root and preparing the cluster live in the sibling modules.

Failures are raised as :class:`~pytest_neon_alembic.errors.ServerError` (or
:class:`~pytest_neon_alembic.errors.PostgresNotFoundError`) with a message
saying what was checked and what to do; the superuser password never appears
in ``repr()``, logs or error messages.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import signal
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import PostgresNotFoundError, ServerError
from ..processes import process_alive
from . import cache, cluster, extensions, postmaster
from .binaries import (
    BINDIR_ENV_VAR,
    REMEDIES,
    find_postgres_bindir,
    major_of,
    missing_binaries,
    postgres_version,
)
from .install_copy import usable_bindir
from .system_user import SYSTEM_USER, RunAs, open_run_dir

__all__ = [
    "BINDIR_ENV_VAR",
    "SYSTEM_USER",
    "EmbeddedServer",
    "find_postgres_bindir",
    "stop_abandoned_server",
]

_STATE_KIND = "pytest-neon-alembic/embedded-server"
_STATE_VERSION = 1
_MAX_PORT_ATTEMPTS = 5
_START_TIMEOUT = 60
_STOP_TIMEOUT = 30  # fast shutdown: open sessions are terminated, so this is generous
_IMMEDIATE_TIMEOUT = 10
# sockaddr_un.sun_path is 104 bytes on macOS (108 on Linux); PostgreSQL refuses
# to start when the socket path does not fit, so longer directories are not used.
_MAX_SOCKET_PATH = 103


def _free_port() -> int:
    """A loopback port that was free a moment ago (the caller retries if it gets taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(log_file: Path, offset: int = 0, lines: int = 20) -> str:
    try:
        with open(log_file, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


@dataclass(kw_only=True, repr=False, eq=False)
class EmbeddedServer:
    """A PostgreSQL server owned by one test run.

    Create it with :meth:`start`; stop it with :meth:`stop`, possibly from
    another process via :meth:`to_state` / :meth:`from_state`.  The caller owns
    ``run_dir`` and deletes it after :meth:`stop`.

    Attributes:
        admin_url: superuser URL (contains the password; never log it -- use
            :attr:`masked_admin_url` or ``repr()``).
        version: of the binaries, e.g. ``"16.14"``; ``server_version`` is
            ``SHOW server_version`` (may carry a distro suffix).
        bindir: where the programs run from (a copy when root could not let
            the server user read the original).
        socket_dir: None when the path would be too long for a Unix socket.
        run_as_user: :data:`SYSTEM_USER` when started as root, else None.
        initdb_ran: this start had to run initdb (a cold cache).
    """

    admin_url: str
    version: str
    data_dir: Path
    port: int
    pid: int
    bindir: Path
    run_dir: Path
    log_file: Path
    socket_dir: Path | None
    run_as_user: str | None
    ld_library_path: str = ""
    initdb_ran: bool = False
    server_version: str = ""
    snapshot_dir: Path | None = None

    def __post_init__(self) -> None:
        self.server_version = self.server_version or self.version
        self._stopped = False
        self.stopped_cleanly = False  # by a fast shutdown that finished in time

    @property
    def masked_admin_url(self) -> str:
        """:attr:`admin_url` with the password replaced by ``***``, safe to print."""
        return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", self.admin_url)

    def __repr__(self) -> str:
        return (
            f"EmbeddedServer(url={self.masked_admin_url!r}, version={self.version!r}, "
            f"pid={self.pid}, data_dir={str(self.data_dir)!r})"
        )

    @classmethod
    def start(
        cls,
        run_dir: Path,
        cache_dir: Path,
        *,
        bindir: Path | None = None,
        snapshot: str | None = None,
        pg_version: int | None = None,
    ) -> EmbeddedServer:
        """Start a server in ``run_dir`` (``pgdata``, ``socket``, ``postgres.log``).

        The cluster is copied from the snapshot named *snapshot* (see
        :meth:`save_snapshot`) if there is one, else from the cached initdb
        template.  *run_dir* must not contain ``pgdata`` yet.  *bindir*
        defaults to :func:`find_postgres_bindir` (of major version *pg_version*,
        if given).

        As root every parent of *run_dir* must be o+x, and *run_dir* itself is
        made o+x: files the caller keeps in it that hold secrets (such as
        :meth:`to_state` output) must be mode 0600.

        Raises:
            PostgresNotFoundError: no binaries found.
            ServerError: initdb, start-up or the first connection failed; the
                message includes the command output and the log tail.
        """
        run_dir = Path(run_dir).absolute()
        cache_dir = Path(cache_dir).absolute()
        try:
            return cls._start(run_dir, cache_dir, bindir, snapshot, pg_version)
        except OSError as exc:  # anything not already turned into a ServerError
            raise ServerError(
                f"Could not set up the embedded PostgreSQL server in {run_dir} (cache directory "
                f"{cache_dir}): {exc}. Check free space and permissions there."
            ) from exc

    @classmethod
    def _start(
        cls,
        run_dir: Path,
        cache_dir: Path,
        bindir: Path | None,
        snapshot: str | None,
        pg_version: int | None,
    ) -> EmbeddedServer:
        source_bindir = (
            Path(bindir).resolve() if bindir is not None else find_postgres_bindir(pg_version)
        )
        missing = missing_binaries(source_bindir)
        if missing:
            raise PostgresNotFoundError(
                f"{source_bindir} has no executable {', '.join(missing)}; it must contain "
                f"initdb, pg_ctl and postgres.\n{REMEDIES}"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        data_dir = run_dir / "pgdata"
        if data_dir.exists():
            raise ServerError(
                f"{data_dir} already exists: each embedded server needs a fresh run directory "
                "(a previous server may still be using it)."
            )
        run_as = RunAs.for_server()
        if run_as.switches_user:
            open_run_dir(run_dir)

        version = postgres_version(source_bindir)
        run_bindir, ld_library_path = usable_bindir(source_bindir, version, cache_dir, run_as)
        template, password, initdb_ran = cluster.template(
            run_bindir, source_bindir, version, ld_library_path, cache_dir, run_dir, run_as
        )
        snapshot_dir = cluster.snapshot_dir(template, snapshot) if snapshot else None
        cache.prune(cache_dir)  # entries of other builds and long-gone projects
        try:
            copied = snapshot_dir is not None and cluster.copy_snapshot(
                snapshot_dir, data_dir, initdb_ran
            )
            if not copied and not initdb_ran:
                cluster.copy_tree(template, data_dir)
            data_dir.chmod(0o700)
            run_as.chown_tree(data_dir)
            socket_dir: Path | None = run_dir / "socket"
            if len(f"{socket_dir}/.s.PGSQL.65535") > _MAX_SOCKET_PATH:
                socket_dir = None  # TCP only
            else:
                socket_dir.mkdir(mode=0o700, exist_ok=True)
                run_as.chown(socket_dir)
            log_file = run_dir / "postgres.log"
            log_file.touch(mode=0o600)
            run_as.chown(log_file)
            extension_path = ""
            if major_of(version) >= 18:  # extension_control_path is new in 18
                extension_path = extensions.install_compat(run_dir / "extensions")
        except OSError as exc:
            raise ServerError(
                f"Could not prepare the embedded server's files in {run_dir}: {exc}. Check free "
                "space and permissions there."
            ) from exc

        server = cls(
            admin_url="",
            version=version,
            data_dir=data_dir,
            port=0,
            pid=0,
            bindir=run_bindir,
            run_dir=run_dir,
            log_file=log_file,
            socket_dir=socket_dir,
            run_as_user=run_as.user,
            ld_library_path=ld_library_path,
            initdb_ran=initdb_ran,
            snapshot_dir=snapshot_dir,
        )
        server._launch(run_as, password, extension_path)
        return server

    def _launch(self, run_as: RunAs, password: str, extension_path: str) -> None:
        """Start on a free port (retrying on port clashes), then prove we can log in."""
        failure = ""
        # pg_ctl runs the postmaster through /bin/sh: quoted, "$system" stays as is.
        extra = (
            f" -c extension_control_path={shlex.quote(extension_path)}" if extension_path else ""
        )
        for _attempt in range(_MAX_PORT_ATTEMPTS):
            port = _free_port()
            offset = self.log_file.stat().st_size
            sockets = shlex.quote(str(self.socket_dir) if self.socket_dir else "")
            args = [
                self.bindir / "pg_ctl",
                "start",
                "-w",
                "-t",
                str(_START_TIMEOUT),
                "-D",
                self.data_dir,
                "-l",
                self.log_file,
                "-o",
                # No autovacuum: its ANALYZE takes transaction ids, which write
                # detection would count as a test's write (a needless reset).
                f"-p {port} -k {sockets} -c autovacuum=off{extra}",
            ]
            pid, returncode, output = postmaster.start(
                run_as, args, self.data_dir, self.ld_library_path, _START_TIMEOUT + 30
            )
            if pid is not None:
                self.port, self.pid = port, pid
                break
            log = _log_tail(self.log_file, offset)
            stale = postmaster.recorded_pid(self.data_dir)
            if stale is not None:
                postmaster.kill(stale, self.data_dir)
            failure = (
                f"`pg_ctl start` exited with {returncode}:\n{output}\n"
                f"Last lines of {self.log_file}:\n{log}"
            )
            if not re.search(
                r"could not bind|Address already in use|could not create any TCP/IP", log
            ):
                break
        else:
            failure += f"\n(gave up after {_MAX_PORT_ATTEMPTS} ports were taken)"
        if not self.pid:
            raise ServerError(
                f"The embedded PostgreSQL {self.version} server in {self.data_dir} failed to "
                f"start. {failure}\nIf the log does not explain it, delete the cached cluster in "
                f"the cache directory (initdb-{self.version}-*) or use --neon-local-url / "
                "NEON_LOCAL_URL."
            )

        self.admin_url = f"postgresql://postgres:{password}@127.0.0.1:{self.port}/postgres"
        try:
            import psycopg

            with psycopg.connect(self.admin_url, connect_timeout=15, autocommit=True) as conn:
                row = conn.execute("SHOW server_version").fetchone()
            self.server_version = str(row[0]) if row else self.version
        except Exception as exc:
            message = str(exc).replace(password, "***")
            with contextlib.suppress(Exception):
                self.stop()
            raise ServerError(
                f"The embedded PostgreSQL server started on 127.0.0.1:{self.port}, but connecting "
                f"as postgres to {self.masked_admin_url} failed: {message}\nLast lines of "
                f"{self.log_file}:\n{_log_tail(self.log_file)}\nDelete the cached cluster "
                f"(initdb-{self.version}-* in the cache directory) and retry."
            ) from None

    def is_running(self) -> bool:
        pid = postmaster.recorded_pid(self.data_dir) or self.pid
        return postmaster.is_postmaster_of(pid, self.data_dir)

    def stop(self, *, discard: bool = False) -> None:
        """Stop the server: fast shutdown, then immediate shutdown, then SIGKILL.

        Sends the signals ``pg_ctl stop -m fast`` / ``-m immediate`` send, but
        polls every 5 ms instead of pg_ctl's 100 ms.  Idempotent, and quiet on
        a server that already stopped or died.  Never deletes files: the
        caller deletes ``run_dir`` afterwards.  *discard*: the caller deletes
        the cluster next, so immediate shutdown at once (no checkpoint; the
        cluster is never started again).

        Raises:
            ServerError: the postmaster is still running after all attempts.
        """
        if self._stopped:
            return
        self.stopped_cleanly = False
        pid = postmaster.recorded_pid(self.data_dir) or self.pid
        if not postmaster.is_postmaster_of(pid, self.data_dir):
            postmaster.release_shared_memory(self.data_dir)  # if it crashed or was killed
            self._stopped = True
            return
        steps = [(signal.SIGQUIT, "immediate", _IMMEDIATE_TIMEOUT)]
        if not discard:
            steps.insert(0, (signal.SIGINT, "fast", _STOP_TIMEOUT))
        notes = postmaster.stop(pid, self.data_dir, steps)
        self.stopped_cleanly = not notes and not discard
        if postmaster.is_postmaster_of(pid, self.data_dir):
            details = "\n".join(notes)
            raise ServerError(
                f"Could not stop the embedded PostgreSQL server (pid {pid}, data dir "
                f"{self.data_dir}).\n{details}\nKill it manually: kill -9 {pid}"
            )
        self._stopped = True

    def save_snapshot(self) -> str | None:
        """Keep this stopped server's cluster as the snapshot it was started with;
        None if it was kept, else why not.

        The next start with the same snapshot name begins with whatever this
        cluster holds (a migrated template database). Only a cluster that
        stopped cleanly, logged no PANIC and leaves room to copy it again is
        kept: never one from a run that crashed or filled the disk.
        """
        if self.snapshot_dir is None:
            return "no snapshot name"
        if not (self._stopped and self.stopped_cleanly):
            return "the server did not shut down cleanly"
        log = _log_tail(self.log_file, lines=10**6)
        if re.search(r"PANIC:|No space left on device", log):
            return f"the server reported errors ({self.log_file})"
        size = sum(f.stat().st_size for f in self.data_dir.rglob("*") if f.is_file())
        free = shutil.disk_usage(self.snapshot_dir.parent).free
        if free < 2 * size:
            return (
                f"{free >> 20} MB free in {self.snapshot_dir.parent}, and the cluster is "
                f"{size >> 20} MB"
            )
        cluster.save_snapshot(self.data_dir, self.snapshot_dir)
        return None

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable description, so another process can :meth:`from_state` and stop it.

        It contains :attr:`admin_url` including the password: store it with
        mode 0600 (or only in memory).
        """
        state: dict[str, Any] = {"kind": _STATE_KIND, "state_version": _STATE_VERSION}
        for field in fields(self):
            value = getattr(self, field.name)
            state[field.name] = str(value) if isinstance(value, Path) else value
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EmbeddedServer:
        if state.get("kind") != _STATE_KIND or state.get("state_version") != _STATE_VERSION:
            raise ServerError(
                f"Not an embedded-server state of version {_STATE_VERSION}: kind="
                f"{state.get('kind')!r}, state_version={state.get('state_version')!r}. The process "
                "that wrote it runs a different pytest-neon-alembic version; use the same version "
                "in every process."
            )
        try:
            return cls(
                admin_url=str(state["admin_url"]),
                version=str(state["version"]),
                server_version=str(state.get("server_version") or state["version"]),
                data_dir=Path(state["data_dir"]),
                port=int(state["port"]),
                pid=int(state["pid"]),
                bindir=Path(state["bindir"]),
                run_dir=Path(state["run_dir"]),
                log_file=Path(state["log_file"]),
                socket_dir=Path(state["socket_dir"]) if state.get("socket_dir") else None,
                run_as_user=state.get("run_as_user"),
                ld_library_path=str(state.get("ld_library_path") or ""),
                initdb_ran=bool(state.get("initdb_ran", False)),
                snapshot_dir=Path(state["snapshot_dir"]) if state.get("snapshot_dir") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerError(
                f"Malformed embedded-server state (missing or invalid {exc}); it must come from "
                "EmbeddedServer.to_state()."
            ) from exc


def stop_abandoned_server(run_dir: Path) -> bool:
    """Stop the server left in *run_dir* by a test process that was SIGKILLed.

    Only the postmaster recorded in ``run_dir/"pgdata"/"postmaster.pid"`` is
    touched, and only if it really serves that data directory: immediate
    shutdown, then SIGKILL.  No files are removed.

    Returns:
        True if a running server was found and stopped.  Never raises: this
        runs on cleanup paths where a second error would hide the first.
    """
    try:
        data_dir = Path(run_dir).absolute() / "pgdata"
        pid = postmaster.recorded_pid(data_dir)
        if pid is None or not postmaster.is_postmaster_of(pid, data_dir):
            return False
        postmaster.stop(pid, data_dir, ((signal.SIGQUIT, "immediate", _IMMEDIATE_TIMEOUT),))
        return not process_alive(pid)
    except Exception:
        return False
