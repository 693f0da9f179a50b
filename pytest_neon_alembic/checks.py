"""pytest-alembic's default checks, once per run, each on a fresh empty branch.

The checks are pytest-alembic's own functions, called with a runner on a fresh
branch of the parent; pytest-alembic's collector is not used (it crashes on
pytest >= 9.2). The test items that report them are in ``check_items.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from .branch import NeonBranch
from .errors import MigrationError
from .migrations import AlembicProject, failing_revision, injected_connection

CHECKS = (
    "test_single_head_revision",
    "test_upgrade",
    "test_model_definitions_match_ddl",
    "test_up_down_consistency",
)
NEEDS_NO_DATABASE = {"test_single_head_revision"}

TARGET_METADATA_HINT = (
    "The model definitions match DDL check compares your models with the migrated "
    "schema, so env.py must give Alembic your models' MetaData: in env.py set "
    "`target_metadata = Base.metadata` (your declarative base) and pass it to "
    "context.configure(connection=connection, target_metadata=target_metadata)."
)


def check_function(name: str) -> Callable[[Any], None]:
    from pytest_alembic.tests import default

    return getattr(default, name)


def run_check(name: str, project: AlembicProject, branch: NeonBranch | None) -> dict | None:
    """Run one check; None when it passed, else its failure as ``{"message", "context"}``."""
    from pytest_alembic import runner
    from pytest_alembic.config import Config
    from pytest_alembic.plugin.error import AlembicTestFailure

    config = Config.from_raw_config(project.config())
    with contextlib.ExitStack() as stack:
        connection = (
            stack.enter_context(injected_connection(branch.connection_string)) if branch else None
        )
        alembic_runner = stack.enter_context(runner(config=config, engine=connection))
        try:
            check_function(name)(alembic_runner)
        except AlembicTestFailure as failure:
            return {"message": failure.args[0], "context": list(failure.context or [])}
        except Exception as error:  # a migration raised, or the check could not run at all
            message = f"{type(error).__name__}: {error}"
            revision = failing_revision(error, project.script_directory())
            if revision is not None:
                message = (
                    f"Migration {revision.revision} ({revision.doc or 'no message'}, "
                    f"{revision.path}) failed: {message}"
                )
            if "does not provide a MetaData object" in str(error):
                message = f"{message}\n{TARGET_METADATA_HINT}"
            return {"message": message, "context": []}
    return None


def run_checks(
    names: tuple[str, ...],
    project: AlembicProject | None,
    fresh_branch: Callable[[str], NeonBranch],
    release: Callable[[NeonBranch], None],
) -> dict[str, dict | None]:
    """Run the named checks, each that needs a database on its own fresh branch."""
    if project is None:
        raise MigrationError(
            "--neon-alembic-checks needs an Alembic configuration: put alembic.ini in the "
            "rootdir or pass --neon-alembic-ini."
        )
    outcomes: dict[str, dict | None] = {}
    for name in names:
        if name in NEEDS_NO_DATABASE:
            outcomes[name] = run_check(name, project, None)
            continue
        branch = fresh_branch(name)
        try:
            outcomes[name] = run_check(name, project, branch)
        finally:
            release(branch)
    return outcomes
