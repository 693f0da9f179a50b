"""A frozen embedded server must not hang the run: a watchdog that ends it.

A postmaster stopped by SIGSTOP (a stray ``kill -STOP``, a job-control
accident) leaves every connection waiting forever: the kernel still accepts
and acknowledges, so no socket timeout fires. A thread of each test process
looks at the postmaster's state every quarter second; stopped for longer than
``PYTEST_NEON_ALEMBIC_FROZEN_SECONDS`` (default 10), the server is killed --
it belongs to this run -- with one message saying why, so blocked queries fail
at once with "server closed the connection" instead of hanging. Linux only
(it reads ``/proc``); a process being debugged (state ``t``) is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

FROZEN_ENV_VAR = "PYTEST_NEON_ALEMBIC_FROZEN_SECONDS"
_POLL = 0.25
_watched: set[int] = set()
_lock = threading.Lock()


def frozen_after() -> float:
    try:
        return max(0.5, float(os.environ.get(FROZEN_ENV_VAR, "") or 10))
    except ValueError:
        return 10.0


def watch(pid: int, data_dir: Path) -> None:
    """Watch the postmaster *pid* of *data_dir* from this process (once per pid)."""
    if not Path(f"/proc/{pid}/stat").exists():
        return
    with _lock:
        if pid in _watched:
            return
        _watched.add(pid)
    threading.Thread(
        target=_watch, args=(pid, data_dir, frozen_after()), name="pna-watchdog", daemon=True
    ).start()


def _state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from ``/proc/<pid>/stat``; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text("utf-8", "replace").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (fields[0], int(fields[1])) if fields[0] not in ("Z", "X") else None


def _watch(pid: int, data_dir: Path, limit: float) -> None:
    from .postmaster import is_postmaster_of

    stopped_since: float | None = None
    while True:
        time.sleep(_POLL)
        state = _state(pid)
        if state is None:
            return
        if state[0] != "T":
            stopped_since = None
            continue
        stopped_since = stopped_since or time.monotonic()
        if time.monotonic() - stopped_since < limit or not is_postmaster_of(pid, data_dir):
            continue
        message = (
            f"\npytest-neon-alembic: the embedded PostgreSQL server (pid {pid}, {data_dir}) has "
            f"been stopped (SIGSTOP) for {limit:g} s, so every query on it hangs; it belongs to "
            "this test run and was killed. Tests using it fail from here on; run them again. "
            f"({FROZEN_ENV_VAR} sets how long a stopped server is waited for.)\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, message.encode())
        _kill_tree(pid)
        return


def _kill_tree(pid: int) -> None:
    """SIGKILL the postmaster and its children (stopped ones too: SIGKILL needs no CONT)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state = _state(int(entry.name))
            if state is not None and state[1] == pid:
                children.append(int(entry.name))
    for target in (pid, *children):
        with contextlib.suppress(OSError):
            os.kill(target, signal.SIGKILL)
