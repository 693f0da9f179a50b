"""An inner-session plugin (``-p examples_harness``) for pytest-alembic's example projects.

pytest-alembic's examples get their PostgreSQL from pytest-mock-resources
(``create_postgres_fixture()``), which starts a Docker container. There is no
Docker here: this plugin points pytest-mock-resources at a server the outer
test session started (``PMR_POSTGRES_*`` variables, read by pytest-mock-resources
itself) and replaces only its container fixture, which would otherwise ask
Docker for one. Everything else in the examples runs unchanged.

``PNA_EXAMPLES_DEFAULT_ENGINE=1`` (the reference runs, pytest-alembic alone)
also gives examples that define no ``alembic_engine`` a PostgreSQL one, made by
pytest-mock-resources the way the other examples make theirs: pytest-alembic's
own default is SQLite, and the reference is pytest-alembic on PostgreSQL.

``PNA_EXAMPLES_REPORT=path`` writes every test report (node id, phase, outcome,
and the failure text) and the session's exit status to ``path`` as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered now, after the entry-point plugins, so these fixtures override
    # pytest-mock-resources' (and, for the default engine, pytest-alembic's).
    config.pluginmanager.register(_PmrServer(), "examples-harness-pmr")
    if os.environ.get("PNA_EXAMPLES_DEFAULT_ENGINE"):
        from pytest_mock_resources import create_postgres_fixture

        module = type(sys)("examples_harness_default_engine")
        module.alembic_engine = create_postgres_fixture()
        config.pluginmanager.register(module, "examples-harness-default-engine")
    path = os.environ.get("PNA_EXAMPLES_REPORT")
    if path:
        config.pluginmanager.register(_Recorder(path), "examples-harness-report")


class _PmrServer:
    @pytest.fixture(scope="session")
    def pmr_postgres_container(self, pmr_postgres_config) -> Iterator[object]:
        """The server named by PMR_POSTGRES_*, instead of a Docker container."""
        from pytest_mock_resources.templates import drop_templates

        pmr_postgres_config.check_fn()
        try:
            yield pmr_postgres_config
        finally:
            drop_templates(pmr_postgres_config)


class _Recorder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.reports: list[dict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.reports.append(
                {
                    "nodeid": report.nodeid,
                    "when": report.when,
                    "outcome": report.outcome,
                    "xfail": hasattr(report, "wasxfail"),
                    "text": report.longreprtext if report.outcome != "passed" else "",
                }
            )

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.reports.append(
                {
                    "nodeid": report.nodeid,
                    "when": "collect",
                    "outcome": "error",
                    "xfail": False,
                    "text": report.longreprtext,
                }
            )

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        with open(self.path, "w") as file:
            json.dump(
                {
                    "exitstatus": int(exitstatus),
                    "pytest": pytest.__version__,
                    "reports": self.reports,
                },
                file,
            )
