"""Runs pytest-alembic's example projects, each as pytest sessions in this one process.

    python run_examples.py EXAMPLES_DIR OUT.json (plugin | reference) [EXAMPLE ...]

``plugin``: with pytest-neon-alembic, each example twice — the invocation
pytest-alembic's own ``tests/test_runner.py`` uses, and ``--neon-alembic-checks``.
``reference``: pytest-alembic alone (``-p no:neon_alembic``), the same own
invocation and ``--test-alembic`` bound to the example's conftest.py; examples
that define no ``alembic_engine`` get a PostgreSQL one (see examples_harness).

How ``reference.json`` was made with it: README.md in this folder.

One embedded PostgreSQL (the plugin's own server code) serves every run of the
process: pytest-mock-resources' databases, and the plugin's branches through
``--neon-local-url``. Sessions run in-process, as pytest-alembic's own suite
runs its examples (pytester's ``inline_run``): each in a fresh copy of the
example, with the modules the example imported removed afterwards. The
version of pytest is whichever this interpreter imports (the 9.1 leg puts a
pytest 9.1 first on PYTHONPATH).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from invocations import (  # noqa: E402 - this folder is not a package
    ALL_EXAMPLES,
    DEFAULT_CHECKS,
    OWN_INVOCATIONS,
    checks_args,
)
from outcomes import check_outcomes, counts, item_outcomes, pmr_environment  # noqa: E402

VERSIONS = ("pytest-alembic", "pytest-mock-resources", "alembic", "SQLAlchemy", "psycopg")

# Imported once, before any example: an example's run must not re-import them.
PRELOAD = (
    "pytest",
    "sqlalchemy",
    "sqlalchemy.ext.asyncio",
    "alembic.config",
    "alembic.command",
    "pytest_alembic.plugin",
    "pytest_mock_resources",
    "pytest_asyncio",
    "asyncpg",
    "psycopg",
    "psycopg2",
    "pytest_neon_alembic.plugin",
)


def _under(module, root: str) -> bool:
    locations = [getattr(module, "__file__", None) or ""]
    locations += list(getattr(module, "__path__", None) or [])
    return any(str(location).startswith(root) for location in locations)


def run_inline(project: Path, args: list[str], environment: dict[str, str]) -> dict:
    """One pytest session in this process, in ``project``; its reports (examples_harness)."""
    import pytest

    report_path = project.parent / f"report-{time.monotonic_ns()}.json"
    saved_path, saved_cwd, saved_env = list(sys.path), os.getcwd(), dict(os.environ)
    before = set(sys.modules)
    os.environ.update(environment)
    os.environ["PNA_EXAMPLES_REPORT"] = str(report_path)
    os.chdir(project)
    try:
        exit_code = pytest.main(["-p", "examples_harness", "-p", "no:cacheprovider", "-q", *args])
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)
        root = str(project.parent)
        for name in set(sys.modules) - before:
            if _under(sys.modules[name], root) or name in ("conftest", "models"):
                del sys.modules[name]
    # What survived the session is kept out of the garbage collector's way: pytest runs
    # gc.collect() at the end of every session, and this process's heap only grows.
    gc.collect()
    gc.freeze()
    if not report_path.is_file():
        return {"exitstatus": int(exit_code), "outcomes": {}, "counts": {}, "texts": {}}
    data = json.loads(report_path.read_text())
    outcomes = item_outcomes(data["reports"])
    return {
        "exitstatus": data["exitstatus"],
        "outcomes": outcomes,
        "counts": counts(outcomes),
        "texts": {r["nodeid"]: r["text"][-1500:] for r in data["reports"] if r["text"]},
    }


def run_example(examples_dir: Path, example: str, mode: str, server_url: str) -> dict:
    environment = pmr_environment(server_url)
    if mode == "reference":
        environment["PNA_EXAMPLES_DEFAULT_ENGINE"] = "1"
        extra = ["-p", "no:neon_alembic"]
        checks = list(checks_args(example))
    else:
        # pytest-mock-resources' databases live on the same scratch server: a project
        # using it allows them, as a user with their own test databases would.
        host = urlsplit(server_url)
        extra = [
            "--neon-local-url",
            server_url,
            "-o",
            f"neon_allowed_urls={host.hostname}:{host.port}",
        ]
        checks = ["--neon-alembic-checks"]
    entry: dict = {}
    with tempfile.TemporaryDirectory(prefix=f"pna-{example}-") as scratch:
        for leg, args in (("own", OWN_INVOCATIONS.get(example, (None,))[0]), ("checks", checks)):
            if args is None:
                continue
            project = Path(scratch) / leg / example
            shutil.copytree(examples_dir / example, project)
            result = run_inline(project, [*extra, *args], environment)
            if leg == "own":
                entry["own"] = {"counts": result["counts"], "outcomes": result["outcomes"]}
            else:
                entry["checks"] = check_outcomes(result["outcomes"], DEFAULT_CHECKS)
                entry["check_texts"] = {
                    check: text
                    for check in DEFAULT_CHECKS
                    for nodeid, text in result["texts"].items()
                    if nodeid.endswith("::" + check) and entry["checks"][check] != "passed"
                }
    return entry


def main() -> None:
    examples_dir, output, mode = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), sys.argv[3]
    chosen = sys.argv[4:] or list(ALL_EXAMPLES)
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)
    import pytest

    from pytest_neon_alembic.coordination import state_root
    from pytest_neon_alembic.server.embedded import EmbeddedServer

    started = time.perf_counter()
    # A private plugin state directory (the server's cache shared): what the plugin's runs
    # leave behind in it is checked at the end.
    cache = Path(os.environ.get("PNA_EXAMPLES_CACHE") or state_root() / "cache")
    scratch = Path(tempfile.mkdtemp(prefix="pna-examples-", dir=_shm()))
    scratch.chmod(0o755)  # the server's unprivileged user must reach its data directory
    (scratch / "state").mkdir(mode=0o755)
    (scratch / "state" / "cache").symlink_to(cache, target_is_directory=True)
    os.environ["PYTEST_NEON_ALEMBIC_STATE_DIR"] = str(scratch / "state")
    server = EmbeddedServer.start(scratch / "server", cache)
    try:
        postgresql = _server_version(server.admin_url)
        results = {
            example: run_example(examples_dir, example, mode, server.admin_url)
            for example in chosen
        }
    finally:
        server.stop()
        leftovers = {
            "runs": sorted(p.name for p in (scratch / "state" / "runs").glob("*")),
            "servers": _postgres_pids(str(scratch)),
        }
        shutil.rmtree(scratch, ignore_errors=True)
    output.write_text(
        json.dumps(
            {
                "pytest": pytest.__version__,
                "mode": mode,
                "seconds": round(time.perf_counter() - started, 1),
                "versions": {name: metadata.version(name) for name in VERSIONS},
                "postgresql": postgresql,
                "leftovers": leftovers,
                "examples": results,
            },
            indent=1,
            sort_keys=True,
        )
    )


def _postgres_pids(fragment: str) -> list[int]:
    """Live postgres processes started under ``fragment`` (none may outlive the run)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "postgres" and fragment in (
                entry / "cmdline"
            ).read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
    return found


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute("SHOW server_version").fetchone()[0]


def _shm() -> str | None:
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


if __name__ == "__main__":
    main()
