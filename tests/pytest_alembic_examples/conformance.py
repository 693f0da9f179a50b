"""pytest-alembic's 38 example projects, run with the plugin, against pytest-alembic's own outcomes.

Not part of the default suite (the file name does not match ``test_*.py``): the
examples are third-party code that is not in this repository, so the suite could
not run them on a machine without a copy. Run it on its own::

    PYTEST_ALEMBIC_EXAMPLES=/path/to/pytest-alembic/examples \
        python -m pytest tests/pytest_alembic_examples/conformance.py

The expected table is ``tests/pytest_alembic_examples/reference.json``:
pytest-alembic alone, on pytest 9.1, on PostgreSQL (how it was made: the
docstring of ``tests/pytest_alembic_examples/run_examples.py``, ``reference``
mode). Here each example runs with the plugin installed, twice — the way
pytest-alembic's own test suite runs it (``--test-alembic``, its fixtures,
its settings), and with ``--neon-alembic-checks`` — on two pytest versions:
this environment's (>= 9.2, where pytest-alembic's own collector crashes) and
pytest 9.1 (put first on PYTHONPATH, installed once per machine into a cache).

Every outcome must equal pytest-alembic's: the four default checks of each
example (38 x 4 = 152) and every item of each example's own invocation (37;
examples/test_default_env_script has none in pytest-alembic's suite).

The examples are pytest-alembic's (MIT licence, schireson/pytest-alembic),
read from ``PYTEST_ALEMBIC_EXAMPLES``, ``tests/pytest_alembic_examples/examples``
or ``~/.cache/pytest-neon-alembic-tests/pytest-alembic-examples``.

Both legs run at once, each as one process that starts one PostgreSQL and runs
its 75 sessions in-process (as pytest-alembic's suite runs them, pytester's
``inline_run`` style).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from pytest_alembic_examples.invocations import ALL_EXAMPLES, DEFAULT_CHECKS, OWN_INVOCATIONS

EXAMPLES_HOME = Path(__file__).resolve().parents[1] / "pytest_alembic_examples"
REFERENCE = json.loads((EXAMPLES_HOME / "reference.json").read_text())
PYTEST_91 = "9.1.1"
EXAMPLE_REQUIREMENTS = (
    "pytest-mock-resources==2.15.0",
    "pytest-asyncio==1.5.0",
    "asyncpg==0.32.0",
    "greenlet==3.5.6",
)
LEGS = ("pytest>=9.2", "pytest9.1")
CACHE_HOME = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
TEST_CACHE = CACHE_HOME / "pytest-neon-alembic-tests"


def examples_dir() -> Path:
    candidates = [
        os.environ.get("PYTEST_ALEMBIC_EXAMPLES"),
        EXAMPLES_HOME / "examples",
        TEST_CACHE / "pytest-alembic-examples",
    ]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if (path / "test_no_data" / "alembic.ini").is_file():
            return path
    pytest.fail(
        "pytest-alembic's example projects were not found (looked at: "
        + ", ".join(str(c) for c in candidates if c)
        + "). Put a copy of the examples/ folder of schireson/pytest-alembic (with its "
        "LICENSE) at one of them, or set PYTEST_ALEMBIC_EXAMPLES.",
        pytrace=False,
    )


def cached_install(name: str, requirements: tuple[str, ...]) -> Path:
    """``requirements`` installed once per machine into a cache folder (pip --target, no
    dependencies: the rest comes from this environment), to put on PYTHONPATH."""
    target = TEST_CACHE / name
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "INSTALLED").is_file():
            partial = Path(str(target) + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
            subprocess.run([*command, "--target", str(partial), *requirements], check=True)
            (partial / "INSTALLED").write_text("\n".join(requirements) + "\n")
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
    return target


def pytest_91_path() -> Path:
    """pytest 9.1, first on the 9.1 leg's PYTHONPATH."""
    return cached_install(f"pytest-{PYTEST_91}", (f"pytest=={PYTEST_91}",))


def example_requirements_path() -> Path:
    """What pytest-alembic's examples import beyond this environment: pytest-mock-resources
    (their PostgreSQL fixtures) and the async stack of the async examples. Kept out of the
    environment so that they load in no other session of the suite."""
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cached_install(f"example-requirements-{python}-1", EXAMPLE_REQUIREMENTS)


