"""Benchmark: what a user pays for isolation, against no isolation and against peers.

    python benchmarks/run.py                 # full: 3 sizes, 2 servers, 3 rounds (~30 min)
    python benchmarks/run.py --quick         # CI: x1 rows, embedded server, 1 round (<1 min)
    python benchmarks/run.py --sizes 1,10 --servers embedded --rounds 5

1. Generates an Alembic app (``app.py``: 32 tables, 59 foreign keys, 3 enums,
   JSONB, 15 revisions seeding 1,211 rows at x1; x10 and x100 multiply every
   table but the reference ones) and a suite (per ten tests: five reads, four
   small writes that commit, one heavy write or DDL). Every test first checks
   a fingerprint of the whole database (schema, every table's rows, sequence
   positions) against a pristine copy: a strategy that starts a test from a
   wrong state fails the benchmark.
2. Runs the suite, each time in a fresh pytest process, under our two
   strategies (``branch`` also with ``--neon-keep-server``), pytest-postgresql
   (a template clone per test), a savepoint fixture, TRUNCATE + reseed,
   dirty-table triggers + reseed, and with no isolation (the baseline: a
   Connection or Session per test on one migrated database). All strategies
   of one round run in a shuffled order, then the next round: a busy spell of
   the machine falls on all of them alike.
3. Overhead per test = (median run time - median run time of the baseline) /
   tests: the whole run, as a user waits for it — session start and end, the
   resets, and what the next test pays after one (reconnects, cold caches,
   background work). Also per kind of test, in steady state (a test's setup +
   call + teardown minus the same test's without isolation; session start
   and end left out).
4. With ``-n 2``: ours must reset exactly the tests that wrote (a test that
   wrote nothing is never reset because of the other worker).
5. Start-up: a warm one-test run with the plugin (and with a kept server)
   against a one-test run of pytest without it.

Runs on the embedded build (the ``[embedded]`` wheel) and on a system
PostgreSQL (``PYTEST_NEON_ALEMBIC_PG_BINDIR``, default /usr/lib/postgresql/15/bin
when present; ``apt-get install postgresql-15``). Prints a Markdown table
ready for the README. The machine's load is printed with the figures: on a
shared machine they are noisy, medians help only so much.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import app  # noqa: E402 - benchmarks/ is not a package
import suitelib  # noqa: E402

SYSTEM_BINDIR = Path("/usr/lib/postgresql/15/bin")
BINDIR_ENV = "PYTEST_NEON_ALEMBIC_PG_BINDIR"
TESTS_PER_SIZE = {1: 200, 10: 100, 100: 50}
KEEP_SERVER = "--neon-keep-server=30"
QUICK_TESTS = 40


@dataclass(frozen=True)
class Strategy:
    label: str
    what: str
    env: str  # BENCH_STRATEGY
    args: tuple[str, ...] = ()
    select: str | None = None  # -m: tests this strategy cannot isolate are left out
    baseline: str = "noiso"  # noiso (Connection per test) or noiso_session
    check: str = "all"  # what counts as a wrong start (suitelib.MODE)
    name: str = ""  # key in the results, when two strategies share BENCH_STRATEGY

    @property
    def key(self) -> str:
        return self.name or self.env


STRATEGIES = [
    Strategy("ours, `branch`", "neon_engine; reads on neon_engine_readonly", "branch"),
    Strategy(
        "ours, `branch`, kept server",
        "as `branch`, with --neon-keep-server (the server outlives the run)",
        "branch",
        (KEEP_SERVER,),
        name="kept",
    ),
    Strategy(
        "ours, `transaction`",
        "neon_session in a rolled-back outer transaction",
        "transaction",
        ("--neon-reset=transaction",),
        baseline="noiso_session",
    ),
    Strategy(
        "ours, `transaction`, kept server",
        "as `transaction`, with --neon-keep-server",
        "transaction",
        ("--neon-reset=transaction", KEEP_SERVER),
        baseline="noiso_session",
        name="transaction-kept",
    ),
    Strategy("pytest-postgresql", "postgresql_noproc + a template clone per test", "pgclone"),
    Strategy(
        "savepoint fixture",
        'Session(join_transaction_mode="create_savepoint"), rolled back',
        "savepoint",
        select="not outside",
        baseline="noiso_session",
        check="data",
    ),
    Strategy(
        "TRUNCATE + reseed", "every table emptied, seed copied back", "truncate", select="not ddl"
    ),
    Strategy(
        "dirty-table triggers + reseed",
        "statement triggers note written tables; only those reseeded",
        "dirty",
        select="not ddl",
    ),
]
OURS = ("branch", "transaction")

_RESETS = re.compile(
    r"resets: (\d+) done, (\d+) skipped as clean(?:, (\d+) in place)?(?:, median ([\d.]+) ms)?"
)


# -- the generated project -----------------------------------------------------------------


def generate_tests(count: int) -> str:
    """N tests: per ten, five reads, four small writes and one heavy write or DDL."""
    lines = [
        '"""Generated by benchmarks/run.py: the same tests run under every strategy."""',
        "",
        "import pytest",
        "import suitelib as s",
        "",
        "",
        "def test_0000_nodb():",
        "    pass",
    ]
    heavy = 0
    for n in range(1, count + 1):
        lines += ["", ""]
        if n % 10 == 0:
            variant = suitelib.HEAVY[heavy % len(suitelib.HEAVY)]
            heavy += 1
            if variant in suitelib.DDL:
                lines.append("@pytest.mark.ddl")
            if variant in suitelib.OUTSIDE:
                lines.append("@pytest.mark.outside")
                lines.append(f"def test_{n:04d}_{variant}(db_rw, db_url):")
                lines.append("    s.check_pristine(db_rw)")
                lines.append(f"    s.{variant}(db_rw, db_url, {n})")
            else:
                lines.append(f"def test_{n:04d}_{variant}(db_rw):")
                lines.append("    s.check_pristine(db_rw)")
                lines.append(f"    s.{variant}(db_rw, {n})")
        elif n % 2:
            lines.append(f"def test_{n:04d}_read(db_ro):")
            lines.append("    s.check_pristine(db_ro)")
            lines.append(f"    s.read(db_ro, {n})")
        else:
            lines.append(f"def test_{n:04d}_write(db_rw):")
            lines.append("    s.check_pristine(db_rw)")
            lines.append(f"    s.write(db_rw, {n})")
    return "\n".join(lines) + "\n"


PYTEST_INI = """\
[pytest]
addopts = -p no:cacheprovider -q
markers =
    ddl: changes the schema (a reseed cannot undo it)
    outside: commits on a connection of its own (a rolled-back transaction cannot undo it)
