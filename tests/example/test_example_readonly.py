"""Reads against the migrated state, through the session-wide read-only branch.

Read-only tests cost nothing per test, and the database itself refuses writes,
so a test that accidentally writes fails loudly instead of polluting others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
import pytest
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

from example_app.models import Customer, Product

if TYPE_CHECKING:
    from pytest_neon_alembic import NeonBranch

# What revision 0004 seeds (is_active comes from 0005's server default).
SEEDED_PRODUCTS = [
    ("GADGET-002", "Gadget", 4950, True),
    ("GIZMO-003", "Gizmo", 1250, True),
    ("WIDGET-001", "Widget", 1999, True),
]
SEEDED_CUSTOMERS = [("ada@example.com", "Ada Lovelace")]

# How PostgreSQL refuses a write, depending on how read-only is enforced: a
# read-only transaction/endpoint (25006) or a role without write privileges (42501).
READ_ONLY_SQLSTATES = {"25006", "42501"}


def _sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a driver error, for psycopg 3 (``sqlstate``) or psycopg2 (``pgcode``)."""
    return getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)


def test_seeded_catalogue_is_readable(neon_engine_readonly: Engine) -> None:
    with neon_engine_readonly.connect() as connection:
        products = connection.execute(
            select(Product.sku, Product.name, Product.price_cents, Product.is_active).order_by(
                Product.sku
            )
        ).all()
        customers = connection.execute(
            select(Customer.email, Customer.name).order_by(Customer.email)
        ).all()

    assert [tuple(row) for row in products] == SEEDED_PRODUCTS
    assert [tuple(row) for row in customers] == SEEDED_CUSTOMERS


@pytest.mark.parametrize(
    "statement",
    [
        insert(Customer).values(email="mallory@example.com", name="Mallory"),
        update(Product).values(price_cents=0),
        delete(Customer),
    ],
    ids=["insert", "update", "delete"],
)
def test_writes_through_readonly_engine_fail(
    neon_engine_readonly: Engine, statement: Executable
) -> None:
    with neon_engine_readonly.connect() as connection, pytest.raises(DBAPIError) as caught:
        connection.execute(statement)
        connection.commit()

    assert _sqlstate(caught.value.orig) in READ_ONLY_SQLSTATES


def test_readonly_branch_refuses_writes_from_any_client(neon_branch_readonly: NeonBranch) -> None:
    # The refusal comes from the database, not from SQLAlchemy: a raw driver
    # connection on the same connection string is refused too.
    assert neon_branch_readonly.read_only is True
    with psycopg.connect(neon_branch_readonly.connection_string) as connection:
        assert connection.execute("SELECT count(*) FROM products").fetchone() == (3,)
        connection.rollback()
        with pytest.raises(
            (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege)
        ):
            connection.execute(
                "INSERT INTO customers (email, name) VALUES (%s, %s)",
                ("mallory@example.com", "Mallory"),
            )
