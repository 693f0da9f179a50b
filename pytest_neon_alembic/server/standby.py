"""A hot standby of the embedded server: read-only access no SQL can turn into a write.

Neon's read-only endpoints are computes that cannot write; this is the same for
the embedded server. A copy of the running cluster (``pg_basebackup``) starts
in standby mode without a primary to follow: PostgreSQL refuses every write
there by itself — ``SET default_transaction_read_only = off``, SECURITY
DEFINER functions, ``ALTER ROLE``, ``ALTER DEFAULT PRIVILEGES``, temporary
tables, sequences — in every database of it, whoever asks. It shows the
cluster as it was when it was copied (after the migrations), and costs ~0.2 s
once per run that uses read-only access.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ServerError
from . import postmaster
from .embedded import EmbeddedServer, _free_port, _log_tail, stop_abandoned_server
from .system_user import RunAs, command_output

STANDBY_DIR = "readonly"  # under the primary's run directory
_TIMEOUT = 60


def standby_run_dir(primary_run_dir: Path) -> Path:
    return Path(primary_run_dir) / STANDBY_DIR


def start_hot_standby(primary: EmbeddedServer) -> EmbeddedServer:
    """Copy the primary's cluster and start it as a hot standby on a free port.

    The copy follows nothing: it stays at the state it was copied in.
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


def stop_hot_standby(primary_run_dir: Path) -> None:
    """Stop the standby of the server in ``primary_run_dir``, if one runs (any process)."""
    stop_abandoned_server(standby_run_dir(primary_run_dir))


__all__ = ["standby_run_dir", "start_hot_standby", "stop_hot_standby"]