"""


def write_project(project: Path, count: int, expected: dict) -> None:
    project.mkdir(parents=True)
    shutil.copy(HERE / "bench_conftest.py", project / "conftest.py")
    shutil.copy(HERE / "suitelib.py", project / "suitelib.py")
    (project / "fingerprint.sql").write_text(app.FINGERPRINT_SQL)
    (project / "expected.json").write_text(json.dumps(expected))
    (project / "pytest.ini").write_text(PYTEST_INI)
    (project / "test_suite.py").write_text(generate_tests(count))


def kind_of(name: str) -> str:
    kind = name.split("_", 2)[2]
    return kind if kind in ("read", "write", "nodb") else "heavy"


# -- running pytest ------------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    phases: dict[str, dict[str, float]]  # test -> setup/call/teardown seconds
    order: list[str]
    checks: dict[str, list[str]]
    failed: int
    resets: tuple[int, int, int] | None = None  # done, clean, in place

    def tests(self) -> list[str]:
        return [name for name in self.order if kind_of(name) != "nodb"]

    def total(self, name: str) -> float:
        return sum(self.phases[name].values())


@dataclass
class Bench:
    scratch: Path
    state: Path
    log: list[str] = field(default_factory=list)
    counter: int = 0

    def run(
        self,
        project: Path,
        ini: Path,
        admin_url: str,
        strategy: str,
        *,
        args: tuple[str, ...] = (),
        select: str | None = None,
        keyword: str | None = None,
        check: str = "all",
        state: Path | None = None,
        plugin: bool = True,
    ) -> Run:
        self.counter += 1
        out = self.scratch / f"run-{self.counter}.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NEON_", "BENCH_"))}
        env.pop("DATABASE_URL", None)
        env.update(
            BENCH_STRATEGY=strategy,
            BENCH_OUT=str(out),
            BENCH_ASSERT=check,
            BENCH_ALEMBIC_INI=str(ini),
            BENCH_ADMIN_URL=admin_url,
            BENCH_DBNAME=f"bench_{strategy}_{self.counter}",
            PYTEST_NEON_ALEMBIC_STATE_DIR=str(state or self.state),
        )
        command = [sys.executable, "-m", "pytest", f"--rootdir={project}", *args]
        if strategy in OURS and plugin:
            command += [f"--neon-alembic-ini={ini}", "-p", "no:pytest_postgresql"]
        else:
            command += ["-p", "no:neon_alembic"]
            if strategy != "pgclone":
                command += ["-p", "no:pytest_postgresql"]
        if select:
            command += ["-m", select]
        if keyword:
            command += ["-k", keyword]
        started = time.perf_counter()
        proc = subprocess.run(
            command, cwd=project, env=env, capture_output=True, text=True, timeout=3600
        )
        wall = time.perf_counter() - started
        output = proc.stdout + proc.stderr
        if not out.exists():
            sys.stdout.write(output[-6000:])
            raise SystemExit(f"pytest ({strategy}) exited {proc.returncode} without results")
        data = json.loads(out.read_text())
        out.unlink()
        phases: dict[str, dict[str, float]] = {}
        order: list[str] = []
        failed = 0
        for name, when, duration, _start, outcome in data["reports"]:
            if name not in phases:
                phases[name] = {}
                order.append(name)
            phases[name][when] = duration
            failed += outcome == "failed"
        run = Run(wall, phases, order, data["checks"], failed)
        match = _RESETS.search(output)
        if match:
            run.resets = (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))
        if proc.returncode not in (0, 1) or (failed and check != "none"):
            self.log.append(
                f"--- {strategy} {' '.join(args)} (exit {proc.returncode}) ---\n{output[-4000:]}"
            )
        return run


def ensure_pytest_postgresql() -> str:
    if importlib.util.find_spec("pytest_postgresql") is None:
        print("installing pytest-postgresql from PyPI ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "pytest-postgresql"], check=True
        )
        importlib.invalidate_caches()
    from importlib.metadata import version

    return version("pytest-postgresql")


def pristine_fingerprint(admin_url: str, ini: Path) -> dict:
    """The fingerprint of a freshly migrated database on the peers' server."""
    import psycopg
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.pool import NullPool

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS bench_pristine")
        admin.execute("CREATE DATABASE bench_pristine")
    try:
        url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        engine = sa.create_engine(url + "/bench_pristine", poolclass=NullPool)
        config = Config(str(ini))
        config.attributes["connection"] = engine
        command.upgrade(config, "head")
        with engine.connect() as connection:
            fingerprint = connection.execute(sa.text(app.FINGERPRINT_SQL)).scalar_one()
        engine.dispose()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE bench_pristine WITH (FORCE)")
    return fingerprint


