"""neon_branch_readonly / neon_engine_readonly, and the NeonBranch fields."""

import dataclasses
import os
from urllib.parse import urlsplit

import psycopg
import pytest
import sqlalchemy as sa
from e2e_check import backend, check_pristine, neon_api_get, record

from pytest_neon_alembic import NeonBranch
from pytest_neon_alembic.guard import SANDBOX_URL

# Every one of these must be refused by the database on the read-only branch,
# even after the session turned default_transaction_read_only off.
WRITES = [
    "INSERT INTO items (name) VALUES ('ro')",
    "UPDATE items SET name = 'changed'",
    "DELETE FROM items",
    "TRUNCATE items CASCADE",
    "SELECT nextval('items_id_seq')",
    "ALTER TABLE items ADD COLUMN extra int",
    "DROP TABLE notes",
    "CREATE TABLE ro_table (x int)",
    "CREATE TEMP TABLE ro_temp (x int)",
    "CREATE SCHEMA ro_schema",
]
# Large objects need no privilege to be created: only read-only enforcement stops them.
LARGE_OBJECT_WRITES = ["SELECT lo_create(0)", "SELECT lo_from_bytea(0, 'large object')"]
FIELDS = [
    "branch_id",
    "project_id",
    "connection_string",
    "host",
    "parent_id",
    "endpoint_id",
    "name",
    "read_only",
]


def test_0_no_fixture_sees_the_sandbox():
    assert os.environ["DATABASE_URL"] == SANDBOX_URL  # outside tests: the sandbox


def test_1_readonly_refuses_writes(neon_branch_readonly, neon_engine_readonly):
    branch = neon_branch_readonly
    assert branch.read_only is True
    assert os.environ["DATABASE_URL"] == branch.connection_string
    record("readonly", branch)
    check_pristine(branch.connection_string)
    with neon_engine_readonly.connect() as connection:
        assert connection.execute(sa.text("SELECT name FROM items")).scalars().all() == ["seed"]
        with pytest.raises(sa.exc.DBAPIError):
            connection.execute(sa.text("INSERT INTO items (name) VALUES ('ro')"))
        connection.rollback()
    with psycopg.connect(branch.connection_string, autocommit=True) as connection:
        connection.execute("SET default_transaction_read_only = off")
        connection.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        assert connection.execute("SHOW default_transaction_read_only").fetchone() == ("off",)
        refused = []
        for statement in WRITES:
            try:
                connection.execute(statement)
            except psycopg.Error:
                refused.append(statement)
        accepted = [statement for statement in WRITES if statement not in refused]
        assert accepted == []
    check_pristine(branch.connection_string)


def test_1b_readonly_refuses_large_objects(neon_branch_readonly):
    with psycopg.connect(neon_branch_readonly.connection_string, autocommit=True) as connection:
        connection.execute("SET default_transaction_read_only = off")
        accepted = []
        for statement in LARGE_OBJECT_WRITES:
            try:
                connection.execute(statement)
                accepted.append(statement)
            except psycopg.Error:
                pass
        count = connection.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
    assert accepted == []
    assert count == (0,)


def test_2_readonly_engine(neon_engine_readonly, neon_branch_readonly):
    assert neon_engine_readonly.pool._pre_ping
    assert (
        neon_engine_readonly.url.database
        == urlsplit(neon_branch_readonly.connection_string).path[1:]
    )
    with neon_engine_readonly.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM items")).scalar() == 1


def test_3_branch_fields(neon_branch_readonly, neon_branch_dirty, neon_migration_branch):
    readonly, dirty, migration = neon_branch_readonly, neon_branch_dirty, neon_migration_branch
    assert [field.name for field in dataclasses.fields(NeonBranch)] == FIELDS
    for branch in (readonly, dirty):
        assert isinstance(branch, NeonBranch)
        parts = urlsplit(branch.connection_string)
        assert parts.scheme in ("postgresql", "postgres")
        assert branch.host == parts.hostname
        assert branch.branch_id
        assert branch.name
        assert parts.password
        for text in (repr(branch), str(branch), f"{branch!r}", repr([branch])):
            assert parts.password not in text
            assert "***" in text
            assert branch.branch_id in text
    assert dirty.parent_id == migration.branch_id
    assert dirty.read_only is False
    assert migration.read_only is False
    assert dirty.branch_id != migration.branch_id
    if backend() == "neon":
        # Read-only access is a read_only endpoint on the migration branch itself.
        assert readonly.branch_id == migration.branch_id
        assert readonly.parent_id == migration.parent_id
        assert len({readonly.endpoint_id, dirty.endpoint_id, migration.endpoint_id}) == 3
        endpoint = neon_api_get(f"endpoints/{readonly.endpoint_id}")["endpoint"]
        assert (endpoint["type"], endpoint["branch_id"]) == ("read_only", migration.branch_id)
        for branch in (readonly, dirty, migration):
            assert branch.project_id == os.environ["NEON_PROJECT_ID"]
            assert branch.endpoint_id
            assert branch.name.startswith("pytest-")
    else:
        # Read-only access is a copy of the migration branch; there are no projects or endpoints.
        assert readonly.parent_id == migration.branch_id
        assert len({readonly.branch_id, dirty.branch_id, migration.branch_id}) == 3
        for branch in (readonly, dirty, migration):
            assert branch.project_id is None
            assert branch.endpoint_id is None
