"""Settings: every option read once, from the command line, the environment or the ini file.

Precedence is CLI > environment > ini > default, for every option alike. The
values are validated here, at session start, so a misconfiguration is one clear
error before any test runs — never a skip, and never a traceback from a fixture.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .migrations import find_alembic_ini
from .redact import mask_url

BACKENDS = ("auto", "neon", "local")
BRANCH_KINDS = ("isolated", "readonly", "dirty", "shared")
RESET_STRATEGIES = ("branch", "transaction")
DEFAULT_BRANCH_EXPIRY = 600
DEFAULT_NEON_API_URL = "https://console.neon.tech/api/v2"


@dataclass(frozen=True)
class Option:
    """One user-facing option: its CLI flag, environment variable and ini key."""

    name: str  # attribute of Settings; the ini key is "neon_" + name
    flag: str
    env: str | None
    help: str
    default: Any = None
    kind: str = "string"  # "string", "bool", "int", "number" or "choice"
    choices: tuple[str, ...] = ()

    @property
    def ini(self) -> str:
        return "neon_" + self.name


OPTIONS: tuple[Option, ...] = (
    # pytest-neon 2.3's options, same names and environment variables.
    Option("api_key", "--neon-api-key", "NEON_API_KEY", "Neon API key."),
    Option("project_id", "--neon-project-id", "NEON_PROJECT_ID", "Neon project ID."),
    Option(
        "parent_branch",
        "--neon-parent-branch",
        "NEON_PARENT_BRANCH_ID",
        "Parent of the test branches: a Neon branch ID (default: the project's default "
        "branch), or on the local backend a database to clone (default: template1).",
    ),
    Option("database", "--neon-database", "NEON_DATABASE", "Neon database name.", "neondb"),
    Option("role", "--neon-role", "NEON_ROLE", "Neon role name.", "neondb_owner"),
    Option(
        "keep_branches",
        "--neon-keep-branches",
        "NEON_KEEP_BRANCHES",
        "Keep the branches this session created (for debugging).",
        False,
        "bool",
    ),
    Option(
        "branch_expiry",
        "--neon-branch-expiry",
        "NEON_BRANCH_EXPIRY",
        "Seconds after which Neon deletes test branches on its own (0: never).",
        DEFAULT_BRANCH_EXPIRY,
        "int",
    ),
    Option(
        "env_var",
        "--neon-env-var",
        "NEON_ENV_VAR",
        "Environment variable(s) that hold the test's connection string (several: "
        "whitespace-separated, e.g. 'DATABASE_URL SQLALCHEMY_DATABASE_URI').",
        "DATABASE_URL",
    ),
    # New options.
    Option(
        "backend",
        "--neon-backend",
        "NEON_BACKEND",
        "Where branches come from: neon (API), local (embedded or --neon-local-url), or auto "
        "(neon when NEON_API_KEY and NEON_PROJECT_ID are set).",
        "auto",
        "choice",
        BACKENDS,
    ),
    Option(
        "api_url",
        "--neon-api-url",
        "NEON_API_URL",
        "Base URL of the Neon API (a proxy or an emulator).",
        DEFAULT_NEON_API_URL,
    ),
    Option(
        "local_url",
        "--neon-local-url",
        "NEON_LOCAL_URL",
        "Use this PostgreSQL server (postgresql://user:password@host:port/db, a role with "
        "CREATEDB and CREATEROLE) instead of starting an embedded one.",
    ),
    Option(
        "alembic_ini",
        "--neon-alembic-ini",
        "NEON_ALEMBIC_INI",
        "Path of alembic.ini (default: alembic.ini in the rootdir, else migrations/alembic.ini, "
        "if present).",
    ),
    Option(
        "alembic_checks",
        "--neon-alembic-checks",
        "NEON_ALEMBIC_CHECKS",
        "Run pytest-alembic's migration checks once per run on a fresh branch.",
        False,
        "bool",
    ),
    Option(
        "reset",
        "--neon-reset",
        "NEON_RESET",
        "How neon_branch_isolated is reset after a test: branch or transaction.",
        "branch",
        "choice",
        RESET_STRATEGIES,
    ),
    Option(
        "no_cache",
        "--neon-no-cache",
        "NEON_NO_CACHE",
        "Always run migrations, ignoring the cached migrated state.",
        False,
        "bool",
    ),
    Option(
        "pg_version",
        "--neon-pg-version",
        "NEON_PG_VERSION",
        "PostgreSQL major version of the embedded server (e.g. 17), among the builds "
        "installed; default: the first found. On Neon the project's version is used.",
        None,
        "int",
    ),
    Option(
        "keep_server",
        "--neon-keep-server",
        "NEON_KEEP_SERVER",
        "Minutes to keep the embedded server running once no run uses it, so that the next "
        "runs start without starting PostgreSQL (0: each run starts and stops its own).",
        0,
        "number",
    ),
    Option(
        "cleanup",
        "--neon-cleanup",
        "NEON_CLEANUP",
        "Run no tests: list this plugin's branches left in the project by earlier runs, and "
        "delete the stale ones (runs that are over).",
        False,
        "bool",
    ),
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one pytest session."""

    backend: str  # "neon" or "local" (auto is resolved here)
    api_key: str | None = field(default=None, repr=False)
    project_id: str | None = None
    parent_branch: str | None = None
    database: str = "neondb"
    role: str = "neondb_owner"
    keep_branches: bool = False
    branch_expiry: int = DEFAULT_BRANCH_EXPIRY
    env_var: str = "DATABASE_URL"
    api_url: str = DEFAULT_NEON_API_URL
    local_url: str | None = field(default=None, repr=False)
    alembic_ini: Path | None = None
    alembic_checks: bool = False
    reset: str = "branch"
    no_cache: bool = False
    pg_version: int | None = None
    keep_server: float = 0  # minutes
    cleanup: bool = False
    default_branch: str | None = None  # ini neon_default_branch

    def __repr__(self) -> str:  # secrets stay out of reprs, tracebacks and `pytest -l`
        shown = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("api_key", "local_url")
        }
        shown["api_key"] = "***" if self.api_key else None
        shown["local_url"] = mask_url(self.local_url) if self.local_url else None
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def env_var_names(self) -> tuple[str, ...]:
        return env_var_names(self.env_var)

    def to_dict(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values["alembic_ini"] = str(self.alembic_ini) if self.alembic_ini else None
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Settings:
        values = dict(values)
        if values.get("alembic_ini"):
            values["alembic_ini"] = Path(values["alembic_ini"])
        return cls(**values)


def read_settings(
    cli: Callable[[str], Any],
    ini: Callable[[str], Any],
    environ: dict[str, str] | os._Environ[str],
    rootdir: Path,
    invocation_dir: Path,
    ini_dir: Path | None,
) -> Settings:
    """Resolve every option (CLI > environment > ini > default) and validate the result.

    Kept free of pytest objects so it can be tested with plain dicts; the plugin
    passes ``config.getoption`` and ``config.getini``.
    """
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        value, source = _lookup(option, cli, ini, environ)
        raw[option.name] = _convert(option, value, source)
        sources[option.name] = source

    raw["alembic_ini"] = _resolve_alembic_ini(
        raw["alembic_ini"], sources["alembic_ini"], rootdir, invocation_dir, ini_dir
    )
    if raw["branch_expiry"] < 0:
        raise ConfigError(
            f"{_where('branch_expiry', sources)} must be 0 (no expiry) or a positive number of "
            f"seconds, got {raw['branch_expiry']}."
        )
    if raw["pg_version"] is not None and not 13 <= raw["pg_version"] <= 99:
        raise ConfigError(
            f"{_where('pg_version', sources)} must be a PostgreSQL major version (13 or later, "
            f"e.g. 17), got {raw['pg_version']}."
        )
    if not 0 <= raw["keep_server"] < float("inf"):
        raise ConfigError(
            f"{_where('keep_server', sources)} must be 0 (no kept server) or a number of minutes, "
            f"got {raw['keep_server']}."
        )
    local_url = raw["local_url"]
    if local_url and not local_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"{_where('local_url', sources)} must be a postgresql:// URL, got "
            f"{mask_url(local_url)!r}. Example: postgresql://user:password@localhost:5432/postgres"
        )
    bad_names = [name for name in env_var_names(raw["env_var"]) if not name.isidentifier()]
    if bad_names or not env_var_names(raw["env_var"]):
        raise ConfigError(
            f"{_where('env_var', sources)} must name environment variables (letters, digits and "
            f"_, several separated by spaces), got {raw['env_var']!r}."
        )
    if raw["alembic_checks"] and raw["alembic_ini"] is None:
        raise ConfigError(
            f"{_where('alembic_checks', sources)} asks for pytest-alembic's checks, but there is "
            f"no alembic.ini in {rootdir} (nor migrations/alembic.ini). Pass "
            "--neon-alembic-ini=path/to/alembic.ini."
        )
    raw["backend"] = _resolve_backend(raw, sources)
    default_branch = ini("neon_default_branch")
    if default_branch not in (None, "", []):
        default_branch = str(default_branch).strip()
        if default_branch not in BRANCH_KINDS:
            raise ConfigError(
                f"ini option neon_default_branch must be one of {', '.join(BRANCH_KINDS)}; "
                f"got {default_branch!r}."
            )
        raw["default_branch"] = default_branch
    return Settings(**raw)


