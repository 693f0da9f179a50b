"""Whether a process is alive: how a run tells a killed run (or server) from a live one."""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an unreaped dead process is dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):  # no /proc (macOS): kill(0) has to do
        return True


def pid_namespace() -> str:
    """This process's PID namespace ("" where there is no /proc): a pid recorded in
    another namespace (another container) says nothing about liveness here."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def lock_held(lock_file: Path) -> bool:
    """Whether a live process holds an flock on ``lock_file`` (False without flock).

    The kernel drops the lock when its holder dies, however it dies and whatever
    PID namespace it lives in: a surer sign of life than a recorded pid.
    """
    if fcntl is None:
        return False
    try:
        fd = os.open(lock_file, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the lock if we took it
    return False
