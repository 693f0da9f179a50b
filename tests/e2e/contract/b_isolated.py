"""neon_branch_isolated: whatever a test does, the next one starts from the migrated state."""

import os

import psycopg
from e2e_check import check_pristine, names, record


def test_1_commit_ddl_and_sequence(neon_branch_isolated):
    branch = neon_branch_isolated
    assert branch.read_only is False
    assert os.environ["DATABASE_URL"] == branch.connection_string
    record("isolated", branch)
    check_pristine(branch.connection_string)
    with psycopg.connect(branch.connection_string) as connection:
        connection.execute("INSERT INTO items (name) VALUES ('written')")
        connection.execute("CREATE TABLE extra (x int)")
        connection.execute("ALTER TABLE items ADD COLUMN added int")
        for _ in range(5):
            last = connection.execute("SELECT nextval('items_id_seq')").fetchone()[0]
    assert last == 7
    assert names(branch.connection_string) == ["seed", "written"]


def test_2_sees_the_pristine_state(neon_branch_isolated):
    record("isolated", neon_branch_isolated)
    check_pristine(neon_branch_isolated.connection_string)


def test_3_writes_through_two_connections(neon_branch_isolated):
    url = neon_branch_isolated.connection_string
    with psycopg.connect(url) as first, psycopg.connect(url) as second:
        item = first.execute("INSERT INTO items (name) VALUES ('first') RETURNING id").fetchone()
        first.commit()
        second.execute("INSERT INTO items (name) VALUES ('second')")
        second.execute("INSERT INTO notes (item_id, body) VALUES (%s, 'note')", item)
        second.commit()
        assert [row[0] for row in first.execute("SELECT name FROM items ORDER BY name")] == [
            "first",
            "second",
            "seed",
        ]
        first.commit()


def test_4_sees_the_pristine_state_again(neon_branch_isolated):
    check_pristine(neon_branch_isolated.connection_string)
