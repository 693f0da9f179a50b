"""Benchmark: what the plugin costs per test and per session, measured on real pytest runs.

    python benchmarks/run.py [--tests N] [--repeat R]

Generates a suite of N tests against the example app's migrations (read-only,
non-writing isolated and writing isolated tests, plus tests that use no
database as the baseline), runs it R times in fresh pytest processes, and
prints per-test overhead (median and p95 of setup + call + teardown, minus the
baseline) and the session start, cold (empty cache: initdb, start, migrate)
and warm.

Every generated test asserts it starts from the seeded state, so a fast but
wrong reset fails the run instead of winning it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """
import json, os, time
import pytest

_durations = {}

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started = time.perf_counter()
    yield
    _durations[item.nodeid] = time.perf_counter() - started

def pytest_sessionfinish(session):
    with open(os.environ["BENCH_OUT"], "w") as out:
        json.dump(_durations, out)
"""

TESTS = """
import pytest
import sqlalchemy as sa

FINGERPRINT = sa.text(
    "SELECT (SELECT count(*) FROM products), (SELECT string_agg(name, ',' ORDER BY sku) "
    "FROM products), (SELECT count(*) FROM order_lines), "
    "(SELECT count(*) FROM pg_tables WHERE tablename LIKE 'scratch%')"
)
_pristine = []

def _assert_pristine(connection):
    state = tuple(connection.execute(FINGERPRINT).one())
    if not _pristine:
        _pristine.append(state)
    assert state == _pristine[0], "test did not start from the migrated state"

@pytest.mark.parametrize("n", range({count}))
def test_baseline(n):
    assert n >= 0

@pytest.mark.parametrize("n", range({count}))
def test_readonly(neon_engine_readonly, n):
    with neon_engine_readonly.connect() as connection:
        _assert_pristine(connection)

@pytest.mark.parametrize("n", range({count}))
def test_isolated_read(neon_engine, n):
    with neon_engine.connect() as connection:
        _assert_pristine(connection)

@pytest.mark.parametrize("n", range({count}))
def test_isolated_write(neon_engine, n):
    with neon_engine.begin() as connection:
        _assert_pristine(connection)
        connection.execute(sa.text("DELETE FROM order_lines"))
        connection.execute(sa.text("UPDATE products SET name = name || '!'"))
        connection.execute(sa.text("CREATE TABLE scratch_{{n}} (id int)".format(n=n)))
"""


def make_project(work: Path, count: int) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copy(ROOT / "alembic.ini", work / "alembic.ini")
    shutil.copytree(ROOT / "alembic", work / "alembic")
    (work / "conftest.py").write_text(CONFTEST)
    (work / "test_bench.py").write_text(TESTS.format(count=count))
    (work / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider -q\n")


def run_pytest(work: Path, state_dir: Path, *args: str) -> tuple[float, dict[str, float]]:
    out = work / "durations.json"
    env = dict(os.environ, BENCH_OUT=str(out), PYTEST_NEON_ALEMBIC_STATE_DIR=str(state_dir))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.stdout.write(result.stdout[-4000:] + result.stderr[-2000:])
        raise SystemExit(f"pytest failed ({result.returncode}) in {work}")
    return wall, json.loads(out.read_text())


def per_kind(durations: dict[str, float]) -> dict[str, list[float]]:
    kinds: dict[str, list[float]] = {}
    for nodeid, seconds in durations.items():
        kind = nodeid.split("::")[1].split("[")[0].removeprefix("test_")
        kinds.setdefault(kind, []).append(seconds)
    return kinds


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=50, help="tests of each kind (default 50)")
    parser.add_argument("--repeat", type=int, default=3, help="suite runs (default 3)")
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="neon-alembic-bench-"))
    os.chmod(scratch, 0o755)
    work = scratch / "project"
    state_dir = scratch / "state"
    make_project(work, options.tests)
    try:
        starts = {}
        one_test = ("-k", "test_isolated_read and 0]")
        starts["cold"], _ = run_pytest(work, state_dir, *one_test)
        starts["warm"], _ = run_pytest(work, state_dir, *one_test)
        starts["no database"], _ = run_pytest(work, state_dir, "-k", "test_baseline and 0]")

        kinds: dict[str, list[float]] = {}
        for _ in range(options.repeat):
            _, durations = run_pytest(work, state_dir)
            for kind, values in per_kind(durations).items():
                kinds.setdefault(kind, []).extend(values)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    baseline = statistics.median(kinds.pop("baseline"))
    print(f"pytest-neon-alembic benchmark: {options.tests} tests per kind, {options.repeat} runs")
    print("\nsession start (whole pytest process, one test):")
    for name, seconds in starts.items():
        print(f"  {name:<12} {seconds:6.2f} s")
    extra = starts["warm"] - starts["no database"]
    print(f"  database part of a warm start: {extra:.2f} s")
    print("\nper-test overhead over a test without fixtures (ms):")
    print(f"  {'kind':<16}{'median':>8}{'p95':>8}")
    for kind, values in kinds.items():
        overhead = [(value - baseline) * 1000 for value in values]
        print(f"  {kind:<16}{statistics.median(overhead):8.2f}{p95(overhead):8.2f}")


if __name__ == "__main__":
    main()
