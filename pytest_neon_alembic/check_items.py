"""pytest-alembic's checks as test items of the run.

``--neon-alembic-checks`` adds one test item per check (single head revision,
upgrade, model definitions match DDL, up/down consistency) at the front of the
session. The first check item to run executes every selected check, in one
process of the run (``checks.run_checks``), and records the outcomes; each item
then reports its own, with pytest-alembic's failure message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .checks import CHECKS
from .errors import NeonAlembicError
from .fixtures import SESSION_KEY

SELECTED_KEY = pytest.StashKey[tuple[str, ...]]()


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


def check_items(session: pytest.Session, ini_path: Path) -> list[pytest.Item]:
    """The check items, reported as collected (so "collected N items" counts them)."""
    node = AlembicChecks.from_parent(session, path=ini_path)
    items: list[pytest.Item] = list(node.collect())
    report = pytest.CollectReport(node.nodeid, "passed", None, items)
    session.config.hook.pytest_collectreport(report=report)
    return items