def env_var_names(value: str) -> tuple[str, ...]:
    """The names in ``--neon-env-var`` (whitespace- or comma-separated)."""
    return tuple(dict.fromkeys(value.replace(",", " ").split()))


def early_env_var_names(cli: Any, ini: Callable[[str], Any], environ: Any) -> tuple[str, ...]:
    """``--neon-env-var`` read before the session's settings, from pytest's earliest hook.

    Invalid names are left to ``read_settings`` to report; here they are skipped.
    """
    for value in (cli, environ.get("NEON_ENV_VAR"), ini("neon_env_var")):
        if value not in (None, "", []):
            names = tuple(n for n in env_var_names(str(value)) if n.isidentifier())
            return names or ("DATABASE_URL",)
    return ("DATABASE_URL",)


def _lookup(
    option: Option, cli: Callable[[str], Any], ini: Callable[[str], Any], environ: Any
) -> tuple[Any, str]:
    value = cli(option.name)
    if value is not None:
        return value, option.flag
    if option.env and environ.get(option.env) not in (None, ""):
        return environ[option.env], option.env
    value = ini(option.ini)
    if value not in (None, "", []):
        return value, f"ini option {option.ini}"
    return option.default, "default"


def _convert(option: Option, value: Any, source: str) -> Any:
    if value is None or source == "default":
        return value
    if option.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{source} must be true or false, got {value!r}.")
    if option.kind == "int":
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{source} must be a whole number, got {value!r}.") from None
    if option.kind == "number":
        try:
            return float(str(value).strip())
        except ValueError:
            raise ConfigError(f"{source} must be a number, got {value!r}.") from None
    text = str(value).strip()
    if option.kind == "choice" and text not in option.choices:
        raise ConfigError(f"{source} must be one of {', '.join(option.choices)}; got {text!r}.")
    return text


