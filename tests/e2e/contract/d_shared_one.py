"""neon_branch_shared: one branch for this module, writes persist within it."""

import os

import psycopg
from e2e_check import names, record

LABEL = "shared-one"


def test_1_shared_write(neon_branch_shared):
    assert neon_branch_shared.read_only is False
    assert os.environ["DATABASE_URL"] == neon_branch_shared.connection_string
    record(LABEL, neon_branch_shared)
    with psycopg.connect(neon_branch_shared.connection_string) as connection:
        connection.execute("INSERT INTO items (name) VALUES (%s)", (LABEL,))


def test_2_shared_write_persists_in_module(neon_branch_shared):
    record(LABEL, neon_branch_shared)
    assert names(neon_branch_shared.connection_string) == ["seed", LABEL]
