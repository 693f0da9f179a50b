"""What a run keeps on disk while it runs: no password in clear.

The run directory's files (the backend's state, the registry of branches, the
shared branches' connection strings) are read and written by every process of
the run; their passwords are sealed with a key that only those processes hold
(``pytest_neon_alembic/sealing.py``). That xdist workers get the key is what
every ``-n 2`` run of ``test_xdist.py`` relies on: a worker that could not open
the shared branches' connection strings would fail to connect. The Neon
backend's side is in ``test_neon_e2e.py`` (a killed run's files).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import NeonProject

SCAN_TESTS = """
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit


def test_run_files_hold_no_password(neon_branch_isolated, neon_branch_dirty, neon_branch_readonly):
    branches = (neon_branch_isolated, neon_branch_dirty, neon_branch_readonly)
    secrets = {unquote(urlsplit(branch.connection_string).password) for branch in branches}
    assert len(secrets) == 2  # the embedded server's admin password, the read-only role's
    runs = Path(os.environ["PYTEST_NEON_ALEMBIC_STATE_DIR"], "runs")
    files = [path for path in runs.rglob("*") if path.is_file()]
    assert len(files) > 100  # the server's data directory and log included
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, path
"""


def test_no_password_in_the_run_files_while_it_runs(neon_project: NeonProject) -> None:
    """A test that holds the embedded server's admin password and a read-only role's finds
    neither in any file of its run (server data directory and log included)."""
    neon_project.write_alembic()
    neon_project.pytester.makepyfile(test_scan=SCAN_TESTS)

    result = neon_project.run()

    result.assert_outcomes(passed=1)
    neon_project.assert_nothing_left()

    # `pytest --neon-cleanup` on the local backend: nothing to remove, and no test runs.
    cleanup = neon_project.run("--neon-cleanup")
    assert cleanup.ret == 0
    assert cleanup.outlines == ["No files of killed runs on this machine."]
