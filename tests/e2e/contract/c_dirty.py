"""neon_branch_dirty / neon_engine_dirty: writes persist across tests."""

import os

import sqlalchemy as sa
from e2e_check import check_pristine, names, record


def test_1_dirty_write(neon_branch_dirty, neon_engine_dirty):
    assert neon_branch_dirty.read_only is False
    assert os.environ["DATABASE_URL"] == neon_branch_dirty.connection_string
    assert neon_engine_dirty.pool._pre_ping
    record("dirty", neon_branch_dirty)
    with neon_engine_dirty.begin() as connection:
        connection.execute(sa.text("INSERT INTO items (name) VALUES ('dirty-1')"))


def test_2_dirty_write_persists(neon_branch_dirty, neon_engine_dirty):
    record("dirty", neon_branch_dirty)
    assert names(neon_branch_dirty.connection_string) == ["dirty-1", "seed"]
    with neon_engine_dirty.begin() as connection:
        connection.execute(sa.text("CREATE TABLE dirty_table (x int)"))


def test_3_dirty_schema_persists(neon_engine_dirty):
    with neon_engine_dirty.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM dirty_table")).scalar() == 0


def test_4_isolated_does_not_see_dirty(neon_branch_isolated):
    check_pristine(neon_branch_isolated.connection_string)
