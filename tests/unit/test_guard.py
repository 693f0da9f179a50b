"""guard: targets, the ini opt-out, and the connection variables given back."""

from __future__ import annotations

import os
import threading

import pytest

from pytest_neon_alembic import guard
from pytest_neon_alembic.errors import ForeignDatabaseError
from pytest_neon_alembic.guard import AllowedPatterns, ConnectionVariables, Target


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("postgresql://u:p@db.example:6543/app", ("db.example", 6543, "app")),
        ("postgresql+asyncpg://u@localhost/app", ("127.0.0.1", 5432, "app")),
        ("postgresql://u@/app?host=/run/postgresql", ("/run/postgresql", 5432, "app")),
        ("postgresql://alice@db.example", ("db.example", 5432, "alice")),
    ],
)
def test_target_of_url(url: str, key: tuple) -> None:
    assert guard.target_of_url(url).key == key


def test_target_of_params_uses_libpq_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "envhost")
    monkeypatch.setenv("PGDATABASE", "envdb")
    assert guard.target_of_params({}).key == ("envhost", 5432, "envdb")
    assert guard.target_of_params({"host": "h", "dbname": "d", "port": "1"}).key == ("h", 1, "d")


@pytest.mark.parametrize(
    ("pattern", "allowed", "refused"),
    [
        ("analytics.internal/reports", "analytics.internal:5432/reports", "analytics.internal/x"),
        ("*.internal:5433/*", "a.internal:5433/x", "a.internal:5432/x"),
        ("postgresql://ro:pw@replica:5432/app", "replica:5432/app", "replica:5432/other"),
        ("localhost/*", "127.0.0.1:1234/any", "10.0.0.1:1234/any"),
    ],
)
def test_allowed_patterns(pattern: str, allowed: str, refused: str) -> None:
    def target(text: str) -> Target:
        return guard.target_of_url("postgresql://u@" + text)

    patterns = AllowedPatterns([pattern])
    assert patterns.allows(target(allowed))
    assert not patterns.allows(target(refused))


def test_connection_variables_are_given_back_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A_URL", "postgresql://dev@h/app")
    monkeypatch.delenv("B_URL", raising=False)
    variables = ConnectionVariables(["A_URL", "B_URL"])
    variables.take()
    assert os.environ["A_URL"] == os.environ["B_URL"] == guard.SANDBOX_URL
    with variables.pointing_at("postgresql://branch"):
        assert os.environ["B_URL"] == "postgresql://branch"
    assert os.environ["B_URL"] == guard.SANDBOX_URL
    variables.give_back()
    assert os.environ["A_URL"] == "postgresql://dev@h/app"
    assert "B_URL" not in os.environ


def test_sandbox_url_is_recognised_in_any_driver_form() -> None:
    assert guard.is_sandbox_url(guard.SANDBOX_URL)
    assert guard.is_sandbox_url(guard.SANDBOX_URL.replace("postgresql:", "postgresql+asyncpg:"))
    assert not guard.is_sandbox_url("postgresql://u@localhost/app")


def test_an_in_process_session_gives_the_user_value_back(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://dev:pw@devhost/app")
    pytester.makepyfile(
        """
        import os

        def test_sandbox():
            assert "sandbox" in os.environ["DATABASE_URL"]
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert os.environ["DATABASE_URL"] == "postgresql://dev:pw@devhost/app"


def test_trust_is_the_calling_threads_only() -> None:
    """While the plugin connects to a server the run has not recorded yet (``trusted``),
    another thread of the process (the app's, started at import) is still refused."""
    refuse_all = guard.ConnectionGuard(
        lambda target: False, AllowedPatterns([]), ConnectionVariables(["DATABASE_URL"])
    )
    target = guard.target_of_url("postgresql://someone@db.example:5432/production")
    guard.activate(refuse_all)
    try:
        refused: list[BaseException] = []

        def elsewhere() -> None:
            try:
                guard.check(target)
            except ForeignDatabaseError as error:
                refused.append(error)

        with guard.trusted():
            guard.check(target)  # the plugin's own thread: let through
            thread = threading.Thread(target=elsewhere)
            thread.start()
            thread.join()
        assert len(refused) == 1 and "db.example" in str(refused[0])
        with pytest.raises(ForeignDatabaseError):
            guard.check(target)  # and no longer once the plugin is done
    finally:
        guard.deactivate(refuse_all)
