"""pytest-alembic's default checks, once per run, each on a fresh empty branch.

``--neon-alembic-checks`` adds one test item per check (single head revision,
upgrade, model definitions match DDL, up/down consistency) at the front of the
session. The checks are pytest-alembic's own functions, called with a runner
on a fresh branch of the parent; pytest-alembic's collector is not used (it
crashes on pytest >= 9.2). The first check item to run executes every selected
check, in one process of the run, and records the outcomes; each item then
reports its own, with pytest-alembic's failure message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .branch import NeonBranch
from .errors import MigrationError, NeonAlembicError
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


class AlembicChecks(pytest.File):
    """The check items, attached to the project's alembic.ini."""

    def collect(self) -> Iterator[AlembicCheckItem]:
        for name in CHECKS:
            yield AlembicCheckItem.from_parent(self, name=name)


class AlembicCheckItem(pytest.Item):
    """One of pytest-alembic's default checks, as a test item of the run."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_marker("alembic")

    def runtest(self) -> None:
        from pytest_alembic.plugin.error import AlembicTestFailure

        from .fixtures import SESSION_KEY

        session = self.config.stash[SESSION_KEY]
        selected = self.config.stash.get(SELECTED_KEY, (self.name,))
        outcome = session.alembic_checks(selected)[self.name]
        if outcome is not None:
            raise AlembicTestFailure(outcome["message"], [tuple(c) for c in outcome["context"]])

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:
        if isinstance(excinfo.value, (AssertionError, NeonAlembicError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"[pytest-alembic] {self.name}"


SELECTED_KEY = pytest.StashKey[tuple[str, ...]]()


def check_items(session: pytest.Session, ini_path: Path) -> list[pytest.Item]:
    """The check items, reported as collected (so "collected N items" counts them)."""
    node = AlembicChecks.from_parent(session, path=ini_path)
    items: list[pytest.Item] = list(node.collect())
    report = pytest.CollectReport(node.nodeid, "passed", None, items)
    session.config.hook.pytest_collectreport(report=report)
    return items


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
