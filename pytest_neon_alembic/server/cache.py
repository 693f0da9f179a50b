"""Cache entries that concurrent test runs build once and then share.

xdist workers and parallel CI jobs start servers at the same moment on an
empty cache.  The expensive entries (the initdb template, a copy of the
binaries) must be built by one of them only, and never be seen half-written
by the others or left half-written by a run that was killed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import ServerError

#: Part of every cache key: bump it when the initdb options or the settings in
#: cluster.py change, so that stale templates are not reused.
CACHE_REVISION = 3

_LOCK_TIMEOUT = 600

T = TypeVar("T")


def binaries_key(bindir: Path) -> str:
    """Identifies the build, not its place: every virtual environment with the same
    wheel shares one cache entry (CI makes a new one per run).

    The size and the first MiB of ``postgres`` tell builds apart at the cost of
    one small read; the extensions the build ships (and our compatible ones)
    are part of it, since migrations may create them, or not, depending on that.
    """
    from .extensions import compat_revision

    postgres = bindir / "postgres"
    with open(postgres, "rb") as binary:
        head = binary.read(1 << 20)
    parts = (
        os.stat(postgres).st_size,
        hashlib.sha256(head).hexdigest(),
        CACHE_REVISION,
        ",".join(available_extensions(bindir)),
        compat_revision(),
    )
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:12]


def available_extensions(bindir: Path) -> list[str]:
    """The extensions of the build in *bindir* (names of its control files)."""
    for share in (
        bindir.parent / "share" / "extension",
        bindir.parent / "share" / "postgresql" / "extension",
        Path("/usr/share/postgresql") / bindir.parent.name / "extension",  # Debian
    ):
        if share.is_dir():
            return sorted(p.name.removesuffix(".control") for p in share.glob("*.control"))
    return []


def prune(cache_dir: Path, *, unused_days: float = 14) -> None:
    """Remove cache entries nobody used for ``unused_days`` (another PostgreSQL build,
    a project gone); each use touches its entry. Best effort, never raises."""
    import time

    limit = time.time() - unused_days * 86400
    for entry in cache_dir.glob("*-*"):
        try:
            if entry.is_dir() and not entry.name.startswith(".") and entry.stat().st_mtime < limit:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def build_once(
    entry: Path, read: Callable[[], T | None], build: Callable[[Path], None], what: str
) -> tuple[T, bool]:
    """Return (``read()``, whether this call built *entry*).

    *read* returns None while the entry is missing or incomplete; then, under
    a file lock, *build* fills a temporary directory that is renamed to
    *entry*, so readers never need the lock.  *what* completes "waiting for
    another process to ..." in the timeout message.
    """
    done = read()
    if done is not None:
        with contextlib.suppress(OSError):
            os.utime(entry)  # in use: not pruned
        return done, False
    from filelock import FileLock, Timeout

    parent = entry.parent
    try:
        with FileLock(str(parent / f".{entry.name}.lock"), timeout=_LOCK_TIMEOUT):
            done = read()
            if done is not None:
                return done, False
            for leftover in parent.glob(f".{entry.name}.tmp-*"):  # of a killed process
                shutil.rmtree(leftover, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=parent))
            try:
                build(tmp)
                if entry.exists():  # a broken leftover: read() rejected it
                    shutil.rmtree(entry)
                os.rename(tmp, entry)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except Timeout as exc:
        raise ServerError(
            f"Timed out after {_LOCK_TIMEOUT} s waiting for another process to {what} (lock "
            f"{exc.lock_file}). If no other test run is active, delete the lock file."
        ) from exc
    done = read()
    if done is None:
        raise ServerError(f"{entry} is incomplete right after it was built. Delete it and retry.")
    return done, True
