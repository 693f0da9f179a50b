"""backends.neon:  the Neon backend, against the Neon-API emulator.

The emulator (``tests/neon_emulator``) speaks real HTTP on loopback and backs
every branch with a real PostgreSQL database, so these tests run the backend's
real requests, retries and psycopg connections. The pieces that need no server
(names, masking, Retry-After) are tested directly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import psycopg
import pytest
import requests

from pytest_neon_alembic import isolation
from pytest_neon_alembic.backends.base import Backend
from pytest_neon_alembic.backends.local import LocalBackend
from pytest_neon_alembic.backends.neon import (
    NeonBackend,
    current_git_branch,
    is_our_branch_name,
    sanitize_name_part,
)
from pytest_neon_alembic.backends.neon.http import (
    AmbiguousRequestError,
    NeonHTTP,
    RetryPolicy,
    Secret,
    _retry_after,
)
from pytest_neon_alembic.backends.neon.owner import RunOwner
from pytest_neon_alembic.branch import NeonBranch
from pytest_neon_alembic.errors import ConfigError, GuardError, NeonAlembicError, NeonAPIError

API_KEY = "napi_test_secret_key_0123456789abcdef"
PROJECT_ID = "silent-hall-60879203"

# -- names -----------------------------------------------------------------------------------


def test_neon_branch_names_have_pytest_neons_shape() -> None:
    backend = NeonBackend(
        api_key=API_KEY, project_id=PROJECT_ID, api_url="http://x", git_branch="feature-login"
    )
    assert backend.branch_name("deadbeef", "migration") == "pytest-feature-login-deadbeef-migration"
    assert backend.branch_name("deadbeef", "isolated_gw0") == (
        "pytest-feature-login-deadbeef-isolated-gw0"
    )
    backend.git_branch = None
    assert backend.branch_name("deadbeef", "shared_gw1_3") == "pytest-deadbeef-shared-gw1-3"


def test_local_backend_keeps_database_friendly_names() -> None:
    assert Backend.branch_name(LocalBackend.__new__(LocalBackend), "ab12cd34", "dirty") == (
        "pytest_ab12cd34_dirty"
    )


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("pytest-main-deadbeef-migration", True),
        ("pytest-deadbeef-dirty", True),
        ("pytest-feature-login-deadbeef-isolated-gw0", True),
        ("pytest-deadbeef-shared-gw0-2", True),
        ("pytest-main-ab12-migration", False),  # pytest-neon 2.x: 4 hex digits
        ("pytest-main-ab12-test", False),  # pytest-neon 3.x
        ("pytest-deadbeef-backup", False),  # no role of ours
        ("main", False),
        ("preview/pytest-deadbeef-dirty", False),
        ("pytest-this-is-far-too-long-for-git-deadbeef-dirty", False),
    ],
)
def test_sweep_recognises_only_this_plugins_names(name: str, ours: bool) -> None:
    assert is_our_branch_name(name) is ours


def test_git_branch_is_sanitised_and_cut(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME"):
        monkeypatch.delenv(variable, raising=False)
    assert sanitize_name_part("feat/über cool!!") == "feat-ber-cool"
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null"}
    subprocess.run(
        ["git", "init", "-q", "-b", "feat/Ünïcode_and-more-than-15", str(tmp_path)],
        check=True,
        env=env,
    )
    assert current_git_branch(str(tmp_path)) == "feat-n-code_and"
    assert current_git_branch("/") is None
    monkeypatch.setenv("GITHUB_HEAD_REF", "dependabot/pip/x")
    assert current_git_branch("/") == "dependabot-pip"


# -- secrets -----------------------------------------------------------------------------------


def test_the_key_never_shows_in_reprs() -> None:
    backend = NeonBackend(api_key=API_KEY, project_id=PROJECT_ID, api_url="http://u:pw@x/api")
    for text in (repr(backend), str(backend), repr(backend.http), repr(Secret(API_KEY))):
        assert API_KEY not in text
        assert "pw" not in text.replace("api", "")
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(Secret(API_KEY))
    assert API_KEY not in str(backend.to_state())


def test_missing_key_or_project_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="NEON_API_KEY"):
        NeonBackend(api_key="", project_id=PROJECT_ID, api_url="http://x")
    with pytest.raises(ConfigError, match="NEON_API_KEY"):
        NeonBackend.from_state(
            {"project_id": PROJECT_ID, "api_url": "http://x", "default_branch_id": "br-a"},
            api_key=None,
        )


def test_retry_after_in_both_forms() -> None:
    response = requests.Response()
    response.headers["Retry-After"] = "3"
    assert _retry_after(response) == 3.0
    response.headers["Retry-After"] = format_datetime(
        datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True
    )
    assert 25 < (_retry_after(response) or 0) <= 30
    response.headers["Retry-After"] = "soon"
    assert _retry_after(response) is None


def test_unreachable_api_is_one_clear_error() -> None:
    http = NeonHTTP(
        API_KEY, "http://127.0.0.1:9", policy=RetryPolicy(budget=0.5), sleep=lambda s: None
    )
    with pytest.raises(
        NeonAPIError, match=r"Could not reach the Neon API at http://127\.0\.0\.1:9"
    ) as info:
        http.request("GET", "projects/p/branches")
    assert API_KEY not in str(info.value)
    # A create that never left this machine is not ambiguous: it is retried, then reported.
    with pytest.raises(NeonAPIError) as info:
        http.request("POST", "projects/p/branches", json={})
    assert not isinstance(info.value, AmbiguousRequestError)


# == against the emulator =======================================================================

try:  # the emulator lives in tests/; pytest puts tests/ on sys.path (rootdir conftest)
    from neon_emulator import NeonEmulator
except ImportError:  # pragma: no cover - run from the repository root with -m pytest
    from tests.neon_emulator import NeonEmulator

FAST = RetryPolicy(budget=15.0, first_backoff=0.05, max_backoff=0.2, read_timeout=10.0)
RUN_ID = "deadbeef"


@pytest.fixture
def emulator(admin_url: str) -> Iterator[NeonEmulator]:
    """An emulated project (default branch ``main``) on the unit tests' embedded server."""
    emulator = NeonEmulator(
        api_key=API_KEY, project_id=PROJECT_ID, operation_delay=0.05, admin_url=admin_url
    ).start()
    try:
        yield emulator
    finally:
        emulator.stop()


