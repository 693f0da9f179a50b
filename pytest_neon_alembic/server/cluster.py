"""The cluster a server starts from: a cached initdb template, or a saved snapshot.

initdb costs ~0.5 s and its output is the same for every run, so it runs once
per cache key and each run copies the result (milliseconds on tmpfs).  A
snapshot goes further: the cluster a run left behind, with its migrated
template database, so that the next run need not migrate again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from ..errors import ServerError
from .binaries import BINDIR_ENV_VAR, major_of
from .cache import binaries_key, build_once
from .system_user import RunAs, command_output

_PASSWORD_FILE = "superuser-password"
_SNAPSHOTS_KEPT = 4  # ~30 MB of RAM each on tmpfs

# Durability is pointless for a cluster that is deleted after the run, and
# turning it off makes migrations and CREATE DATABASE several times faster.
_TEST_SETTINGS = (
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("synchronous_commit", "off"),
    ("listen_addresses", "'127.0.0.1'"),
    ("max_connections", "200"),
    ("log_min_messages", "warning"),
    ("password_encryption", "'scram-sha-256'"),
    # Dynamic shared memory as files in the data dir instead of
    # /dev/shm/PostgreSQL.*: a SIGKILLed server then leaks nothing outside
    # run_dir (and Docker's small /dev/shm is not used up).
    ("dynamic_shared_memory_type", "mmap"),
)


def _settings(major: int) -> list[tuple[str, str]]:
    if major < 16:
        return list(_TEST_SETTINGS)
    # One SCRAM iteration instead of 4096: every test connection pays the
    # hashing on both ends, and a random password gains nothing from stretching.
    settings = [*_TEST_SETTINGS, ("scram_iterations", "1")]
    if major >= 18:
        # No I/O worker processes: a server on tmpfs gains nothing from them, and
        # starting them costs ~40 ms of every start (measured, 152 -> 113 ms warm).
        settings.append(("io_method", "sync"))
    return settings


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")


def _initdb(
    bindir: Path, version: str, ld_library_path: str, build_dir: Path, run_as: RunAs
) -> str:
    """Run initdb into ``build_dir/"pgdata"``; return the superuser password."""
    major = major_of(version)
    build_dir.mkdir(mode=0o700)
    run_as.chown(build_dir)
    password = secrets.token_urlsafe(24)
    pwfile = build_dir / "pwfile"
    _write_secret(pwfile, password)
    run_as.chown(pwfile)
    pgdata = build_dir / "pgdata"
    settings = _settings(major)
    args: list[str | os.PathLike[str]] = [
        bindir / "initdb",
        "-D",
        pgdata,
        "-U",
        "postgres",
        "--auth=scram-sha-256",
        f"--pwfile={pwfile}",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        # 1 MB WAL segments instead of 16 MB: the template copied on every run
        # shrinks from ~38 MB to ~26 MB.
        "--wal-segsize=1",
    ]
    if major >= 14:
        args.append("--no-instructions")
    if major >= 16:
        # Not only appended afterwards: the superuser password initdb stores
        # must already be hashed with these settings.
        for name, value in settings:
            args += ["-c", f"{name}={value.strip(chr(39))}"]
    proc = run_as.run(args, timeout=300, ld_library_path=ld_library_path)
    with contextlib.suppress(OSError):
        pwfile.unlink()
    if proc.returncode != 0:
        raise ServerError(
            f"initdb failed (exit {proc.returncode}) creating the embedded test cluster in "
            f"{pgdata} with {bindir / 'initdb'} (PostgreSQL {version}):\n{command_output(proc)}\n"
            f"Check free space and permissions in {build_dir.parent}, or set {BINDIR_ENV_VAR} "
            "to another PostgreSQL installation."
        )
    conf_lines = ["", "# Added by pytest-neon-alembic: a disposable cluster for tests."]
    conf_lines += [f"{name} = {value}" for name, value in settings]
    with open(pgdata / "postgresql.conf", "a", encoding="utf-8") as fh:
        fh.write("\n".join(conf_lines) + "\n")
    return password


def template(
    bindir: Path,
    source_bindir: Path,
    version: str,
    ld_library_path: str,
    cache_dir: Path,
    run_dir: Path,
    run_as: RunAs,
) -> tuple[Path, str, bool]:
    """Return (template data dir, superuser password, whether initdb ran now).

    Keyed on the *source* binaries, not on a copy of them.  On a miss, initdb
    runs inside *run_dir* (which the server user can reach even when
    *cache_dir* is under a private home directory), and this run keeps that
    cluster as its ``pgdata``.  The cached password file is ours, never the
    server user's.
    """
    entry = cache_dir / f"initdb-{version}-{binaries_key(source_bindir)}"
    build_dir = run_dir / ".initdb-build"

    def read() -> str | None:
        try:
            password = (entry / _PASSWORD_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return password if password and (entry / "pgdata" / "PG_VERSION").is_file() else None

    def build(tmp: Path) -> None:
        password = _initdb(bindir, version, ld_library_path, build_dir, run_as)
        # Owned by us, not by the server's user: the runs' server cannot change the cache.
        shutil.copytree(build_dir / "pgdata", tmp / "pgdata", symlinks=True)
        _write_secret(tmp / _PASSWORD_FILE, password)

    try:
        password, built = build_once(entry, read, build, f"create the cached test cluster {entry}")
        if built:
            os.rename(build_dir / "pgdata", run_dir / "pgdata")
            shutil.rmtree(build_dir, ignore_errors=True)
    except OSError as exc:
        raise ServerError(
            f"Could not create the cached test cluster {entry} in {cache_dir}: {exc}. Check "
            "free space and permissions of the cache directory."
        ) from exc
    return entry / "pgdata", password, built


def copy_tree(source: Path, target: Path) -> None:
    """Copy a cached cluster into a run's directory (*target* must not exist); the
    caller gives the copy to the server's user.

    ``cp -a`` when there is one: every run starts by copying a cached cluster of
    ~1,700 files, and it does that in 60 ms where ``shutil.copytree`` takes
    100-160 ms (measured on tmpfs).
    """
    cp = shutil.which("cp")
    if cp is not None:
        result = subprocess.run(
            [cp, "-a", "--", str(source), str(target)], capture_output=True, check=False
        )
        if result.returncode == 0:
            return
        shutil.rmtree(target, ignore_errors=True)  # a cp without -a, or a partial copy
    shutil.copytree(source, target, symlinks=True)


def snapshot_dir(template: Path, name: str) -> Path:
    """Where the snapshot *name* of the cluster made from *template* is kept."""
    entry = template.parent
    return entry.with_name(f"{entry.name}.snapshot-{name}")


def _snapshot_lock(snapshot_dir: Path) -> Path:
    return snapshot_dir.parent / f".{snapshot_dir.name.rsplit('.snapshot-', 1)[0]}.snapshots.lock"


def copy_snapshot(snapshot_dir: Path, data_dir: Path, initdb_ran: bool) -> bool:
    """Copy a saved snapshot into *data_dir*; False if there is none."""
    from filelock import FileLock

    with FileLock(str(_snapshot_lock(snapshot_dir))):
        _remove_interrupted_saves(snapshot_dir)
        if not (snapshot_dir / "pgdata" / "PG_VERSION").is_file():
            return False
        if initdb_ran:
            shutil.rmtree(data_dir)
        copy_tree(snapshot_dir / "pgdata", data_dir)
        os.utime(snapshot_dir)  # recently used: kept longest
    return True


def save_snapshot(data_dir: Path, snapshot_dir: Path) -> None:
    """Move a stopped cluster to *snapshot_dir*, atomically replacing an older one.

    All of it under the lock: whatever staging or retired directory someone
    else's save left is then known to be left by a process killed midway.
    """
    from filelock import FileLock

    staging = snapshot_dir.with_name(f"{snapshot_dir.name}.tmp-{os.getpid()}")
    retired = snapshot_dir.with_name(f"{snapshot_dir.name}.old-{os.getpid()}")
    with FileLock(str(_snapshot_lock(snapshot_dir))):
        _remove_interrupted_saves(snapshot_dir)
        staging.mkdir(mode=0o711)
        shutil.move(str(data_dir), str(staging / "pgdata"))
        if snapshot_dir.exists():
            os.rename(snapshot_dir, retired)
        os.rename(staging, snapshot_dir)
        family = _family(snapshot_dir)
        snapshots = sorted(
            (p for p in snapshot_dir.parent.glob(family + "*") if "." not in p.name[len(family) :]),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in snapshots[_SNAPSHOTS_KEPT:]:
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def _family(snapshot_dir: Path) -> str:
    return snapshot_dir.name.rsplit(".snapshot-", 1)[0] + ".snapshot-"


def _remove_interrupted_saves(snapshot_dir: Path) -> None:
    """Staging and retired directories of saves killed midway (call under the lock)."""
    family = _family(snapshot_dir)
    for pattern in ("*.tmp-*", "*.old-*"):
        for leftover in snapshot_dir.parent.glob(family + pattern):
            shutil.rmtree(leftover, ignore_errors=True)
