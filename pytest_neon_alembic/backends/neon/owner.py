"""Who made a branch: the test run, its owning process and the machine it ran on.

Every branch this plugin creates carries it in its Neon annotation
(``annotation_value`` of the create call, shown in the console), so that any
later run, with or without the dead run's files, can tell whether the run that
made a branch is over:

* on the same machine -- same host name, same boot and same PID namespace, so
  process IDs mean the same thing -- a run is over when its owning process is
  gone, or when that PID now belongs to a process started at another moment
  (PID reuse). Its branches can go at once.
* anywhere else, nothing can be known about the process: the branch is stale
  only after the hour of inactivity ``sweep.py`` waits for.

Where the machine cannot be identified that precisely (no ``/proc``: macOS,
Windows), every branch falls under the hour rule: deleting a live run's
branches because two machines share a host name is worse than waiting.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...processes import process_alive

TOOL = "pytest-neon-alembic"
_KEYS = {
    "tool": "created-by",
    "run_id": "test-run",
    "host": "test-host",
    "boot": "test-host-boot",
    "pid": "test-pid",
    "started": "test-pid-start",
    "kept": "kept",
}


def machine_identity() -> str:
    """This boot of this machine and this PID namespace; "" where it cannot be told."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}" if boot and namespace else ""


def process_start(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (Linux); "" if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime
    except (OSError, IndexError):
        return ""


@dataclass(frozen=True)
class RunOwner:
    """The run that made a branch, as its annotation records it."""

    run_id: str
    host: str
    pid: int
    boot: str = ""
    started: str = ""
    kept: bool = False  # --neon-keep-branches: kept on purpose, the hour rule applies

    @classmethod
    def of_process(cls, pid: int, run_id: str, *, kept: bool = False) -> RunOwner:
        """The owner record of run ``run_id`` whose owning process is ``pid`` (alive)."""
        return cls(
            run_id=run_id,
            host=socket.gethostname(),
            pid=pid,
            boot=machine_identity(),
            started=process_start(pid),
            kept=kept,
        )

    def annotation(self) -> dict[str, str]:
        """Neon's ``annotation_value``: strings only, empty ones left out."""
        values = {"tool": TOOL, **asdict(self)}
        values["pid"] = str(self.pid)
        values["kept"] = "true" if self.kept else ""
        return {_KEYS[name]: value for name, value in values.items() if value}

    @classmethod
    def from_annotation(cls, value: Mapping[str, Any] | None) -> RunOwner | None:
        """The owner an annotation names; None for anything this plugin did not write."""
        value = value or {}
        if value.get(_KEYS["tool"]) != TOOL:
            return None
        try:
            pid = int(value.get(_KEYS["pid"], ""))
        except ValueError:
            return None
        return cls(
            run_id=str(value.get(_KEYS["run_id"], "")),
            host=str(value.get(_KEYS["host"], "")),
            pid=pid,
            boot=str(value.get(_KEYS["boot"], "")),
            started=str(value.get(_KEYS["started"], "")),
            kept=value.get(_KEYS["kept"]) == "true",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def on_this_machine(self) -> bool:
        """Whether this owner's process IDs can be checked here (see the module docstring)."""
        here = machine_identity()
        return bool(here) and self.boot == here and self.host == socket.gethostname()

    def gone(self) -> bool:
        """Whether the owning process is over; only meaningful ``on_this_machine()``."""
        if not process_alive(self.pid):
            return True
        return bool(self.started) and process_start(self.pid) != self.started
