"""Cache entries that concurrent test runs build once and then share.

xdist workers and parallel CI jobs start servers at the same moment on an
empty cache.  The expensive entries (the initdb template, a copy of the
binaries) must be built by one of them only, and never be seen half-written
by the others or left half-written by a run that was killed.
"""

from __future__ import annotations

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
CACHE_REVISION = 2

_LOCK_TIMEOUT = 600

T = TypeVar("T")


def binaries_key(bindir: Path) -> str:
    """Changes when the install is replaced in place (path, size and mtime of ``postgres``)."""
    st = os.stat(bindir / "postgres")
    parts = (bindir.resolve(), st.st_size, st.st_mtime_ns, CACHE_REVISION)
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:12]


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