def private_dir(prefix: str) -> Path:
    """A directory on tmpfs (as the plugin's default), reachable by the server's user."""
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    os.chmod(path, 0o711)
    return path


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# -- one server, one size ------------------------------------------------------------------


@dataclass
class Figures:
    whole: float | None = None  # ms per test, whole run minus baseline
    steady: dict[str, float | None] = field(default_factory=dict)  # by kind
    wrong: int = 0
    sequences: int = 0
    failed: int = 0
    resets: tuple[int, int, int] | None = None


@dataclass
class Scenario:
    server: str
    version: str
    scale: int
    tests: int
    rows: int
    figures: dict[str, Figures] = field(default_factory=dict)
    xdist: tuple[int, int, int] | None = None  # resets, clean, writing tests
    startup: dict[str, float | None] = field(default_factory=dict)


def steady_by_kind(runs: list[Run], baseline: list[Run]) -> dict[str, float | None]:
    """Per kind of test: median over runs of the mean (total - baseline total), in ms.

    The session's first and last database tests are left out (start and end)."""
    base: dict[str, float] = {}
    for name in baseline[0].tests():
        base[name] = statistics.median(run.total(name) for run in baseline if name in run.phases)
    result: dict[str, float | None] = {}
    for kind in ("read", "write", "heavy"):
        per_run = []
        for run in runs:
            measured = run.tests()[1:-1]
            deltas = [run.total(t) - base[t] for t in measured if kind_of(t) == kind and t in base]
            if deltas:
                per_run.append(statistics.fmean(deltas) * 1000)
        result[kind] = median(per_run)
    return result


