"""pytest-alembic's built-in tests as test items, on every pytest version.

pytest-alembic binds its tests to one collected file (``--alembic-tests-path``,
ini ``pytest_alembic_tests_path``, default ``tests/conftest.py``) so that they
see the fixtures defined there; its collector crashes on pytest >= 9.2
(``'TestCollector' object has no attribute '_nodeid'``). The plugin blocks that
collector and registers ``TestsPathBinding`` instead: the same binding, node
ids, options and items, on any pytest.

- ``--test-alembic``: pytest-alembic's items exactly (its functions, called as
  they are, with the project's ``alembic_runner``).
- ``--neon-alembic-checks``: the same tests, bound to the same file when it is
  collected, else to the project's alembic.ini; run through ``checks.run_check``
  (failing revision named, hints), wrapped in ``neon_migration_context``, and
  moved to the front of the session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pytest_alembic.plugin.plugin import PytestAlembicPlugin

from .checks import Selection, run_check
from .errors import NeonAlembicError

LABEL = "pytest-alembic"  # pytest-alembic's node id part: tests/conftest.py::pytest-alembic::test_x


def selection(config: pytest.Config) -> Selection:
    return Selection(config.getini, config.getoption("pytest_alembic_exclude", None))


class AlembicTests(pytest.Module):
    """pytest-alembic's built-in tests, bound to one file (its conftest.py, or alembic.ini)."""

    def __init__(self, *, neon: bool = True, label: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.neon = neon
        if label:
            _append_to_node_id(self, LABEL)
        self.add_marker("alembic")

    def collect(self) -> list[pytest.Item]:
        tests = selection(self.config).tests(neon_order=self.neon)
        return [
            AlembicCheckItem.from_parent(
                self,
                name=test.raw_name,
                callobj=neon_check(test.function) if self.neon else test.function,
            )
            for test in tests
        ]

    def _getobj(self) -> Any:  # nothing to import: the tests are pytest-alembic's functions
        return None


def _append_to_node_id(node: pytest.Item | pytest.Collector, name: str) -> None:
    if hasattr(node, "_nodeid"):  # pytest < 9.2
        node._nodeid += "::" + name
    else:  # pytest >= 9.2: structured node ids
        node._id = node._id.child(name)


def neon_check(function: Callable[[Any], None]) -> Callable[..., None]:
    """The test for --neon-alembic-checks: the same function, through run_check, inside
    ``neon_migration_context``."""

    def check(alembic_runner: Any, neon_migration_context: Any) -> None:
        run_check(function, alembic_runner)

    check.__name__ = function.__name__
    check.__doc__ = function.__doc__
    return check


class AlembicCheckItem(pytest.Function):
    """One of pytest-alembic's built-in tests, reported as ``[pytest-alembic] test_x``."""

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        neon = getattr(self.parent, "neon", False)
        if neon and isinstance(excinfo.value, (AssertionError, NeonAlembicError)):
            return str(excinfo.value)  # pytest-alembic's message, not the plugin's traceback
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"[pytest-alembic] {self.name}"


@dataclass(eq=False)
class TestsPathBinding(PytestAlembicPlugin):
    """pytest-alembic's collector plugin, fixed for pytest >= 9.2 and shared with
    --neon-alembic-checks."""

    neon: bool = False  # --neon-alembic-checks: our items (else --test-alembic's)

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector):  # type: ignore[override]
        if self.should_register(file_path):
            return AlembicTests.from_parent(parent, path=file_path, neon=self.neon)
        return None


def ini_check_items(parent: pytest.Collector, ini_path: Path) -> list[pytest.Item]:
    """--neon-alembic-checks items bound to alembic.ini (no tests path was collected),
    reported as collected so that "collected N items" counts them."""
    node = AlembicTests.from_parent(parent, path=ini_path, label=False)
    try:
        items: list[pytest.Item] = list(node.collect())
    except ValueError as error:  # an unknown test name in pytest-alembic's settings
        raise pytest.UsageError(f"pytest-neon-alembic: {error}") from None
    report = pytest.CollectReport(node.nodeid, "passed", None, items)
    parent.config.hook.pytest_collectreport(report=report)
    return items
