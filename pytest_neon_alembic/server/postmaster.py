"""Starting and stopping the postmaster of a data directory, through ``postmaster.pid``.

Servers are stopped by processes that did not start them (the xdist
controller, the cleanup after a SIGKILLed run), so all they have is the data
directory.  The pid recorded there may since belong to another process, which
must never be signalled; and a postmaster killed with SIGKILL leaves shared
memory behind that would outlive the run.  Start and stop watch the process
every 5 ms instead of pg_ctl's 100 ms: a test server is up or down in a few.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from ..processes import process_alive
from .system_user import RunAs

_POLL = 0.005


def start(
    run_as: RunAs, args: Sequence[str | Path], data_dir: Path, ld_library_path: str, timeout: float
) -> tuple[int | None, int | None, str]:
    """Run ``pg_ctl start -w``; return (postmaster pid or None, exit status, output).

    pg_ctl detaches the postmaster properly and notices when it dies during
    start-up, but the server is usually ready after ~30 ms, long before
    pg_ctl looks.  So we stop waiting for pg_ctl once ``postmaster.pid`` says
    "ready" (killing pg_ctl does not affect the detached postmaster).
    """
    try:
        proc = run_as.popen(args, ld_library_path=ld_library_path)
    except OSError as exc:
        return None, None, f"could not run pg_ctl: {exc}"
    deadline = time.monotonic() + timeout
    pid = None
    while proc.poll() is None and time.monotonic() < deadline:
        pid = ready_pid(data_dir)
        if pid is not None:
            break
        time.sleep(_POLL)
    if proc.poll() is None:
        proc.kill()
    output = (proc.communicate()[0] or "").strip() or "(no output)"
    if pid is None and proc.returncode == 0:
        pid = ready_pid(data_dir) or recorded_pid(data_dir)
    return pid, proc.returncode, output


def _pid_file(data_dir: Path) -> tuple[int | None, list[str]]:
    """(the pid, all lines) of ``postmaster.pid``."""
    try:
        lines = (data_dir / "postmaster.pid").read_text("utf-8", "replace").splitlines()
        return int(lines[0]), lines
    except (OSError, ValueError, IndexError):
        return None, []


def recorded_pid(data_dir: Path) -> int | None:
    """The pid in ``postmaster.pid`` (there while a server runs, or after it was killed)."""
    return _pid_file(data_dir)[0]


def ready_pid(data_dir: Path) -> int | None:
    """The postmaster's pid once ``postmaster.pid`` says it accepts connections."""
    pid, lines = _pid_file(data_dir)
    if pid is not None and len(lines) >= 8 and lines[7].strip() == "ready" and process_alive(pid):
        return pid
    return None


def is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether *pid* is a postgres process serving *data_dir* (the pid may have been reused).

    The postmaster ``chdir``s into its data directory, so on Linux its cwd is
    the strongest check; elsewhere the command name has to do.
    """
    if not process_alive(pid):
        return False
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            if (proc / "comm").read_text("utf-8", "replace").strip() != "postgres":
                return False
        except OSError:
            return False
        try:
            # " (deleted)": the caller removed run_dir before stopping the server.
            cwd = os.readlink(proc / "cwd").removesuffix(" (deleted)")
        except OSError:
            return True  # not ours to inspect (another user); comm matched
        return os.path.realpath(cwd) == os.path.realpath(data_dir)
    out = RunAs.current().run(["ps", "-o", "comm=", "-p", str(pid)], timeout=10).stdout
    return os.path.basename(out.strip()) == "postgres"


def wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


def release_shared_memory(data_dir: Path) -> None:
    """Remove the System V segment of a postmaster that died without cleaning up.

    ``postmaster.pid`` line 7 names it.  ``ipcrm`` only marks it for removal,
    so children still attached are unaffected.
    """
    pid, lines = _pid_file(data_dir)
    try:
        shmid = int(lines[6].split()[1])  # line 7: "<key> <shmid>"
    except (ValueError, IndexError):
        return
    ipcrm = shutil.which("ipcrm")
    if ipcrm is None or pid is None or process_alive(pid):
        return
    RunAs.current().run([ipcrm, "-m", str(shmid)], timeout=10)


def kill(pid: int, data_dir: Path) -> None:
    """SIGKILL the postmaster if it is still ours; its children exit on postmaster death."""
    if not is_postmaster_of(pid, data_dir):
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    if wait_dead(pid, 10):
        release_shared_memory(data_dir)


def stop(pid: int, data_dir: Path, steps: Sequence[tuple[signal.Signals, str, float]]) -> list[str]:
    """Send each step's signal (those of ``pg_ctl stop -m <mode>``) until it exits, then SIGKILL.

    Returns notes on what failed, for an error message.
    """
    notes: list[str] = []
    for sig, mode, timeout in steps:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return notes
        except PermissionError:
            notes.append(f"not allowed to signal pid {pid} ({mode} shutdown)")
            return notes
        if wait_dead(pid, timeout):
            return notes
        notes.append(f"still running {timeout} s after {mode} shutdown")
    kill(pid, data_dir)
    if process_alive(pid):
        notes.append("still running after SIGKILL")
    return notes