def run_scenario(
    bench: Bench, server, label: str, scale: int, tests: int, rounds: int
) -> tuple[Scenario, Path, Path]:
    """All strategies and their baselines on one server at one size; the project made."""
    scratch = bench.scratch / f"{label}-x{scale}"
    ini = app.write_app(scratch / "app", scale)
    expected = pristine_fingerprint(server.admin_url, ini)
    project = scratch / "project"
    write_project(project, tests, expected)
    scenario = Scenario(label, server.server_version, scale, tests, app.seed_row_count(scale))
    url = server.admin_url

    # Warm our cache (server snapshot, migrated template), as on a developer's machine.
    bench.run(project, ini, url, "branch", keyword="nodb or 0002", check="none")
    warm_kept = (KEEP_SERVER,)  # and the kept server, with the migrated state in it
    bench.run(project, ini, url, "branch", args=warm_kept, keyword="nodb or 0002", check="none")
    baselines = {s.baseline + "|" + str(s.select) for s in STRATEGIES}
    results: dict[str, list[Run]] = {s.key: [] for s in STRATEGIES}
    base_runs: dict[str, list[Run]] = {key: [] for key in baselines}
    for round_number in range(rounds):
        order = [("strategy", s.key) for s in STRATEGIES] + [("baseline", b) for b in baselines]
        random.Random(round_number).shuffle(order)
        for what, key in order:
            if what == "baseline":
                strategy, select = key.split("|")
                base_runs[key].append(
                    bench.run(
                        project,
                        ini,
                        url,
                        strategy,
                        check="none",
                        select=None if select == "None" else select,
                    )
                )
            else:
                spec = next(s for s in STRATEGIES if s.key == key)
                results[key].append(
                    bench.run(
                        project,
                        ini,
                        url,
                        spec.env,
                        args=spec.args,
                        select=spec.select,
                        check=spec.check,
                    )
                )
        print(f"  {label} x{scale}: round {round_number + 1}/{rounds} done", flush=True)

    for spec in STRATEGIES:
        runs = results[spec.key]
        baseline = base_runs[spec.baseline + "|" + str(spec.select)]
        figures = Figures()
        ran = len(runs[0].tests())
        figures.whole = (
            (median([r.wall for r in runs]) - median([r.wall for r in baseline])) * 1000 / ran
        )
        figures.steady = steady_by_kind(runs, baseline)
        for run in runs:
            for differs in run.checks.values():
                figures.wrong += bool({"schema", "data"} & set(differs))
                figures.sequences += "sequences" in differs
            figures.failed += run.failed
        figures.resets = runs[-1].resets
        scenario.figures[spec.key] = figures

    # Two workers: exactly the writing tests are reset, every other test is clean.
    run = bench.run(project, ini, url, "branch", args=("-n", "2"), check="all")
    writing = sum(kind_of(t) != "read" for t in run.tests())
    if run.resets:
        scenario.xdist = (run.resets[0], run.resets[1], writing)
    scenario.figures["branch"].failed += run.failed
    for differs in run.checks.values():
        scenario.figures["branch"].wrong += bool({"schema", "data"} & set(differs))
    return scenario, project, ini


def measure_startup(bench: Bench, project: Path, ini: Path, url: str, rounds: int) -> dict:
    """Warm one-test run with the plugin vs a one-test run of pytest without it; cold too."""
    warm, kept, plain, cold = [], [], [], []
    for _ in range(rounds if rounds == 1 else max(rounds, 3)):
        warm.append(bench.run(project, ini, url, "branch", keyword="0002", check="none").wall)
        kept.append(
            bench.run(
                project, ini, url, "branch", args=(KEEP_SERVER,), keyword="0002", check="none"
            ).wall
        )
        plain.append(
            bench.run(project, ini, url, "noiso", keyword="nodb", check="none", plugin=False).wall
        )
    cold_state = private_dir("neon-alembic-bench-cold-")
    try:
        cold.append(
            bench.run(
                project, ini, url, "branch", keyword="0002", check="none", state=cold_state
            ).wall
        )
    finally:
        shutil.rmtree(cold_state, ignore_errors=True)
    return {
        "warm": median(warm),
        "kept": median(kept),
        "plain": median(plain),
        "cold": median(cold),
    }


