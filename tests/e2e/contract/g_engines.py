"""neon_engine, neon_session, neon_connection (psycopg2), neon_connection_psycopg."""

import psycopg
import sqlalchemy as sa
from e2e_check import check_pristine, names
from sqlalchemy.orm import Session


def test_1_session_commits(request, neon_session, neon_engine, neon_branch_isolated):
    assert isinstance(neon_session, Session)
    assert neon_engine.pool._pre_ping
    neon_session.execute(sa.text("INSERT INTO items (name) VALUES ('session')"))
    neon_session.commit()
    assert neon_session.execute(sa.text("SELECT count(*) FROM items")).scalar() == 2
    # With reset="transaction" the commit only released a savepoint of the outer
    # transaction: other connections do not see it.
    visible = ["seed", "session"]
    if request.config.getoption("neon_reset") == "transaction":
        visible = ["seed"]
    with neon_engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT name FROM items ORDER BY name"))
        assert rows.scalars().all() == visible
    assert names(neon_branch_isolated.connection_string) == visible


def test_2_next_test_sees_nothing(neon_engine, neon_branch_isolated):
    # The engine's pooled connections were terminated by the reset: pre-ping replaces them.
    with neon_engine.connect() as connection:
        assert connection.execute(sa.text("SELECT name FROM items")).scalars().all() == ["seed"]
    check_pristine(neon_branch_isolated.connection_string)


def test_3_psycopg2_connection(neon_connection, neon_branch_isolated):
    import psycopg2.extensions

    assert isinstance(neon_connection, psycopg2.extensions.connection)
    with neon_connection.cursor() as cursor:
        cursor.execute("INSERT INTO items (name) VALUES ('psycopg2')")
    neon_connection.commit()
    assert names(neon_branch_isolated.connection_string) == ["psycopg2", "seed"]


def test_4_psycopg3_connection(neon_connection_psycopg, neon_branch_isolated):
    assert isinstance(neon_connection_psycopg, psycopg.Connection)
    check_pristine(neon_branch_isolated.connection_string)
    neon_connection_psycopg.execute("INSERT INTO items (name) VALUES ('psycopg3')")
    neon_connection_psycopg.commit()
    assert names(neon_branch_isolated.connection_string) == ["psycopg3", "seed"]


def test_5_pristine_at_the_end(neon_branch_isolated):
    check_pristine(neon_branch_isolated.connection_string)
