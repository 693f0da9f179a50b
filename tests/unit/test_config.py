"""config.read_settings: precedence, conversion, validation, alembic.ini discovery, repr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_neon_alembic.config import DEFAULT_BRANCH_EXPIRY, Settings, read_settings
from pytest_neon_alembic.errors import ConfigError

CREDENTIALS = {"NEON_API_KEY": "napi_secret_key_123", "NEON_PROJECT_ID": "proj-quiet-lake-42"}


def settings(
    tmp_path: Path,
    *,
    cli: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    ini: dict[str, Any] | None = None,
    rootdir: Path | None = None,
    invocation_dir: Path | None = None,
    ini_dir: Path | None = None,
) -> Settings:
    """read_settings with plain dicts: cli by Settings name, ini by ini key, env by variable."""
    cli = cli or {}
    ini = ini or {}
    return read_settings(
        cli=lambda name: cli.get(name),
        ini=lambda key: ini.get(key),
        environ=env or {},
        rootdir=rootdir or tmp_path,
        invocation_dir=invocation_dir or tmp_path,
        ini_dir=ini_dir,
    )


# -- precedence: CLI > environment > ini > default -------------------------------------------------

# (Settings name, env variable, raw (cli, env, ini) values, expected from each source, default)
PRECEDENCE_CASES = [
    pytest.param(
        "database",
        "NEON_DATABASE",
        ("from_cli", "from_env", "from_ini"),
        ("from_cli", "from_env", "from_ini"),
        "neondb",
        id="string",
    ),
    pytest.param(
        "keep_branches",
        "NEON_KEEP_BRANCHES",
        # store_true on the CLI gives True; env and ini are text.
        (True, "false", "yes"),
        (True, False, True),
        False,
        id="bool",
    ),
    pytest.param(
        "branch_expiry",
        "NEON_BRANCH_EXPIRY",
        ("111", "222", "333"),
        (111, 222, 333),
        DEFAULT_BRANCH_EXPIRY,
        id="int",
    ),
    pytest.param(
        "keep_server",
        "NEON_KEEP_SERVER",
        ("15", "0.5", "2"),
        (15.0, 0.5, 2.0),
        0,
        id="number",
    ),
]


@pytest.mark.parametrize(("name", "env_var", "raw", "expected", "default"), PRECEDENCE_CASES)
def test_cli_beats_env_beats_ini_beats_default(
    tmp_path: Path, name: str, env_var: str, raw: tuple, expected: tuple, default: Any
) -> None:
    cli_value, env_value, ini_value = raw
    from_cli, from_env, from_ini = expected
    ini_key = "neon_" + name

    everything = settings(
        tmp_path, cli={name: cli_value}, env={env_var: env_value}, ini={ini_key: ini_value}
    )
    assert getattr(everything, name) == from_cli

    env_and_ini = settings(tmp_path, env={env_var: env_value}, ini={ini_key: ini_value})
    assert getattr(env_and_ini, name) == from_env

    ini_only = settings(tmp_path, ini={ini_key: ini_value})
    assert getattr(ini_only, name) == from_ini

    nothing = settings(tmp_path)
    assert getattr(nothing, name) == default


def test_empty_environment_variable_falls_through_to_ini(tmp_path: Path) -> None:
    result = settings(tmp_path, env={"NEON_DATABASE": ""}, ini={"neon_database": "from_ini"})
    assert result.database == "from_ini"


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(
            {"cli": {"branch_expiry": "0"}, "env": {"NEON_BRANCH_EXPIRY": "900"}}, id="cli"
        ),
        pytest.param(
            {"env": {"NEON_BRANCH_EXPIRY": "0"}, "ini": {"neon_branch_expiry": "9"}}, id="env"
        ),
        pytest.param({"ini": {"neon_branch_expiry": "0"}}, id="ini"),
    ],
)
def test_branch_expiry_zero_stays_zero(tmp_path: Path, kwargs: dict) -> None:
    assert settings(tmp_path, **kwargs).branch_expiry == 0


def test_negative_branch_expiry_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NEON_BRANCH_EXPIRY"):
        settings(tmp_path, env={"NEON_BRANCH_EXPIRY": "-5"})


# -- invalid values name their source --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "source", "bad"),
    [
        ({"cli": {"branch_expiry": "ten"}}, "--neon-branch-expiry", "ten"),
        ({"env": {"NEON_BRANCH_EXPIRY": "1.5"}}, "NEON_BRANCH_EXPIRY", "1.5"),
        ({"ini": {"neon_branch_expiry": "soon"}}, "neon_branch_expiry", "soon"),
        ({"env": {"NEON_KEEP_BRANCHES": "maybe"}}, "NEON_KEEP_BRANCHES", "maybe"),
        ({"ini": {"neon_alembic_checks": "perhaps"}}, "neon_alembic_checks", "perhaps"),
        ({"env": {"NEON_RESET": "savepoint"}}, "NEON_RESET", "savepoint"),
        ({"ini": {"neon_backend": "cloud"}}, "neon_backend", "cloud"),
        ({"cli": {"backend": "sqlite"}}, "--neon-backend", "sqlite"),
        ({"cli": {"keep_server": "a while"}}, "--neon-keep-server", "a while"),
        ({"env": {"NEON_KEEP_SERVER": "-1"}}, "NEON_KEEP_SERVER", "-1"),
        ({"ini": {"neon_keep_server": "nan"}}, "neon_keep_server", "nan"),
    ],
)
def test_invalid_value_is_a_config_error_naming_its_source(
    tmp_path: Path, kwargs: dict, source: str, bad: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, **kwargs)
    message = str(caught.value)
    assert source in message
    assert bad in message


def test_invalid_env_value_is_reported_even_when_ini_is_valid(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NEON_RESET"):
        settings(tmp_path, env={"NEON_RESET": "nope"}, ini={"neon_reset": "transaction"})


def test_local_url_must_be_postgresql_and_error_masks_its_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, env={"NEON_LOCAL_URL": "mysql://root:hunter2secret@db:3306/app"})
    message = str(caught.value)
    assert "NEON_LOCAL_URL" in message
    assert "hunter2secret" not in message
    assert "postgresql://" in message


# -- backend resolution ----------------------------------------------------------------------------


def test_auto_backend_is_local_without_credentials(tmp_path: Path) -> None:
    assert settings(tmp_path).backend == "local"


@pytest.mark.parametrize("only", ["NEON_API_KEY", "NEON_PROJECT_ID"])
def test_auto_backend_is_local_with_only_one_credential(tmp_path: Path, only: str) -> None:
    assert settings(tmp_path, env={only: CREDENTIALS[only]}).backend == "local"


def test_auto_backend_is_neon_with_both_credentials(tmp_path: Path) -> None:
    result = settings(tmp_path, env=dict(CREDENTIALS))
    assert result.backend == "neon"
    assert result.api_key == CREDENTIALS["NEON_API_KEY"]
    assert result.project_id == CREDENTIALS["NEON_PROJECT_ID"]


def test_credentials_from_cli_also_select_neon(tmp_path: Path) -> None:
    cli = {"api_key": "k", "project_id": "p"}
    assert settings(tmp_path, cli=cli).backend == "neon"


def test_explicit_local_backend_wins_over_credentials(tmp_path: Path) -> None:
    result = settings(tmp_path, cli={"backend": "local"}, env=dict(CREDENTIALS))
    assert result.backend == "local"


def test_neon_backend_without_credentials_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, cli={"backend": "neon"})
    message = str(caught.value)
    assert "NEON_API_KEY" in message
    assert "NEON_PROJECT_ID" in message
    assert "--neon-backend" in message


def test_neon_backend_with_only_the_key_names_the_missing_project(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(
            tmp_path,
            env={"NEON_BACKEND": "neon", "NEON_API_KEY": CREDENTIALS["NEON_API_KEY"]},
        )
    message = str(caught.value)
    assert "NEON_PROJECT_ID" in message
    assert "NEON_API_KEY" not in message
    assert CREDENTIALS["NEON_API_KEY"] not in message


def test_neon_backend_with_credentials_is_neon(tmp_path: Path) -> None:
    assert settings(tmp_path, env={"NEON_BACKEND": "neon", **CREDENTIALS}).backend == "neon"


# -- alembic.ini discovery -------------------------------------------------------------------------


def write_ini(directory: Path, name: str = "alembic.ini") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("[alembic]\nscript_location = migrations\n")
    return path


def test_explicit_missing_alembic_ini_names_the_resolved_path(tmp_path: Path) -> None:
    invocation = tmp_path / "invoked"
    invocation.mkdir()
    with pytest.raises(ConfigError) as caught:
        settings(
            tmp_path,
            cli={"alembic_ini": "conf/alembic.ini"},
            invocation_dir=invocation,
            rootdir=tmp_path,
        )
    message = str(caught.value)
    assert str(invocation / "conf" / "alembic.ini") in message
    assert "--neon-alembic-ini" in message


def test_explicit_missing_alembic_ini_is_an_error_even_if_rootdir_has_one(tmp_path: Path) -> None:
    write_ini(tmp_path)
    with pytest.raises(ConfigError, match="NEON_ALEMBIC_INI"):
        settings(tmp_path, env={"NEON_ALEMBIC_INI": "missing.ini"})


def test_relative_cli_path_is_read_from_the_invocation_dir(tmp_path: Path) -> None:
    rootdir, invocation, ini_dir = tmp_path / "root", tmp_path / "invoked", tmp_path / "inidir"
    for directory in (rootdir, invocation, ini_dir):
        write_ini(directory / "conf")  # the same relative path exists under each of them
    result = settings(
        tmp_path,
        cli={"alembic_ini": "conf/alembic.ini"},
        rootdir=rootdir,
        invocation_dir=invocation,
        ini_dir=ini_dir,
    )
    assert result.alembic_ini == (invocation / "conf" / "alembic.ini").resolve()


def test_relative_ini_option_path_is_read_from_the_ini_files_dir(tmp_path: Path) -> None:
    rootdir, invocation, ini_dir = tmp_path / "root", tmp_path / "invoked", tmp_path / "inidir"
    for directory in (rootdir, invocation, ini_dir):
        write_ini(directory / "conf")
    result = settings(
        tmp_path,
        ini={"neon_alembic_ini": "conf/alembic.ini"},
        rootdir=rootdir,
        invocation_dir=invocation,
        ini_dir=ini_dir,
    )
    assert result.alembic_ini == (ini_dir / "conf" / "alembic.ini").resolve()


def test_absolute_alembic_ini_path_is_used_as_is(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "elsewhere", "custom.ini")
    result = settings(tmp_path, cli={"alembic_ini": str(path)}, invocation_dir=tmp_path / "x")
    assert result.alembic_ini == path.resolve()


def test_without_option_the_rootdir_alembic_ini_is_used(tmp_path: Path) -> None:
    rootdir = tmp_path / "root"
    path = write_ini(rootdir)
    write_ini(tmp_path / "invoked")  # not looked at without an option
    result = settings(tmp_path, rootdir=rootdir, invocation_dir=tmp_path / "invoked")
    assert result.alembic_ini == path


def test_without_option_and_without_rootdir_alembic_ini_there_is_none(tmp_path: Path) -> None:
    rootdir = tmp_path / "root"
    rootdir.mkdir()
    write_ini(tmp_path / "invoked")
    result = settings(tmp_path, rootdir=rootdir, invocation_dir=tmp_path / "invoked")
    assert result.alembic_ini is None


# -- secrets never in repr -------------------------------------------------------------------------


def test_repr_hides_the_api_key_and_the_local_url_password(tmp_path: Path) -> None:
    api_key = "napi_verysecretvalue_0123456789"
    password = "pg-pass-w0rd-xyz"
    result = settings(
        tmp_path,
        cli={"api_key": api_key, "project_id": "proj-1", "backend": "neon"},
        env={"NEON_LOCAL_URL": f"postgresql://admin:{password}@db.internal:5432/postgres"},
    )
    assert result.api_key == api_key  # the value is kept, only hidden
    assert result.local_url is not None and password in result.local_url
    for text in (repr(result), str(result), f"{result!r}"):
        assert api_key not in text
        assert password not in text
        assert "admin:***@db.internal:5432" in text
    assert "proj-1" in repr(result)


def test_settings_round_trip_through_dict(tmp_path: Path) -> None:
    path = write_ini(tmp_path)
    original = settings(tmp_path, env={"NEON_BRANCH_EXPIRY": "0", "NEON_RESET": "transaction"})
    assert original.alembic_ini == path
    assert Settings.from_dict(original.to_dict()) == original
