"""pytest-alembic's ``alembic_config`` and ``alembic_engine``, pointed at fresh branches.

Registered after pytest-alembic's own defaults, so these win over them, while
fixtures of the same name in a user's conftest.py still win over these.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .fixtures import _setup
from .migrations import injected_connection
from .session import BranchSession


@pytest.fixture
def alembic_config(_neon_session: BranchSession) -> Any:
    """pytest-alembic's configuration: the project's alembic.ini (as found by the plugin)."""
    project = _neon_session.alembic_project()
    return project.config() if project is not None else {}


@pytest.fixture
def alembic_engine(request: pytest.FixtureRequest, _neon_session: BranchSession) -> Iterator[Any]:
    """For pytest-alembic's ``alembic_runner``: a fresh, empty branch of the parent.

    A SQLAlchemy Connection that also answers ``.connect()``, so env.py files of
    either shape work; the branch is deleted after the test.
    """
    branch = _setup(request, _neon_session.fresh_branch)
    with _neon_session.environment(branch), injected_connection(branch.connection_string) as conn:
        yield conn
    _neon_session.release(branch)
