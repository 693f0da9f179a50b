"""pytest-alembic's alembic_config, alembic_engine and alembic_runner, on fresh branches.

Registered after pytest-alembic's own defaults, so these win over them, while
fixtures of the same names in a project's conftest.py still win over these
(pytest-alembic's checks then run through the project's).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from .fixtures import _setup
from .migrations import AlembicProject, injected_connection
from .session import BranchSession
from .urls import sqlalchemy_url

# The engines this plugin made for alembic_engine -> their branch's connection string.
_BRANCH_ENGINES: weakref.WeakKeyDictionary[sa.Engine, str] = weakref.WeakKeyDictionary()


@pytest.fixture
def alembic_config(_neon_session: BranchSession) -> Any:
    """pytest-alembic's configuration: the project's Alembic configuration, as the plugin found it
    (``--neon-alembic-ini``, the rootdir's alembic.ini, or Flask-Migrate's migrations/alembic.ini).

    Override it in conftest.py as pytest-alembic documents (a dict, an
    ``alembic.config.Config`` or a ``pytest_alembic.Config``); every option of
    pytest-alembic's is honoured, by ``--neon-alembic-checks`` too.
    """
    project = _neon_session.alembic_project()
    return project.config(require_env_py=False) if project is not None else {}


@pytest.fixture
def alembic_engine(request: pytest.FixtureRequest, _neon_session: BranchSession) -> Iterator[Any]:
    """pytest-alembic's database: a SQLAlchemy Engine on a fresh, empty branch of the parent.

    The branch is deleted after the test. Migrations run by ``alembic_runner``
    reach env.py as a Connection that also answers ``.connect()``, so env.py
    files of either shape work. Override it in conftest.py to use another
    database (pytest-alembic's checks then use yours).
    """
    branch = _setup(request, _neon_session.fresh_branch)
    engine = sa.create_engine(sqlalchemy_url(branch.connection_string))
    _BRANCH_ENGINES[engine] = branch.connection_string
    try:
        with _neon_session.environment(branch):  # env.py that reads DATABASE_URL: this branch
            yield engine
    finally:
        engine.dispose()
        _neon_session.release(branch)


@pytest.fixture
def alembic_runner(
    alembic_config: Any,
    alembic_engine: Any,
    _neon_session: BranchSession,
    neon_migration_context: Any,
) -> Iterator[Any]:
    """pytest-alembic's ``alembic_runner``, inside ``neon_migration_context``.

    As pytest-alembic's, built from ``alembic_config`` and ``alembic_engine``;
    a config that names no ini file gets the one the plugin found.
    """
    from pytest_alembic.runner import runner

    config = runner_config(alembic_config, _neon_session.alembic_project())
    with contextlib.ExitStack() as stack:
        migration_context = stack.enter_context(runner(config=config, engine=alembic_engine))
        connection_string = _branch_engine_url(alembic_engine)
        if connection_string is not None:
            # env.py gets a Connection that also answers .connect(): both env.py shapes work.
            connection = stack.enter_context(injected_connection(connection_string))
            migration_context.command_executor.configure(connection=connection)
        yield migration_context


def _branch_engine_url(engine: Any) -> str | None:
    try:
        return _BRANCH_ENGINES.get(engine)
    except TypeError:  # not weak-referenceable or hashable: not one of ours
        return None


def runner_config(raw_config: Any, project: AlembicProject | None) -> Any:
    """pytest-alembic's Config for ``raw_config``; one that names no ini file gets the
    project's (pytest-alembic would read ``alembic.ini`` in the working directory)."""
    from pytest_alembic.config import Config

    config = Config.from_raw_config(raw_config)
    options = config.config_options
    names_a_file = any(options.get(key) for key in ("file", "config_file_name", "alembic_config"))
    if project is None or config.alembic_config is not None or names_a_file:
        return config
    if project.ini_path.resolve() == (Path.cwd() / "alembic.ini").resolve():
        return config  # what pytest-alembic reads anyway
    options = {**options, "file": str(project.ini_path)}
    if not options.get("script_location"):
        options["script_location"] = project.config().get_main_option("script_location")
    config.config_options = options
    return config