def _resolve_alembic_ini(
    value: str | None,
    source: str,
    rootdir: Path,
    invocation_dir: Path,
    ini_dir: Path | None,
) -> Path | None:
    """An explicit path must exist; without one, the rootdir's alembic.ini (or Flask-Migrate's
    migrations/alembic.ini) is optional."""
    if value is None:
        return find_alembic_ini(rootdir)
    base = (ini_dir or rootdir) if source.startswith("ini option") else invocation_dir
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise ConfigError(
            f"{source} names {value!r}, but there is no file at {path}. Give the path of your "
            f"project's alembic.ini (relative paths are read from {base}), or remove the option "
            f"to use {rootdir / 'alembic.ini'} when it exists."
        )
    return path.resolve()


def _resolve_backend(raw: dict[str, Any], sources: dict[str, str]) -> str:
    has_credentials = bool(raw["api_key"] and raw["project_id"])
    backend = raw["backend"]
    if backend == "auto":
        return "neon" if has_credentials else "local"
    if backend == "neon" and not has_credentials:
        missing = [
            name
            for name, env in (("api_key", "NEON_API_KEY"), ("project_id", "NEON_PROJECT_ID"))
            if not raw[name]
        ]
        raise ConfigError(
            f"{_where('backend', sources)} asks for the Neon backend, but "
            + " and ".join(f"{env} (--neon-{n.replace('_', '-')})" for n, env in _pairs(missing))
            + " is not set. Set the credentials (in CI: the repository secrets), or use "
            "--neon-backend=local."
        )
    return backend


def _pairs(missing: list[str]) -> list[tuple[str, str]]:
    envs = {"api_key": "NEON_API_KEY", "project_id": "NEON_PROJECT_ID"}
    return [(name, envs[name]) for name in missing]


def _where(name: str, sources: dict[str, str]) -> str:
    source = sources[name]
    return f"The default {name}" if source == "default" else source