@pytest.fixture(scope="module")
def example_runs(e2e_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both legs' outcomes: {leg: {"pytest", "leftovers", "examples": {example: ...}}}."""
    examples = examples_dir()
    output = tmp_path_factory.mktemp("example-runs")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("NEON_", "PYTEST_XDIST_", "PMR_"))
        and name not in ("PYTEST_ADDOPTS", "PYTHONPATH")
    }
    env.update(PNA_EXAMPLES_CACHE=str(e2e_cache_dir), DATABASE_URL="sentinel")
    script = str(EXAMPLES_HOME / "run_examples.py")
    requirements = str(example_requirements_path())
    processes = {}
    try:
        for leg in LEGS:
            leg_env = dict(env, PYTHONPATH=requirements)
            if leg == "pytest9.1":
                leg_env["PYTHONPATH"] = os.pathsep.join([str(pytest_91_path()), requirements])
            with open(output / f"{leg}.log", "w") as log:
                processes[leg] = subprocess.Popen(
                    [sys.executable, script, str(examples), str(output / f"{leg}.json"), "plugin"],
                    env=leg_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        for process in processes.values():
            process.wait(timeout=900)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    runs = {}
    for leg in LEGS:
        result = output / f"{leg}.json"
        assert result.is_file(), (output / f"{leg}.log").read_text()[-5000:]
        runs[leg] = json.loads(result.read_text())
    return runs


def test_legs_ran_the_pytest_versions_they_claim(example_runs: dict) -> None:
    assert REFERENCE["pytest"] == PYTEST_91 and REFERENCE["mode"] == "reference"
    assert example_runs["pytest9.1"]["pytest"] == PYTEST_91
    major, minor = (int(part) for part in example_runs["pytest>=9.2"]["pytest"].split(".")[:2])
    assert (major, minor) >= (9, 2)
    for leg in LEGS:
        assert sorted(example_runs[leg]["examples"]) == sorted(ALL_EXAMPLES)
        # Every inner run removed its run directory; the leg's server stopped.
        assert example_runs[leg]["leftovers"] == {"runs": [], "servers": []}


@pytest.mark.parametrize("leg", LEGS)
@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_neon_alembic_checks_end_as_pytest_alembics_own(
    example_runs: dict, leg: str, example: str
) -> None:
    """--neon-alembic-checks: each default check passes, fails or is not run (the example's
    pytest_alembic_exclude) exactly as pytest-alembic's own test does."""
    ours = example_runs[leg]["examples"][example]
    expected = REFERENCE["examples"][example]["checks"]
    assert ours["checks"] == expected, json.dumps(ours.get("check_texts"), indent=1)


@pytest.mark.parametrize("leg", LEGS)
@pytest.mark.parametrize("example", sorted(OWN_INVOCATIONS))
def test_own_invocation_ends_as_with_pytest_alembic_alone(
    example_runs: dict, leg: str, example: str
) -> None:
    """The example's own test invocation, with the plugin installed: the same items, with the
    same outcomes, as with pytest-alembic alone."""
    ours = example_runs[leg]["examples"][example]["own"]
    expected = REFERENCE["examples"][example]["own"]
    assert ours["outcomes"] == expected["outcomes"]
    assert ours["counts"] == expected["counts"]


def test_totals(example_runs: dict) -> None:
    """The totals the issue asks for, per leg: 152/152 checks and 37/37 invocations."""
    totals = {}
    for leg in LEGS:
        examples = example_runs[leg]["examples"]
        checks = sum(
            examples[name]["checks"][check] == REFERENCE["examples"][name]["checks"][check]
            for name in ALL_EXAMPLES
            for check in DEFAULT_CHECKS
        )
        own = sum(
            examples[name]["own"]
            == {key: REFERENCE["examples"][name]["own"][key] for key in ("counts", "outcomes")}
            for name in OWN_INVOCATIONS
        )
        totals[leg] = (checks, own)
    print(f"\npytest-alembic examples (checks / own invocations): {totals}")
    assert totals == {leg: (152, 37) for leg in LEGS}
