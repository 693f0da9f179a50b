"""The pre-ping of the plugin's engines (liveness.py), on the real embedded server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from pytest_neon_alembic.liveness import ping_only_when_pending
from pytest_neon_alembic.urls import sqlalchemy_url


@pytest.fixture
def engine(fresh_database: str) -> Iterator[sa.Engine]:
    """An engine as the plugin makes them, on a database of the shared unit-test server."""
    engine = ping_only_when_pending(
        sa.create_engine(sqlalchemy_url(fresh_database), pool_pre_ping=True)
    )
    yield engine
    engine.dispose()


def _last_query(admin_url: str, pid: int) -> str:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row[0]


def _pid(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


def test_a_healthy_pooled_connection_is_checked_out_without_a_round_trip(
    engine: sa.Engine, admin_url: str
) -> None:
    pid = _pid(engine)
    before = _last_query(admin_url, pid)
    with engine.connect() as connection:
        # The pre-ping sent nothing: the server process's last statement is unchanged.
        assert _last_query(admin_url, pid) == before
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() == pid


def test_a_terminated_connection_is_replaced_at_checkout(engine: sa.Engine, admin_url: str) -> None:
    pid = _pid(engine)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))  # waits until gone
    assert _pid(engine) != pid


def test_a_pending_notification_gets_the_real_ping_and_the_connection_is_kept(
    engine: sa.Engine, fresh_database: str
) -> None:
    with engine.connect() as connection:
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        connection.exec_driver_sql("LISTEN pna_liveness")
        connection.commit()
    with psycopg.connect(fresh_database, autocommit=True) as other:
        other.execute("NOTIFY pna_liveness")
    time.sleep(0.05)  # the notification reaches the pooled connection's socket
    assert _pid(engine) == pid


def test_a_remote_engine_keeps_the_real_ping() -> None:
    engine = sa.create_engine("postgresql+psycopg://u:p@db.example.com/x", pool_pre_ping=True)
    real = engine.dialect.do_ping
    assert ping_only_when_pending(engine).dialect.do_ping == real