# -- the report ----------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(scenarios: list[Scenario], context: dict) -> list[str]:
    """Print the Markdown tables; return the problems that fail the benchmark."""
    p = print
    problems: list[str] = []
    p(
        f"\n## Benchmark ({context['date']}; {context['cores']} cores, load average "
        f"{context['load']} at the start; {context['rounds']} round(s), medians)\n"
    )
    p(
        f"App: {len(app.TABLES)} tables, {app.foreign_key_count()} foreign keys, "
        f"{len(app.ENUMS)} enums, JSONB, {app.revision_count()} Alembic revisions. Suite: per ten "
        "tests five reads, four small writes that commit, one heavy write or DDL; every test "
        f"first checks the whole database. pytest-postgresql {context['peer']}.\n"
    )
    servers = list(dict.fromkeys(s.server for s in scenarios))
    for server in servers:
        group = [s for s in scenarios if s.server == server]
        p(
            f"**{server}, PostgreSQL {group[0].version}** — overhead per test, ms: whole run "
            "minus a no-isolation run of the same suite, divided by the tests\n"
        )
        header = (
            "| strategy | "
            + " | ".join(f"x{s.scale} ({s.rows:,} rows, {s.tests} tests)" for s in group)
            + " | vs ours (x1) | wrong starts |"
        )
        p(header)
        p("|---" * (len(group) + 3) + "|")
        ours = group[0].figures["branch"].whole
        for spec in STRATEGIES:
            cells = [fmt(s.figures[spec.key].whole) for s in group]
            first = group[0].figures[spec.key].whole
            ratio = "-"
            if spec.env not in OURS and first is not None and ours and ours > 0:
                ratio = f"{first / ours:.0f}x"
            wrong = sum(s.figures[spec.key].wrong for s in group)
            seqs = sum(s.figures[spec.key].sequences for s in group)
            wrong_text = str(wrong) + (f" ({seqs} with sequences moved)" if seqs else "")
            p(f"| {spec.label} | " + " | ".join(cells) + f" | {ratio} | {wrong_text} |")
            failed = sum(s.figures[spec.key].failed for s in group)
            if wrong or failed:
                problems.append(f"{server} {spec.label}: {wrong} wrong starts, {failed} failures")
        p("")
        p(
            "Steady state per kind of test (ms; read / small write / heavy or DDL; session "
            "start and end left out):\n"
        )
        p("| strategy | " + " | ".join(f"x{s.scale}" for s in group) + " |")
        p("|---" * (len(group) + 1) + "|")
        for spec in STRATEGIES:
            cells = []
            for s in group:
                steady = s.figures[spec.key].steady
                cells.append(" / ".join(fmt(steady.get(k)) for k in ("read", "write", "heavy")))
            p(f"| {spec.label} | " + " | ".join(cells) + " |")
        p("")
        for s in group:
            resets = s.figures["branch"].resets
            line = (
                f"x{s.scale}: ours `branch` reset {resets[0]} tests" if resets else f"x{s.scale}:"
            )
            if resets:
                line += f" ({resets[2]} in place), {resets[1]} clean"
            if s.xdist:
                done, clean, writing = s.xdist
                extra = done - writing
                line += (
                    f"; with -n 2: {done} resets for {writing} writing tests, "
                    f"{clean} clean → {max(extra, 0)} clean tests reset because of "
                    "the other worker"
                )
                if extra != 0:
                    problems.append(f"{server} x{s.scale} -n 2: {done} resets, {writing} writes")
            p(line)
        p("")
    for s in scenarios:
        if s.startup:
            warm, plain, cold = s.startup["warm"], s.startup["plain"], s.startup["cold"]
            kept = s.startup["kept"]
            p(
                f"Start-up ({s.server}): one test on the isolated branch, warm cache "
                f"{fmt(warm, 2)} s, with a kept server {fmt(kept, 2)} s, cold (initdb, 15 "
                f"migrations) {fmt(cold, 2)} s; pytest without the plugin, one test "
                f"{fmt(plain, 2)} s: warm +{fmt(warm - plain, 2)} s, kept server "
                f"+{fmt(kept - plain, 2)} s (target ≤ 0.5)."
            )
    p("\nTargets (DESIGN.md)")
    for s in scenarios:
        figs = s.figures
        branch, tx, save = figs["branch"].whole, figs["transaction"].whole, figs["savepoint"].whole
        peer = figs["pgclone"].whole
        ratio = peer / branch if branch and branch > 0 else None
        kept, tx_kept = figs["kept"].whole, figs["transaction-kept"].whole
        kept_ratio = peer / kept if kept and kept > 0 and peer else None
        p(
            f"  {s.server} x{s.scale}: default strategy {fmt(branch, 2)} ms/test (target ≤ 3), "
            f"{fmt(ratio, 0)}x below pytest-postgresql (target ≥ 30); with a kept server "
            f"{fmt(kept, 2)} ms/test, {fmt(kept_ratio, 0)}x; transaction {fmt(tx, 2)} (kept "
            f"server {fmt(tx_kept, 2)}) vs savepoint {fmt(save, 2)} ms (target ≤ 1.5x)"
        )
    flat = [s for s in scenarios if s.scale != 1]
    for s in flat:
        first = next(x for x in scenarios if x.server == s.server and x.scale == 1)
        small = s.figures["branch"].steady.get("write")
        base = first.figures["branch"].steady.get("write")
        p(
            f"  {s.server} x{s.scale}: a small write costs {fmt(small, 2)} ms in steady state "
            f"against {fmt(base, 2)} ms at x1 (target: flat)"
        )
    return problems


