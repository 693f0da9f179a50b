"""A hot standby of the embedded server: read-only access no SQL can turn into a write.

Neon's read-only endpoints are computes that cannot write; this is the same for
the embedded server. A copy of the running cluster (``pg_basebackup``) starts
in standby mode without a primary to follow: PostgreSQL refuses every write
there by itself — ``SET default_transaction_read_only = off``, SECURITY
DEFINER functions, ``ALTER ROLE``, ``ALTER DEFAULT PRIVILEGES``, temporary
tables, sequences — in every database of it, whoever asks. It shows the
cluster as it was when it was copied (after the migrations), and costs ~0.2 s
once per run that uses read-only access. The standby of a server kept between
runs (``--neon-keep-server``) follows it instead, streaming its changes: every
run's read-only clone reaches it, and the server refuses the readers' roles.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ServerError
from ..redact import mask_text
from . import postmaster
from .binaries import major_of
from .embedded import EmbeddedServer, _free_port, _log_tail, stop_abandoned_server
from .system_user import RunAs, command_output

STANDBY_DIR = "readonly"  # under the primary's run directory
_TIMEOUT = 60
_STALLED_AFTER = 40  # s without replay (PostgreSQL's max_standby_streaming_delay: 30)
_UNFED_AFTER = 10  # the same without a WAL receiver (it retries every 5 s)


def standby_run_dir(primary_run_dir: Path) -> Path:
    return Path(primary_run_dir) / STANDBY_DIR


def start_hot_standby(primary: EmbeddedServer, *, follow: bool = False) -> EmbeddedServer:
    """Copy the primary's cluster and start it as a hot standby on a free port.

    The copy follows nothing: it stays at the state it was copied in; unless
    *follow*, for a server kept between runs: it then streams the primary's
    changes, and lets in the readers the primary refuses (``refuse_readers``).
    """
    run_as = RunAs.for_server()
    run_dir = standby_run_dir(primary.run_dir)
    data_dir = run_dir / "pgdata"
    log_file = run_dir / "postgres.log"
    if run_dir.exists():  # a stopped standby of this server (only one serves at a time)
        stop_abandoned_server(run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(mode=0o700)
    run_as.chown(run_dir)
    log_file.touch(mode=0o600)
    run_as.chown(log_file)
    password = urlsplit(primary.admin_url).password or ""
    backup = run_as.run(
        [
            primary.bindir / "pg_basebackup",
            "--pgdata",
            data_dir,
            "--dbname",
            f"host=127.0.0.1 port={primary.port} user=postgres",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",
            # No checksums of every file for a manifest nobody verifies (~10 ms).
            *(["--no-manifest"] if major_of(primary.version) >= 13 else []),
        ],
        timeout=_TIMEOUT,
        ld_library_path=primary.ld_library_path,
        extra_env={"PGPASSWORD": password},
    )
    if backup.returncode != 0:
        raise ServerError(
            f"Could not copy the embedded server for read-only access (pg_basebackup exited "
            f"with {backup.returncode}):\n{command_output(backup).replace(password, '***')}"
        )
    signal_file = data_dir / "standby.signal"
    signal_file.touch()
    run_as.chown(signal_file)
    if follow:
        _follow(data_dir, primary, password)
    port = _free_port()
    pid, returncode, output = postmaster.start(
        run_as,
        [
            primary.bindir / "pg_ctl",
            "start",
            "-w",
            "-D",
            data_dir,
            "-l",
            log_file,
            "-o",
            f"-p {port} -k '' -c hot_standby=on -c autovacuum=off",
        ],
        data_dir,
        primary.ld_library_path,
        _TIMEOUT,
    )
    if pid is None:
        stop_abandoned_server(run_dir)
        raise ServerError(
            f"The read-only copy of the embedded server did not start (pg_ctl exited with "
            f"{returncode}): {output}\nLast lines of {log_file}:\n{_log_tail(log_file)}"
        )
    return EmbeddedServer(
        admin_url=primary.admin_url.replace(f":{primary.port}/", f":{port}/"),
        version=primary.version,
        data_dir=data_dir,
        port=port,
        pid=pid,
        bindir=primary.bindir,
        run_dir=run_dir,
        log_file=log_file,
        socket_dir=None,
        run_as_user=primary.run_as_user,
        ld_library_path=primary.ld_library_path,
        server_version=primary.server_version,
    )


#: Roles that may only read: the primary of a kept server refuses them (its standby
#: streams role changes too, so they cannot be NOLOGIN there as on a run's own server).
READERS = "pytest_neon_readers"
_REFUSE = f"host all +{READERS} all reject\nlocal all +{READERS} reject\n"


def refuse_readers(primary: EmbeddedServer) -> None:
    """The group role ``READERS``, whose members cannot log in to *primary* (checked at
    each connection); once, when the kept server starts."""
    hba = primary.data_dir / "pg_hba.conf"
    text = hba.read_text()
    if not text.startswith(_REFUSE):
        hba.write_text(_REFUSE + text)  # in place: the server's user keeps owning it
    with _admin(primary) as connection:
        connection.execute(f"CREATE ROLE {READERS} NOLOGIN")
        connection.execute("SELECT pg_reload_conf()")


@contextlib.contextmanager
def _admin(server: EmbeddedServer) -> Iterator[Any]:
    """The superuser's connection; a failure is a ServerError naming the server's log."""
    import psycopg

    try:
        with psycopg.connect(server.admin_url, autocommit=True, connect_timeout=10) as connection:
            yield connection
    except psycopg.Error as error:
        raise ServerError(
            f"Lost the connection to the embedded PostgreSQL server on port {server.port}: "
            f"{mask_text(str(error)).strip()} (log: {server.log_file}). Run the tests again."
        ) from None


def _follow(data_dir: Path, primary: EmbeddedServer, password: str) -> None:
    hba = data_dir / "pg_hba.conf"
    hba.write_text(hba.read_text().replace(_REFUSE, "", 1))
    conninfo = f"host=127.0.0.1 port={primary.port} user=postgres password={password}"
    with open(data_dir / "postgresql.auto.conf", "a") as conf:
        conf.write(f"primary_conninfo = '{conninfo}'\n")


class StandbyStalled(ServerError):
    """The standby stopped replaying short of where it has to be (``replay_until``)."""


def replay_until(standby: EmbeddedServer, lsn: str, timeout: float = _TIMEOUT) -> None:
    """Let *standby* replay the primary's WAL up to *lsn*, then pause its replay.

    Paused, it spends no CPU replaying the run's own writes (every test's, every
    restore's, every copy of a database) on the cores the tests run on; the run
    resumes it at its end (``resume_replay``), so that it catches up while no
    test runs. Concurrent runs each resume it until their own position is reached.

    Raises ``StandbyStalled`` when its replay has not moved for 40 s, longer
    than PostgreSQL lets a reader's query hold it back (30 s), or for 10 s
    without a WAL receiver streaming to it (one that lost the server retries
    every 5 s): it is stuck then, for one on WAL the server no longer has.
    """
    deadline = time.monotonic() + timeout
    last, moved = None, time.monotonic()
    with _admin(standby) as connection:
        while True:
            replayed, reached, streaming = connection.execute(
                "SELECT pg_last_wal_replay_lsn()::text, pg_last_wal_replay_lsn() >= %s::pg_lsn, "
                "EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')",
                (lsn,),
            ).fetchone()
            if reached:
                connection.execute("SELECT pg_wal_replay_pause()")
                return
            now = time.monotonic()
            if replayed != last:
                last, moved = replayed, now
            if now - moved > (_STALLED_AFTER if streaming else _UNFED_AFTER):
                receiver = "its WAL receiver streams" if streaming else "no WAL receiver streams"
                raise StandbyStalled(
                    f"The read-only standby on port {standby.port} replayed nothing for "
                    f"{now - moved:.0f} s, at {replayed} of {lsn} ({receiver}; log: "
                    f"{standby.log_file})."
                )
            connection.execute("SELECT pg_wal_replay_resume()")
            if now > deadline:
                raise ServerError(
                    f"The read-only standby of the kept server did not catch up with it in "
                    f"{timeout:.0f} s (log: {standby.log_file}). Stop it with "
                    "pytest --neon-cleanup and run again."
                )
            time.sleep(0.002)


def pause_replay_if_caught_up(standby: EmbeddedServer) -> None:
    """Stop *standby*'s replay while a run's tests go on (see ``replay_until``), if it
    has replayed all it received: a standby still catching up goes on, or runs started
    back to back would pile up its replay (every copy of a database of every run) for
    the next one that reads to wait for."""
    with _admin(standby) as connection:
        connection.execute(
            "SELECT pg_wal_replay_pause() "
            "WHERE pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()"
        )


def resume_replay(standby: EmbeddedServer) -> None:
    """Let *standby* catch up in the background, between runs (see ``replay_until``)."""
    with _admin(standby) as connection:
        connection.execute("SELECT pg_wal_replay_resume()")


def stop_hot_standby(primary_run_dir: Path) -> None:
    """Stop the standby of the server in ``primary_run_dir``, if one runs (any process)."""
    stop_abandoned_server(standby_run_dir(primary_run_dir))


__all__ = [
    "READERS",
    "StandbyStalled",
    "pause_replay_if_caught_up",
    "refuse_readers",
    "replay_until",
    "resume_replay",
    "standby_run_dir",
    "start_hot_standby",
    "stop_hot_standby",
]
