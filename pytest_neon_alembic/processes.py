"""Whether a process is alive: how a run tells a killed run (or server) from a live one."""

from __future__ import annotations

import os


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