def start_server(label: str):
    """The peers' server: the build ``PYTEST_NEON_ALEMBIC_PG_BINDIR`` names (or the
    embedded one), on tmpfs, as ours; the pytest runs inherit the same choice."""
    from pytest_neon_alembic.coordination import state_root
    from pytest_neon_alembic.server.embedded import EmbeddedServer

    return EmbeddedServer.start(state_root() / f"bench-peers-{label}", state_root() / "cache")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100", help="row multipliers (default 1,10,100)")
    parser.add_argument("--servers", default="embedded,system", help="embedded and/or system")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--tests",
        type=int,
        default=None,
        help="tests per suite (default: 200 at x1, 100 at x10, 50 at x100)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"CI: x1, embedded, 1 round, {QUICK_TESTS} tests"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    options = parser.parse_args()
    if options.quick:
        options.sizes, options.servers, options.rounds = "1", "embedded", 1
        options.tests = options.tests or QUICK_TESTS
    sizes = [int(s) for s in options.sizes.split(",")]
    servers = options.servers.split(",")
    began = time.perf_counter()

    peer = ensure_pytest_postgresql()
    scratch = Path(tempfile.mkdtemp(prefix="neon-alembic-bench-"))
    os.chmod(scratch, 0o755)
    state = private_dir("neon-alembic-bench-state-")
    os.environ["PYTEST_NEON_ALEMBIC_STATE_DIR"] = str(state)
    bench = Bench(scratch, state)
    context = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "load": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "rounds": options.rounds,
        "peer": peer,
    }
    scenarios: list[Scenario] = []
    problems: list[str] = []
    try:
        for label in servers:
            bindir = None
            if label == "system":
                bindir = Path(os.environ.get(BINDIR_ENV) or SYSTEM_BINDIR)
                if not (bindir / "postgres").exists():
                    problems.append(
                        f"no system PostgreSQL at {bindir}: apt-get install "
                        f"postgresql-15, or set {BINDIR_ENV}"
                    )
                    continue
                os.environ[BINDIR_ENV] = str(bindir)
            else:
                os.environ.pop(BINDIR_ENV, None)
            server = start_server(label)
            try:
                for index, scale in enumerate(sizes):
                    tests = options.tests or TESTS_PER_SIZE.get(scale, 50)
                    scenario, project, ini = run_scenario(
                        bench, server, label, scale, tests, options.rounds
                    )
                    if index == 0:
                        scenario.startup = measure_startup(
                            bench, project, ini, server.admin_url, options.rounds
                        )
                    scenarios.append(scenario)
                    print(
                        f"{label} x{scale} done ({time.perf_counter() - began:.0f} s)", flush=True
                    )
            finally:
                server.stop()
        problems += report(scenarios, context)
    finally:
        os.environ.pop(BINDIR_ENV, None)
        from pytest_neon_alembic.kept_server import stop_idle

        stop_idle(state)  # the kept servers of the runs above, with their keepers
        shutil.rmtree(state, ignore_errors=True)
        if options.keep:
            print(f"\nscratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"\nbenchmark took {time.perf_counter() - began:.0f} s; command: python "
        f"benchmarks/run.py {' '.join(sys.argv[1:])}".rstrip()
    )
    for entry in bench.log[:5]:
        print(entry)
    if problems:
        print("\nFAILED: " + "; ".join(problems))
        raise SystemExit(1)


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM too: the finally blocks stop the servers


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)
    with contextlib.suppress(KeyboardInterrupt):
        main()
