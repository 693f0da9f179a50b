"""Running PostgreSQL's programs as an unprivileged user when the tests run as root.

PostgreSQL refuses to run as root, and CI and dev containers often run
everything as root.  Then every server command runs as :data:`SYSTEM_USER`
(created on demand), and every file and directory the server needs must be
reachable by that user, which owns nothing and is in no group but its own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ServerError

#: Unprivileged account the server runs as when the test process is root.
SYSTEM_USER = "pytest-neon-alembic"

#: The environment variables PostgreSQL's programs get (all others are dropped).
_PASSED_ENV = frozenset(
    {
        "PATH",
        "TZ",
        "TZDIR",
        "TMPDIR",
        "TMP",
        "TEMP",
        "LD_LIBRARY_PATH",
        "DYLD_LIBRARY_PATH",
        "DYLD_FALLBACK_LIBRARY_PATH",
        "ICU_DATA",
        "SYSTEMROOT",
        "SYSTEMDRIVE",
        "WINDIR",
        "COMSPEC",
        "PATHEXT",
    }
)


def is_root() -> bool:
    return os.geteuid() == 0


def command_output(proc: subprocess.CompletedProcess[str]) -> str:
    """The combined output of a finished command, for error messages."""
    return ((proc.stdout or "") + (proc.stderr or "")).strip() or "(no output)"


@dataclass(frozen=True)
class RunAs:
    """The account commands run as; ``user is None`` means "as ourselves"."""

    user: str | None
    uid: int
    gid: int

    @classmethod
    def current(cls) -> RunAs:
        return cls(None, os.getuid(), os.getgid())

    @classmethod
    def for_server(cls) -> RunAs:
        """Ourselves, unless we are root: then the system user."""
        if not is_root():
            return cls.current()
        uid, gid = ensure_system_user()
        return cls(SYSTEM_USER, uid, gid)

    @property
    def switches_user(self) -> bool:
        return self.user is not None

    def chown(self, path: Path) -> None:
        if self.switches_user:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def chown_tree(self, root: Path) -> None:
        if not self.switches_user:
            return
        self.chown(root)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), self.uid, self.gid, follow_symlinks=False)

    def _popen_kwargs(
        self, ld_library_path: str | None, extra_env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        # Only what the programs need: no secret of the test process (NEON_API_KEY,
        # cloud credentials, DATABASE_URL) reaches the server, its children or its
        # /proc/<pid>/environ; no PG* variable (a user's PGDATA/PGPORT) redirects it.
        # The C locale keeps the messages we parse in English.
        env = {k: v for k, v in os.environ.items() if k.upper() in _PASSED_ENV}
        env["LC_ALL"] = env["LANG"] = "C"
        env.update(extra_env or {})
        if ld_library_path:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (ld_library_path, env.get("LD_LIBRARY_PATH")) if p
            )
        # cwd "/": the caller's cwd may be unreadable for the server user.
        kwargs: dict[str, Any] = {"env": env, "cwd": "/", "stdin": subprocess.DEVNULL}
        if self.switches_user:
            # extra_groups=[] drops root's supplementary groups too.
            kwargs.update(user=self.uid, group=self.gid, extra_groups=[])
        return kwargs

    def popen(
        self, args: Sequence[str | os.PathLike[str]], *, ld_library_path: str | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [os.fspath(a) for a in args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            **self._popen_kwargs(ld_library_path),
        )

    def run(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        timeout: float,
        ld_library_path: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a program and capture its output; failing to run it is exit status -1, not raised."""
        try:
            return subprocess.run(
                [os.fspath(a) for a in args],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
                **self._popen_kwargs(ld_library_path, extra_env),
            )
        except subprocess.TimeoutExpired as exc:
            out = b"".join(
                s.encode() if isinstance(s, str) else s for s in (exc.stdout, exc.stderr) if s
            ).decode(errors="replace")
            return subprocess.CompletedProcess(exc.cmd, -1, out, f"timed out after {timeout}s")
        except OSError as exc:
            return subprocess.CompletedProcess(list(args), -1, "", f"could not run: {exc}")


def _lookup_system_user() -> tuple[int, int] | None:
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(SYSTEM_USER)
        return entry.pw_uid, entry.pw_gid
    return None


def ensure_system_user() -> tuple[int, int]:
    """Return (uid, gid) of :data:`SYSTEM_USER`, creating the account if needed.

    Several test processes (xdist workers, parallel CI jobs) may get here at
    once; ``useradd`` then fails for all but one, so success is judged by
    looking the user up again rather than by useradd's exit status.
    """
    found = _lookup_system_user()
    if found:
        return found
    # root's PATH may lack the sbin directories.
    useradd = shutil.which("useradd") or next(
        (p for p in ("/usr/sbin/useradd", "/sbin/useradd") if os.access(p, os.X_OK)), None
    )
    if useradd is None:
        raise ServerError(
            "PostgreSQL refuses to run as root, so the embedded server must run as the "
            f"unprivileged user {SYSTEM_USER!r}, which does not exist, and `useradd` was not "
            f"found to create it. Create it yourself (e.g. `adduser -S -H {SYSTEM_USER}`), run "
            "the tests as a non-root user, or point --neon-local-url / NEON_LOCAL_URL at an "
            "existing server."
        )
    shell = next(
        (s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), "/bin/false"
    )
    args = [useradd, "--system", "--no-create-home", "--shell", shell, "--user-group", SYSTEM_USER]
    last = ""
    for attempt in range(10):
        last = command_output(RunAs.current().run(args, timeout=60))
        found = _lookup_system_user()
        if found:
            return found
        time.sleep(0.1 * (attempt + 1))
    raise ServerError(
        "PostgreSQL refuses to run as root, so the embedded server must run as the unprivileged "
        f"user {SYSTEM_USER!r}, but creating it with `{useradd} --system ... {SYSTEM_USER}` "
        f"failed: {last}\nCreate the user yourself, run the tests as a non-root user, or point "
        "--neon-local-url / NEON_LOCAL_URL at an existing server."
    )


def first_unreachable(path: Path, *, read: bool = True, execute: bool = False) -> Path | None:
    """First path component that "other" users cannot pass through, or None if all can.

    Both the literal path and its resolved form are checked, because the
    kernel walks the directories of each symlink target as well.
    """
    try:
        targets = {path.absolute(), path.resolve()}
    except OSError:
        return path
    for target in targets:
        for directory in reversed(target.parents):
            try:
                if not os.stat(directory).st_mode & stat.S_IXOTH:
                    return directory
            except OSError:
                return directory
        try:
            mode = os.stat(target).st_mode
        except OSError:
            return target
        needed = (stat.S_IROTH if read else 0) | (
            stat.S_IXOTH if execute or stat.S_ISDIR(mode) else 0
        )
        if mode & needed != needed:
            return target
    return None


def open_run_dir(run_dir: Path) -> None:
    """Let the system user into *run_dir*, or explain which parent keeps it out."""
    blocked = first_unreachable(run_dir.parent, read=False)
    if blocked is not None:
        mode = stat.S_IMODE(os.stat(blocked).st_mode)
        raise ServerError(
            f"The embedded PostgreSQL server runs as the unprivileged user {SYSTEM_USER!r} "
            f"(PostgreSQL refuses to run as root), but it cannot reach its run directory "
            f"{run_dir} because {blocked} is not traversable by other users (mode "
            f"{mode:o}). Use a run directory whose parents are all o+x, e.g. under /dev/shm or "
            "/tmp."
        )
    os.chmod(run_dir, os.stat(run_dir).st_mode | stat.S_IXOTH)
