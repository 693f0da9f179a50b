"""Coordination of the processes of one test run: the controller and its xdist workers.

A run owns one directory (under /dev/shm when the OS has it). Work that must
happen once per run — starting the server, migrating, creating shared branches —
goes through ``RunDirectory.run_once``: the first process to take the file lock
does it and writes the result; the others read the result, or the same error,
without waiting for any timeout. Every branch created is recorded here, so the
process that owns the run can delete them at the end, and the next run can clean
up after a run that was killed. Passwords in these files are sealed with the
run's key, which exists only in the run's processes (``sealing.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

try:
    import fcntl
except ImportError:  # Windows: the owner's pid has to do
    fcntl = None  # type: ignore[assignment]

from . import errors
from .branch import BranchRole, NeonBranch
from .processes import lock_held, process_alive
from .sealing import RunKey, seal_passwords, unseal_passwords

OWNER_FILE = "owner.json"
#: Held (flock) by the run's owner process for its whole life: the kernel releases
#: it when the process dies, however it dies, and whatever PID namespace looks.
OWNER_LOCK = "owner.lock"
STATE_DIR_ENV = "PYTEST_NEON_ALEMBIC_STATE_DIR"
#: What one run may need in its state directory: the cached cluster (~27 MB), the
#: run's copy of it, a database per branch (~8 MB each), WAL, and the snapshot
#: saved at the end. /dev/shm with less free space than this is passed over.
RUN_NEEDS_BYTES = 256 << 20

# The owner's lock files, kept open for the life of the process.
_HELD_LOCKS: dict[Path, int] = {}


def state_root() -> Path:
    """Where runs keep their files (see ``choose_state_root``)."""
    return choose_state_root()[0]


def choose_state_root() -> tuple[Path, str | None]:
    """(the state directory, a line saying why it is not in /dev/shm, or None).

    ``PYTEST_NEON_ALEMBIC_STATE_DIR`` if set (and usable: else a ConfigError);
    else RAM-backed /dev/shm when it is writable and has room for a run
    (containers often have 64 MB of it), else the temp directory.
    """
    override = os.environ.get(STATE_DIR_ENV, "").strip()
    if override:
        base = Path(override).expanduser()
        problem = _unusable(base)
        if problem:
            raise errors.ConfigError(
                f"{STATE_DIR_ENV} is {override!r}, but {problem}. Point it at a writable "
                "directory with a few hundred MB free (RAM-backed is fastest, e.g. under "
                "/dev/shm), or unset it to let the plugin choose."
            )
        return base, None
    name = f"pytest-neon-alembic-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return _fallback(name, None)
    problem = _unusable(shm / name)
    if problem:
        return _fallback(name, f"/dev/shm is not usable ({problem})")
    free = free_bytes(shm)
    if free < RUN_NEEDS_BYTES:
        return _fallback(
            name, f"/dev/shm has {free >> 20} MB free and a run needs {RUN_NEEDS_BYTES >> 20} MB"
        )
    return shm / name, None


def _fallback(name: str, why: str | None) -> tuple[Path, str | None]:
    base = Path(tempfile.gettempdir()) / name
    problem = _unusable(base)
    if problem:
        raise errors.ConfigError(
            f"No usable directory for the run's state: {why or '/dev/shm does not exist'}, and "
            f"{problem}. Set {STATE_DIR_ENV} to a writable directory."
        )
    if why is None:
        return base, None  # no /dev/shm on this OS: nothing to explain
    return base, f"run state in {base}: {why} (set {STATE_DIR_ENV} to choose)"


def _unusable(base: Path) -> str | None:
    """Why *base* cannot hold run state, or None: created if missing, and written to."""
    try:
        base.mkdir(mode=0o711, parents=True, exist_ok=True)
    except FileExistsError:
        return f"{base} is not a directory"
    except OSError as error:
        return f"{base} cannot be created ({error.strerror or error})"
    if not base.is_dir():
        return f"{base} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        return f"{base} is not writable ({error.strerror or error})"
    return None


def free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class RecordedBranch:
    role: BranchRole
    branch: NeonBranch
    deleted: bool


class RunDirectory:
    """The files shared by all processes of one pytest run.

    ``key`` seals the passwords written here; None writes them as they are (a run
    that keeps its branches for inspection, or a reader of a dead run's files).
    """

    def __init__(self, path: Path, key: RunKey | None = None) -> None:
        self.path = path
        self.key = key

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def root(self) -> Path:
        """The state directory the run lives in (its ``cache`` is shared by runs)."""
        return self.path.parent.parent

    @classmethod
    def create(cls, root: Path, run_id: str | None = None, *, sealed: bool = True) -> RunDirectory:
        """A new run owned by this process, which holds its owner lock until it exits."""
        path = root / "runs" / (run_id or new_run_id())
        path.mkdir(mode=0o700, parents=True)
        # Locked before owner.json exists: a run with an owner file always has a lock.
        fd = os.open(path / OWNER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _HELD_LOCKS[path] = fd
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        _write_json(path / OWNER_FILE, owner)
        return cls(path, RunKey.new() if sealed else None)

    def owner_pid(self) -> int:
        return int(_read_json(self.path / OWNER_FILE)["pid"])

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        fd = _HELD_LOCKS.pop(self.path, None)
        if fd is not None:
            os.close(fd)

    def mark_kept(self) -> None:
        """Branches were kept on purpose (--neon-keep-branches): no later run deletes them."""
        (self.path / "kept").touch()

    def kept(self) -> bool:
        return (self.path / "kept").exists()

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        with FileLock(str(self.path / f"{name}.lock")):
            yield

    def run_once(self, name: str, produce: Callable[[], Any]) -> Any:
        """Run ``produce`` in exactly one process of the run; everyone gets its result.

        A failure is recorded with its message, and every later caller in any
        process raises the same error at once.
        """
        result_file = self.path / f"{name}.json"
        with self.lock(name):
            if result_file.exists():
                return unseal_passwords(_unwrap(_read_json(result_file)), self.key)
            try:
                value = produce()
            except errors.NeonAlembicError as error:
                _write_json(result_file, {"error": str(error), "kind": type(error).__name__})
                raise
            except Exception as error:
                message = f"{type(error).__name__}: {error}"
                _write_json(result_file, {"error": message, "kind": "NeonAlembicError"})
                raise
            _write_json(result_file, {"value": seal_passwords(value, self.key)})
            return value

    def done(self, name: str) -> Any | None:
        """The recorded result of a run_once step, or None if it never ran (errors re-raise)."""
        result_file = self.path / f"{name}.json"
        if not result_file.exists():
            return None
        return unseal_passwords(_unwrap(_read_json(result_file)), self.key)

    def done_quietly(self, name: str) -> Any | None:
        """Like ``done``, but None for a step that failed (for cleanup paths)."""
        try:
            return self.done(name)
        except errors.NeonAlembicError:
            return None

    # -- the registry of branches this run created ------------------------------------

    def record_created(self, role: BranchRole, branch: NeonBranch) -> None:
        self._append({"event": "created", "role": role.value, "branch": branch.to_dict()})

    def record_deleted(self, branch: NeonBranch) -> None:
        self._append({"event": "deleted", "key": branch.key})

    def record_event(self, event: str, **values: Any) -> None:
        self._append({"event": event, **values})

    def events(self) -> list[dict[str, Any]]:
        registry = self.path / "events.jsonl"
        if not registry.exists():
            return []
        with self.lock("events"):
            lines = registry.read_text().splitlines()
        return [unseal_passwords(json.loads(line), self.key) for line in lines if line.strip()]

    def branches(self) -> list[RecordedBranch]:
        created: dict[str, tuple[BranchRole, NeonBranch]] = {}
        deleted: set[str] = set()
        for event in self.events():
            if event["event"] == "created":
                branch = NeonBranch.from_dict(event["branch"])
                created[branch.key] = (BranchRole(event["role"]), branch)
            elif event["event"] == "deleted":
                deleted.add(event["key"])
        return [
            RecordedBranch(role, branch, key in deleted) for key, (role, branch) in created.items()
        ]

    def created_keys(self) -> set[str]:
        """The ``NeonBranch.key`` of everything this run created."""
        return {recorded.branch.key for recorded in self.branches()}

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(seal_passwords(record, self.key)) + "\n"
        with self.lock("events"):
            fd = os.open(self.path / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


def abandoned_runs(root: Path) -> list[RunDirectory]:
    """Runs whose owning process is gone (killed, or crashed hard).

    The owner's lock decides, so a live run in another PID namespace (another
    container sharing /dev/shm) is never taken for dead. Runs without a lock
    file (older versions) are judged by host and pid.
    """
    runs_dir = root / "runs"
    if not runs_dir.is_dir():
        return []
    host = socket.gethostname()
    found = []
    for path in sorted(runs_dir.iterdir()):
        try:
            owner = _read_json(path / OWNER_FILE)
        except (OSError, ValueError):
            # A run directory without a readable owner file is a create() that was
            # interrupted; give it a minute before calling it abandoned.
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > 60 and not _owner_lock_held(path):
                    found.append(RunDirectory(path))
            continue
        if (path / OWNER_LOCK).exists() and fcntl is not None:
            if not _owner_lock_held(path):
                found.append(RunDirectory(path))
        elif owner.get("host") == host and not process_alive(int(owner["pid"])):
            found.append(RunDirectory(path))
    return found


def live_runs(root: Path) -> int:
    """How many runs in *root* have a live owner (by their owner lock)."""
    runs_dir = root / "runs"
    if not runs_dir.is_dir():
        return 0
    return sum(_owner_lock_held(path) for path in runs_dir.iterdir())


def _owner_lock_held(path: Path) -> bool:
    """Whether a live process holds *path*'s owner lock (ours counts as held)."""
    return path in _HELD_LOCKS or lock_held(path / OWNER_LOCK)


def _unwrap(data: dict[str, Any]) -> Any:
    if "error" in data:
        kind = getattr(errors, data.get("kind", ""), errors.NeonAlembicError)
        if not (isinstance(kind, type) and issubclass(kind, errors.NeonAlembicError)):
            kind = errors.NeonAlembicError
        raise kind(data["error"])
    return data["value"]


def _write_json(path: Path, data: Any) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(data, file)
    os.replace(temporary, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())
