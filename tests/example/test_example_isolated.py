"""Tests that write, each on a branch reset to the migrated state afterwards.

The services open their own sessions from the module-level engine (built from
``DATABASE_URL``, which the plugin points at the test's branch) and commit.
There is no outer transaction to roll back, so these tests only stay
independent because the branch itself is reset. The numbered pairs below pass
together only thanks to that reset; each also passes on its own, in any order.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from example_app.models import Customer, Order, OrderLine, OrderStatus, Product
from example_app.services import (
    count_orders,
    next_invoice_number,
    place_order,
    register_customer,
)

if TYPE_CHECKING:
    from pytest_neon_alembic import NeonBranch

# invoice_number_seq starts here (revision 0003) and nothing in the migrations
# draws from it, so every test's first invoice number is this one.
FIRST_INVOICE_NUMBER = 1000


def test_place_order_commits_and_is_visible(
    neon_branch_isolated: NeonBranch, neon_engine: Engine
) -> None:
    # The app's module-level engine follows DATABASE_URL to this test's branch.
    assert os.environ["DATABASE_URL"] == neon_branch_isolated.connection_string

    order = place_order("ada@example.com", [("WIDGET-001", 2), ("GIZMO-003", 1)])

    assert order.status is OrderStatus.PENDING
    assert order.invoice_number == FIRST_INVOICE_NUMBER
    assert order.total_cents == 2 * 1999 + 1250
    # Committed: another engine, on other connections, sees the order and its lines.
    with neon_engine.connect() as connection:
        email, status = connection.execute(
            select(Customer.email, Order.status).join(Order.customer).where(Order.id == order.id)
        ).one()
        quantities = dict(
            connection.execute(
                select(Product.sku, OrderLine.quantity)
                .join(OrderLine.product)
                .where(OrderLine.order_id == order.id)
            ).all()
        )
    assert (email, status) == ("ada@example.com", OrderStatus.PENDING)
    assert quantities == {"WIDGET-001": 2, "GIZMO-003": 1}
    assert count_orders() == 1


def test_every_test_starts_without_orders(neon_branch_isolated: NeonBranch) -> None:
    assert count_orders() == 0


def test_unique_email_1_first_registration(neon_branch_isolated: NeonBranch) -> None:
    customer = register_customer("grace@example.com", "Grace Hopper")

    assert customer.id is not None
    # The constraint is real: a second registration in the same test fails...
    with pytest.raises(IntegrityError):
        register_customer("grace@example.com", "Grace Hopper")


def test_unique_email_2_same_email_again(neon_branch_isolated: NeonBranch) -> None:
    # ...yet here the same address registers fine: the previous test's commit
    # was undone by the branch reset.
    customer = register_customer("grace@example.com", "Grace Hopper")

    assert customer.email == "grace@example.com"


def test_invoice_sequence_1_draws_from_the_start(neon_branch_isolated: NeonBranch) -> None:
    assert next_invoice_number() == FIRST_INVOICE_NUMBER
    assert next_invoice_number() == FIRST_INVOICE_NUMBER + 1


def test_invoice_sequence_2_is_reset_too(neon_branch_isolated: NeonBranch) -> None:
    # nextval is not transactional, so only resetting the branch (not rolling
    # back a transaction) can hand out the first number again.
    assert next_invoice_number() == FIRST_INVOICE_NUMBER


def test_ddl_1_create_scratch_table(neon_engine: Engine) -> None:
    with neon_engine.begin() as connection:
        connection.execute(text("CREATE TABLE scratch (id integer PRIMARY KEY, note text)"))
        connection.execute(text("INSERT INTO scratch VALUES (1, 'left behind?')"))

    assert inspect(neon_engine).has_table("scratch")


def test_ddl_2_scratch_table_is_gone(neon_engine: Engine) -> None:
    # Schema changes are undone along with data.
    assert not inspect(neon_engine).has_table("scratch")


def test_neon_session_orm_round_trip(neon_session: Session) -> None:
    ada = neon_session.scalars(select(Customer).where(Customer.email == "ada@example.com")).one()
    gadget = neon_session.scalars(select(Product).where(Product.sku == "GADGET-002")).one()

    order = Order(
        customer=ada,
        lines=[OrderLine(product=gadget, quantity=3, unit_price_cents=gadget.price_cents)],
    )
    neon_session.add(order)
    neon_session.commit()
    neon_session.refresh(order)

    # Server defaults and the invoice sequence were applied by the database.
    assert order.status is OrderStatus.PENDING
    assert order.placed_at is not None
    assert order.invoice_number == FIRST_INVOICE_NUMBER
    assert order.total_cents == 3 * 4950
    assert neon_session.scalar(select(func.count()).select_from(Order)) == 1