def make_backend(emulator: NeonEmulator, *, start: bool = True, **options: Any) -> NeonBackend:
    settings: dict[str, Any] = {
        "api_key": API_KEY,
        "project_id": PROJECT_ID,
        "api_url": emulator.base_url,
        "git_branch": "unit",
        "policy": FAST,
    }
    settings.update(options)
    backend = NeonBackend(**settings)
    if start:
        backend.start()
    return backend


@pytest.fixture
def backend(emulator: NeonEmulator) -> Iterator[NeonBackend]:
    backend = make_backend(emulator)
    try:
        yield backend
    finally:
        backend.close()


def query(url: str, statement: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        cursor = connection.execute(statement)
        return cursor.fetchall() if cursor.description else []


def names(emulator: NeonEmulator) -> list[str]:
    return [branch["name"] for branch in emulator.branches()]


def migrated_branch(backend: NeonBackend) -> NeonBranch:
    """A migration branch as the session makes one: no expiry, a table, sealed."""
    branch = backend.create_branch(backend.branch_name(RUN_ID, "migration"), None, can_expire=False)
    query(
        branch.connection_string,
        "CREATE TABLE items (id serial PRIMARY KEY, label text);"
        "INSERT INTO items (label) VALUES ('one'), ('two')",
    )
    backend.seal(branch)
    return branch


def test_start_is_one_call_and_finds_the_default_branch(
    emulator: NeonEmulator, backend: NeonBackend
) -> None:
    assert emulator.calls == [("GET", f"/projects/{PROJECT_ID}/branches")]
    assert backend.default_branch_id == emulator.default_branch_id
    assert backend.parent_branch is None
    state = backend.to_state()
    assert API_KEY not in str(state)
    again = NeonBackend.from_state(state, api_key=API_KEY)
    assert again.default_branch_id == emulator.default_branch_id
    assert again.describe().startswith(f"neon (project {PROJECT_ID}, PostgreSQL ")
    again.close()


def test_branches_copy_reset_and_go(emulator: NeonEmulator, backend: NeonBackend) -> None:
    migration = migrated_branch(backend)
    isolated = backend.create_branch(backend.branch_name(RUN_ID, "isolated_gw0"), migration)
    readonly = backend.create_readonly(backend.branch_name(RUN_ID, "readonly"), migration)

    listed = {branch["name"]: branch for branch in emulator.branches()}
    assert listed["pytest-unit-deadbeef-migration"].get("expires_at") is None
    assert listed["pytest-unit-deadbeef-isolated-gw0"]["expires_at"]  # children expire
    assert isolated.parent_id == migration.branch_id
    assert isolated.endpoint_id and isolated.host and isolated.project_id == PROJECT_ID
    assert readonly.read_only and readonly.key == f"{migration.branch_id}#{readonly.endpoint_id}"

    # A child sees the migrated state; a restore brings back data and sequences.
    assert query(isolated.connection_string, "SELECT label FROM items ORDER BY id") == [
        ("one",),
        ("two",),
    ]
    assert query(
        isolated.connection_string, "INSERT INTO items (label) VALUES ('x') RETURNING id"
    ) == [(3,)]
    query(isolated.connection_string, "CREATE TABLE scratch (x int)")
    backend.reset_branch(isolated, migration)
    assert query(isolated.connection_string, "SELECT count(*) FROM items") == [(2,)]
    assert query(isolated.connection_string, "SELECT to_regclass('scratch')") == [(None,)]
    assert query(
        isolated.connection_string, "INSERT INTO items (label) VALUES ('y') RETURNING id"
    ) == [(3,)]

    # The read-only endpoint reads the migration state and refuses writes.
    assert query(readonly.connection_string, "SELECT count(*) FROM items") == [(2,)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        query(readonly.connection_string, "INSERT INTO items (label) VALUES ('z')")

    for branch in (isolated, readonly, migration):
        backend.delete_branch(branch)
    backend.delete_branch(isolated)  # already gone: fine (204)
    assert names(emulator) == ["main"]
    assert not [
        e for e in emulator.project.api_list_endpoints()[1]["endpoints"] if e["type"] == "read_only"
    ]


def test_write_detection_on_the_branch_itself(backend: NeonBackend) -> None:
    migration = migrated_branch(backend)
    isolated = backend.create_branch(backend.branch_name(RUN_ID, "isolated_gw0"), migration)

    marker = backend.write_marker(isolated)
    query(isolated.connection_string, "SELECT * FROM items")
    assert backend.wrote_since(isolated, marker) is False

    marker = backend.write_marker(isolated)
    query(isolated.connection_string, "SELECT nextval('items_id_seq')")  # sealed: takes an id
    assert backend.wrote_since(isolated, marker) is True

    # Rolled back: not counted with committed_only; a moved sequence is put back.
    with psycopg.connect(isolated.connection_string) as connection:
        sequences = isolation.sequence_state(connection)
    marker = backend.write_marker(isolated)
    with psycopg.connect(isolated.connection_string) as connection:
        connection.execute("INSERT INTO items (id, label) VALUES (100, 'rolled back')")
        connection.rollback()
    assert backend.wrote_since(isolated, marker, committed_only=True, sequences=sequences) is False
    assert backend.wrote_since(isolated, backend.write_marker(isolated) - 2) is True
    marker = backend.write_marker(isolated)
    with psycopg.connect(isolated.connection_string) as connection:
        connection.execute("INSERT INTO items (label) VALUES ('rolled back')")  # nextval
        connection.rollback()
    assert backend.wrote_since(isolated, marker, committed_only=True, sequences=sequences) is False
    with psycopg.connect(isolated.connection_string) as connection:
        assert isolation.sequence_state(connection) == sequences

    # The restore ends the kept connection; the next marker reconnects by itself.
    backend.reset_branch(isolated, migration)
    marker = backend.write_marker(isolated)
    assert marker is not None
    assert backend.wrote_since(isolated, marker) is False
    # Read-only access has no writes to detect: "cannot tell" (None) -> counts as written.
    assert backend.write_marker(NeonBranch(**{**isolated.to_dict(), "read_only": True})) is None


def test_kept_connection_survives_a_restore_it_did_not_see(
    emulator: NeonEmulator, backend: NeonBackend
) -> None:
    migration = migrated_branch(backend)
    isolated = backend.create_branch(backend.branch_name(RUN_ID, "isolated_gw0"), migration)
    backend.write_marker(isolated)
    other = make_backend(emulator)  # another worker process restores the branch
    other.reset_branch(isolated, migration)
    other.close()
    marker = backend.write_marker(isolated)  # the old connection died: reconnected once
    assert isinstance(marker, int)
    assert backend.wrote_since(isolated, marker) is False


# -- retries -------------------------------------------------------------------------------------


def count(emulator: NeonEmulator, method: str, suffix: str) -> int:
    return sum(1 for m, path in emulator.calls if m == method and path.endswith(suffix))


def test_429_is_retried_after_retry_after(emulator: NeonEmulator, backend: NeonBackend) -> None:
    emulator.faults.rate_limit(2, retry_after=0.3, method="POST", path="*/branches")
    started = time.monotonic()
    branch = backend.create_branch(backend.branch_name(RUN_ID, "fresh"), None)
    assert time.monotonic() - started >= 0.6  # two waits of Retry-After, not the 0.05 s backoff
    assert count(emulator, "POST", "/branches") == 3
    assert names(emulator) == ["main", branch.name]


def test_423_and_503_are_retried_for_any_method(
    emulator: NeonEmulator, backend: NeonBackend
) -> None:
    migration = migrated_branch(backend)
    isolated = backend.create_branch(backend.branch_name(RUN_ID, "isolated_gw0"), migration)
    emulator.faults.lock(2, path="*/restore")
    emulator.faults.fail(1, status=503, path="*/restore")
    backend.reset_branch(isolated, migration)
    assert count(emulator, "POST", "/restore") == 4
    emulator.faults.fail(2, status=503, method="DELETE")
    backend.delete_branch(isolated)
    assert count(emulator, "DELETE", isolated.branch_id) == 3


def test_a_get_is_retried_on_500_and_a_create_checks_before_repeating(
    emulator: NeonEmulator, backend: NeonBackend
) -> None:
    # A 500 on the create: did the branch get made? The backend looks it up by its
    # unique name before sending the create again.
    emulator.faults.fail(1, status=500, method="POST", path="*/branches")
    emulator.faults.fail(1, status=502, method="GET", path="*/operations")
    branch = backend.create_branch(backend.branch_name(RUN_ID, "fresh"), None)
    assert names(emulator) == ["main", branch.name]
    assert count(emulator, "POST", "/branches") == 2
    assert ("GET", f"/projects/{PROJECT_ID}/branches") in emulator.calls[2:]  # the lookup


# As in the defaults (30 s and 20 s), a read timeout longer than the time an API that refuses
# connections is retried: a call that timed out is retried within the whole budget all the same.
TIMING_OUT = RetryPolicy(
    budget=15.0, unreachable_budget=0.2, first_backoff=0.05, max_backoff=0.2, read_timeout=0.5
)


@pytest.mark.parametrize("stall", ["request", "answer"])
def test_a_create_that_timed_out_is_not_made_twice(emulator: NeonEmulator, stall: str) -> None:
    """Stuck on its way in (applied after the look-up found nothing, so made again: the late
    one meets the name taken), or applied at once with its answer lost (found, not made
    again): one branch either way."""
    backend = make_backend(emulator, policy=TIMING_OUT)
    emulator.faults.hang(1, seconds=1.5, method="POST", path="*/branches", stall=stall)
    branch = backend.create_branch(backend.branch_name(RUN_ID, "fresh"), None)
    time.sleep(1.5)  # the hung request is served after the client gave up on it
    assert names(emulator).count(branch.name) == 1
    assert count(emulator, "GET", "/branches") == 2  # the start, then the lookup by name
    assert count(emulator, "POST", "/branches") == (2 if stall == "request" else 1)
    assert query(branch.connection_string, "SELECT 1") == [(1,)]
    backend.close()


def test_a_hung_operation_poll_is_sent_again(emulator: NeonEmulator) -> None:
    backend = make_backend(emulator, policy=TIMING_OUT)
    emulator.faults.hang(1, seconds=1.0, method="GET", path="*/operations/")
    branch = backend.create_branch(backend.branch_name(RUN_ID, "fresh"), None)
    assert names(emulator) == ["main", branch.name]
    polls = [call for call in emulator.calls if "/operations/" in call[1]]
    assert len(polls) >= 2  # the one that timed out, then again
    assert emulator.faults.pending == 0
    backend.close()


def restore_setup(emulator: NeonEmulator) -> tuple[NeonBackend, NeonBranch, NeonBranch]:
    backend = make_backend(emulator, policy=TIMING_OUT)
    migration = migrated_branch(backend)
    isolated = backend.create_branch(backend.branch_name(RUN_ID, "isolated_gw0"), migration)
    query(isolated.connection_string, "INSERT INTO items (label) VALUES ('written')")
    return backend, migration, isolated


def test_a_restore_whose_answer_was_lost_is_not_sent_twice(emulator: NeonEmulator) -> None:
    backend, migration, isolated = restore_setup(emulator)
    emulator.faults.hang(1, seconds=1.0, method="POST", path="*/restore", stall="answer")
    backend.reset_branch(isolated, migration)
    assert count(emulator, "POST", "/restore") == 1
    assert query(isolated.connection_string, "SELECT count(*) FROM items") == [(2,)]
    # Found applied: no watch on the branch, the next test costs no API call.
    calls = len(emulator.calls)
    backend.wrote_since(isolated, backend.write_marker(isolated))
    assert len(emulator.calls) == calls
    backend.close()


def test_a_restore_applied_late_is_waited_for_not_sent_again(emulator: NeonEmulator) -> None:
    """Stuck on its way in past the read timeout, but applied before the look-up (after
    the first backoff): found resetting or reset, waited for, not sent again."""
    backend, migration, isolated = restore_setup(emulator)
    emulator.faults.hang(1, seconds=0.52, method="POST", path="*/restore")
    backend.reset_branch(isolated, migration)
    time.sleep(0.3)
    assert count(emulator, "POST", "/restore") == 1
    assert query(isolated.connection_string, "SELECT count(*) FROM items") == [(2,)]
    backend.close()


def test_a_restore_landing_after_it_was_sent_again_fails_the_test_it_hit(
    emulator: NeonEmulator,
) -> None:
    """No sign of the first restore at the look-up: sent again. When the first one lands
    later, during the next test, that test is an error (its data changed under it) and
    the branch is reset again -- never a test passing on data reset under it."""
    backend, migration, isolated = restore_setup(emulator)
    # Stuck long enough that the one sent again lands first, even on a busy machine.
    emulator.faults.hang(1, seconds=3.0, method="POST", path="*/restore")
    started = time.monotonic()
    backend.reset_branch(isolated, migration)
    assert count(emulator, "POST", "/restore") == 2  # the stuck one, and again
    assert query(isolated.connection_string, "SELECT count(*) FROM items") == [(2,)]

    reset_at = emulator.project.branches[isolated.branch_id].last_reset_at
    marker = backend.write_marker(isolated)  # the next test starts
    query(isolated.connection_string, "INSERT INTO items (label) VALUES ('by the next test')")
    # The first one lands, 3 s after it was sent (later when the machine is busy), and
    # its operations finish.
    deadline = started + 30
    state = emulator.project.branches[isolated.branch_id]
    while state.last_reset_at == reset_at or state.current_state != "ready":
        assert time.monotonic() < deadline, "the stalled restore never landed"
        time.sleep(0.05)
    with pytest.raises(NeonAPIError, match="landed during this test") as info:
        backend.wrote_since(isolated, marker)
    assert "run the test again" in str(info.value)
    assert count(emulator, "POST", "/restore") == 3  # and the reset after it
    assert query(isolated.connection_string, "SELECT count(*) FROM items") == [(2,)]

    # Still watched (for the retry budget): two looks at the branch per test, no error.
    calls = len(emulator.calls)
    assert backend.wrote_since(isolated, backend.write_marker(isolated)) is False
    looks = [c for c in emulator.calls[calls:] if c[1].endswith(f"/branches/{isolated.branch_id}")]
    assert len(looks) == 2
    backend.close()


def test_operation_polls_follow_how_long_operations_take(admin_url: str) -> None:
    """Operations of 0.1 s, two per call: after the first calls, one poll per restore, made
    soon after the operations finished (the schedule before asked 3 times)."""
    emulator = NeonEmulator(
        api_key=API_KEY, project_id=PROJECT_ID, operation_delay=0.1, admin_url=admin_url
    ).start()
    try:
        backend = make_backend(emulator)
        migration = migrated_branch(backend)
        isolated = backend.create_branch(backend.branch_name(RUN_ID, "isolated_gw0"), migration)
        polls = []
        for _ in range(4):
            before = backend.api.operations.polls
            backend.reset_branch(isolated, migration)
            polls.append(backend.api.operations.polls - before)
        assert polls[1:] == [1, 1, 1], polls
        assert 0.15 <= backend.api.operations.expected["restore"] <= 0.3
        backend.close()
    finally:
        emulator.stop()


def test_rate_limiting_that_never_ends_is_one_clear_error(emulator: NeonEmulator) -> None:
    backend = make_backend(emulator, policy=RetryPolicy(budget=0.5, first_backoff=0.05))
    emulator.faults.rate_limit(1000, retry_after=0.1, method="POST")
    with pytest.raises(NeonAPIError, match=r"kept answering 429 \(rate limited") as info:
        backend.create_branch(backend.branch_name(RUN_ID, "fresh"), None)
    assert API_KEY not in str(info.value)
    backend.close()


# -- errors that name the remedy ------------------------------------------------------------------


def test_a_wrong_key_stops_at_once_without_showing_it(emulator: NeonEmulator) -> None:
    wrong = "napi_wrong_key_that_must_not_leak_42"
    backend = make_backend(emulator, start=False, api_key=wrong)
    with pytest.raises(NeonAPIError, match=r"Neon rejected the API key \(401") as info:
        backend.start()
    message = str(info.value)
    assert "NEON_API_KEY" in message and "--neon-api-key" in message
    assert wrong not in message and wrong not in repr(info.value) and wrong not in repr(backend)
    assert len(emulator.calls) == 1  # no retry on 401
    backend.close()


def test_unknown_project_and_parent_are_named(emulator: NeonEmulator) -> None:
    backend = make_backend(emulator, start=False, project_id="no-such-project")
    with pytest.raises(NeonAPIError, match=r"'no-such-project' not found.*NEON_PROJECT_ID"):
        backend.start()
    backend.close()
    backend = make_backend(emulator, start=False, parent_branch="br-no-such-branch")
    with pytest.raises(ConfigError, match=r"'br-no-such-branch' not found.*NEON_PARENT_BRANCH_ID"):
        backend.start()
    backend.close()
    # A name works too, and becomes the branch ID.
    backend = make_backend(emulator, parent_branch="main")
    assert backend.parent_branch == emulator.default_branch_id
    # A parent that disappears after the start: the create's 404 says which option to check.
    backend.parent_branch = "br-gone-away"
    with pytest.raises(
        NeonAPIError, match=r"Parent branch 'br-gone-away' not found.*--neon-parent-branch"
    ):
        backend.create_branch(backend.branch_name(RUN_ID, "migration"), None, can_expire=False)
    backend.close()


def test_the_default_branch_is_never_touched(emulator: NeonEmulator, backend: NeonBackend) -> None:
    migration = migrated_branch(backend)
    main = NeonBranch(
        branch_id=emulator.default_branch_id,
        project_id=PROJECT_ID,
        connection_string=migration.connection_string,
        host=None,
        name="main",
    )
    calls = len(emulator.calls)
    with pytest.raises(GuardError, match="default branch"):
        backend.reset_branch(main, migration)  # restore onto it
    with pytest.raises(GuardError, match="default branch"):
        backend.delete_branch(main)
    with pytest.raises(GuardError, match="default branch"):
        backend.seal(main)
    with pytest.raises(GuardError, match="default branch"):
        backend.create_readonly("x", main)
    with pytest.raises(GuardError, match="read-only"):
        backend.reset_branch(
            NeonBranch(**{**migration.to_dict(), "read_only": True, "endpoint_id": "ep-x"}),
            migration,
        )
    assert len(emulator.calls) == calls  # refused before any request
    # A backend that never learnt the default branch refuses everything.
    blind = make_backend(emulator, start=False)
    with pytest.raises(GuardError, match="unknown"):
        blind.create_branch("pytest-x", None)
    with pytest.raises(GuardError, match="unknown"):
        blind.delete_branch(migration)
    blind.close()


def test_a_project_without_a_default_branch_fails_the_start(
    emulator: NeonEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(emulator, start=False)
    original = backend.list_branches
    monkeypatch.setattr(
        backend,
        "list_branches",
        lambda: [{**b, "default": False, "primary": False} for b in original()],
    )
    with pytest.raises(NeonAPIError, match="default branch"):
        backend.start()
    backend.close()


def test_errors_reprs_and_traceback_locals_never_hold_the_key(
    emulator: NeonEmulator, backend: NeonBackend
) -> None:
    """What ``pytest -l`` would print (every local of every frame of the traceback) included."""
    texts = [repr(backend), str(backend.__dict__), repr(backend.http), repr(backend.http.__dict__)]
    migration = migrated_branch(backend)
    wrong_key = make_backend(emulator, start=False, api_key=API_KEY + "x")
    wrong_key.default_branch_id = backend.default_branch_id
    for attempt in (
        lambda: backend.create_branch("too long" * 40, None),  # Neon's 400
        lambda: backend.reset_branch(migration, migration),  # refused here
        lambda: wrong_key.create_branch("pytest-x", None),  # 401
    ):
        with pytest.raises(NeonAlembicError) as info:
            attempt()
        texts += [str(info.value), repr(info.value)]
        for entry in info.traceback:
            texts += [repr(value) for value in entry.frame.f_locals.values()]
    assert "Neon refused to create branch" in texts[4]
    assert all(API_KEY not in text for text in texts)
    assert backend.http.mask(f"Neon said: bad key {API_KEY}") == "Neon said: bad key ***"
    wrong_key.close()


# -- the orphan sweep ---------------------------------------------------------------------------


def test_sweep_deletes_only_old_branches_of_this_plugin(emulator: NeonEmulator) -> None:
    crashed = make_backend(emulator, branch_expiry=0)  # no expiry: only a sweep removes them
    old_migration = crashed.create_branch(
        crashed.branch_name("0badc0de", "migration"), None, can_expire=False
    )
    crashed.create_branch(crashed.branch_name("0badc0de", "dirty"), old_migration)
    crashed.create_readonly(crashed.branch_name("0badc0de", "readonly"), old_migration)
    busy_migration = crashed.create_branch(
        crashed.branch_name("1badc0de", "migration"), None, can_expire=False
    )
    http = crashed.http
    for foreign in ("pytest-main-ab12-migration", "feature/login", "pytest-unit-0badc0de-backup"):
        http.request("POST", f"projects/{PROJECT_ID}/branches", json={"branch": {"name": foreign}})
    crashed.close()
    time.sleep(0.3)  # let the creations finish

    # A concurrent run (on another machine) still uses busy_migration: its child expires.
    live = make_backend(emulator, branch_expiry=600)
    live.create_branch(live.branch_name("1badc0de", "isolated_gw0"), busy_migration)
    live.close()

    later = datetime.now(timezone.utc) + timedelta(hours=2)
    sweeper = make_backend(emulator, start=False, branch_expiry=600)
    swept = sweeper.start(now=later).names()
    assert sorted(swept) == ["pytest-unit-0badc0de-dirty", "pytest-unit-0badc0de-migration"]
    assert swept.index("pytest-unit-0badc0de-dirty") < swept.index("pytest-unit-0badc0de-migration")
    assert sorted(names(emulator)) == sorted(
        [
            "main",
            "pytest-unit-1badc0de-migration",  # has a child that stays
            "pytest-unit-1badc0de-isolated-gw0",  # expires by itself
            "pytest-main-ab12-migration",  # pytest-neon's
            "feature/login",
            "pytest-unit-0badc0de-backup",  # not a role of ours
        ]
    )
    # Young leftovers may be a concurrent run's: a sweep now deletes nothing.
    assert make_backend(emulator, start=False).start().deleted == []
    sweeper.close()


def test_branches_say_which_run_made_them(emulator: NeonEmulator) -> None:
    owner = RunOwner.of_process(os.getpid(), RUN_ID)
    backend = make_backend(emulator, owner=owner.to_dict())
    branch = backend.create_branch(backend.branch_name(RUN_ID, "migration"), None, can_expire=False)
    listed = requests.get(
        f"{emulator.base_url}/projects/{PROJECT_ID}/branches",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    ).json()
    value = listed["annotations"][branch.branch_id]["value"]
    assert value["created-by"] == "pytest-neon-alembic"
    assert (value["test-run"], value["test-pid"]) == (RUN_ID, str(os.getpid()))
    assert value["test-host"] == socket.gethostname()
    assert RunOwner.from_annotation(value) == owner
    assert owner.on_this_machine() and not owner.gone()
    backend.close()


def test_a_dead_runs_branches_on_this_machine_are_swept_at_once(
    emulator: NeonEmulator, dead_run_owner: Callable[[str], RunOwner]
) -> None:
    """Made here by a process that is gone: deleted at the next start, expiring ones too.
    A live run here, a run of another machine and a kept run are left alone; a process ID
    now used by a process started at another time counts as gone."""
    dead = dead_run_owner("0dead0aa")
    here = RunOwner.of_process(os.getpid(), "11fe0aaa")
    owners = {
        "0dead0aa": dead,
        "11fe0aaa": here,
        "0e15e0aa": RunOwner(**{**here.to_dict(), "run_id": "0e15e0aa", "host": "ci-runner-7"}),
        "0ee00aaa": RunOwner(**{**here.to_dict(), "run_id": "0ee00aaa", "kept": True}),
        "0e0e0aaa": RunOwner(**{**here.to_dict(), "run_id": "0e0e0aaa", "started": "1"}),
    }
    for run_id, owner in owners.items():
        made = make_backend(emulator, start=False, owner=owner.to_dict())  # a start sweeps
        made.default_branch_id = emulator.default_branch_id
        migration = made.create_branch(f"pytest-unit-{run_id}-migration", None, can_expire=False)
        made.create_branch(made.branch_name(run_id, "shared_gw0_1"), migration)  # expires
        made.create_readonly(made.branch_name(run_id, "readonly"), migration)
        made.close()

    result = make_backend(emulator, start=False).start()

    gone = {"0dead0aa", "0e0e0aaa"}
    assert sorted(result.names()) == sorted(
        f"pytest-unit-{run_id}-{role}" for run_id in gone for role in ("migration", "shared-gw0-1")
    )
    assert {branch["name"].split("-")[2] for branch in emulator.branches()[1:]} == (
        set(owners) - gone
    )
    reasons = {leftover.name: leftover.reason for leftover in result.spared}
    assert "on this machine is still going" in reasons["pytest-unit-11fe0aaa-migration"]
    assert "made on ci-runner-7" in reasons["pytest-unit-0e15e0aa-migration"]
    assert "kept with --neon-keep-branches" in reasons["pytest-unit-0ee00aaa-migration"]
    assert "Neon deletes it at" in reasons["pytest-unit-0e15e0aa-shared-gw0-1"]
    assert all("is over" in leftover.reason for leftover in result.deleted)


def test_a_stale_branch_that_cannot_be_deleted_is_reported_not_raised(
    emulator: NeonEmulator, dead_run_owner: Callable[[str], RunOwner]
) -> None:
    made = make_backend(emulator, start=False, owner=dead_run_owner("0dead0bb").to_dict())
    made.default_branch_id = emulator.default_branch_id
    stale = made.create_branch("pytest-unit-0dead0bb-migration", None, can_expire=False)
    made.close()
    emulator.faults.fail(1000, status=500, method="DELETE")
    impatient = RetryPolicy(budget=0.3, first_backoff=0.05)
    sweeper = make_backend(emulator, start=False, policy=impatient)
    result = sweeper.start()
    emulator.faults.clear()
    assert result.deleted == []
    [failed] = result.failed
    assert (failed.name, failed.branch_id) == (stale.name, stale.branch_id)
    assert "Neon could not delete" in failed.reason and "500" in failed.reason
    sweeper.close()


# -- API calls of a whole run ----------------------------------------------------------------------

INNER_CONFTEST = """
import psycopg
import pytest


@pytest.fixture(scope="session")
def neon_apply_migrations(neon_migration_branch):
    with psycopg.connect(neon_migration_branch.connection_string, autocommit=True) as connection:
        connection.execute("CREATE TABLE items (id serial PRIMARY KEY, label text)")
        connection.execute("INSERT INTO items (label) VALUES ('seed')")
"""

INNER_TESTS = """
import psycopg
import pytest


def count(branch):
    # Once more on a cut connection: the emulator (not Neon) cuts the sessions of a
    # branch the first time it copies it, which can hit a read-only test on xdist.
    for attempt in (1, 2):
        try:
            with psycopg.connect(branch.connection_string, autocommit=True) as connection:
                return connection.execute("SELECT count(*) FROM items").fetchone()[0]
        except psycopg.OperationalError:
            if attempt == 2:
                raise


@pytest.mark.parametrize("n", range({readers}))
def test_reads(neon_branch_readonly, n):
    assert count(neon_branch_readonly) == 1


@pytest.mark.parametrize("n", range({clean}))
def test_isolated_reads(neon_branch_isolated, n):
    assert count(neon_branch_isolated) == 1


@pytest.mark.parametrize("n", range({writers}))
def test_isolated_writes(neon_branch_isolated, n):
    assert count(neon_branch_isolated) == 1
    with psycopg.connect(neon_branch_isolated.connection_string, autocommit=True) as connection:
        connection.execute("INSERT INTO items (label) VALUES ('mine')")


def test_dirty(neon_branch_dirty):
    assert count(neon_branch_dirty) >= 1
"""


def categorise(calls: list[tuple[str, str]]) -> dict[str, int]:
    """The API calls of a run, by what they are for."""
    kinds = {"list": 0, "create": 0, "restore": 0, "connection": 0, "poll": 0, "delete": 0}
    for method, path in calls:
        if method == "DELETE":
            kinds["delete"] += 1
        elif method == "POST" and path.endswith("/restore"):
            kinds["restore"] += 1
        elif method == "POST":
            kinds["create"] += 1
        elif "/operations/" in path:
            kinds["poll"] += 1
        elif path.endswith("/branches"):
            kinds["list"] += 1
        else:
            kinds["connection"] += 1  # connection_uri, reveal_password, project
    return kinds


@pytest.mark.parametrize("workers", [1, 2])
def test_api_calls_of_a_whole_run(
    emulator: NeonEmulator,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    workers: int,
) -> None:
    """N tests, W of which write, on k workers: creates + restores + the start's one list
    stay within DESIGN.md's 4 + k + W; deletions and operation polls come on top."""
    readers, clean, writers = 4, 4, 3
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(
        test_inner=INNER_TESTS.format(readers=readers, clean=clean, writers=writers)
    )
    monkeypatch.setenv("NEON_API_KEY", API_KEY)
    monkeypatch.setenv("NEON_PROJECT_ID", PROJECT_ID)
    monkeypatch.setenv("NEON_API_URL", emulator.base_url)
    monkeypatch.setenv("NEON_BACKEND", "neon")
    monkeypatch.setenv("PYTEST_NEON_ALEMBIC_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    extra = ["-p", "xdist", "-n", str(workers)] if workers > 1 else []
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *extra, timeout=180)
    output = result.stdout.str() + result.stderr.str()
    assert API_KEY not in output
    result.assert_outcomes(passed=readers + clean + writers + 1)
    assert "backend: neon (project" in output
    assert names(emulator) == ["main"]  # everything the run made is gone

    kinds = categorise(emulator.calls)
    # Isolated branches: one per worker that ran an isolated test (at most k).
    isolated = sum(1 for m, p in emulator.calls if m == "POST" and p.endswith("/branches")) - 2
    assert 1 <= isolated <= workers
    # Tests that only read cost no restore. With several workers the emulator may count
    # one more: its branches share one PostgreSQL, so transaction ids are server-wide and
    # another worker's writes can look like this test's (never the other way round). On
    # Neon each branch has its own server.
    assert writers <= kinds["restore"] <= writers + (workers - 1) * clean
    assert kinds["list"] == 1
    assert kinds["create"] == 3 + isolated  # migration, read-only endpoint, dirty, isolated
    assert kinds["list"] + kinds["create"] + writers <= 4 + workers + writers
    assert kinds["delete"] == 3 + isolated  # every branch and the read-only endpoint
    print(f"\nk={workers} N={readers + clean + writers + 1} W={writers}: {kinds}")
