"""Business operations, each in its own transaction.

Every function opens its own session or connection from the module-level
engine (``example_app.db``) and commits before returning, the way request
handlers usually do. That is exactly what makes
testing them with a shared database painful (there is no outer transaction a
test could roll back) and what a per-test branch makes easy.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session, selectinload

from example_app.db import SessionLocal, engine
from example_app.models import (
    Customer,
    Order,
    OrderLine,
    OrderStatus,
    Product,
    invoice_number_seq,
)


class ServiceError(Exception):
    """A request the services refuse; the message is meant for the caller."""


class UnknownCustomerError(ServiceError):
    """No customer has the given e-mail address."""


class UnknownProductError(ServiceError):
    """A SKU does not exist or the product is no longer sold."""


class OrderStateError(ServiceError):
    """The order is not in a state that allows the requested change."""


def register_customer(email: str, name: str) -> Customer:
    """Create a customer; the unique e-mail constraint rejects duplicates.

    Raises ``sqlalchemy.exc.IntegrityError`` for a duplicate address: the
    database is the one place that can enforce uniqueness race-free.
    """
    customer = Customer(email=email, name=name)
    with SessionLocal() as session, session.begin():
        session.add(customer)
    return customer


def place_order(customer_email: str, items: Iterable[tuple[str, int]]) -> Order:
    """Create a pending order for ``(sku, quantity)`` items and commit it.

    Unit prices are copied onto the lines so the order keeps the price it was
    placed at. Repeated SKUs are merged, since a line per product is enforced
    by a unique constraint.
    """
    quantities: dict[str, int] = {}
    for sku, quantity in items:
        if quantity <= 0:
            raise ServiceError(f"quantity for {sku!r} must be positive, got {quantity}")
        quantities[sku] = quantities.get(sku, 0) + quantity
    if not quantities:
        raise ServiceError("an order needs at least one item")

    with SessionLocal() as session, session.begin():
        customer = session.scalar(select(Customer).where(Customer.email == customer_email))
        if customer is None:
            raise UnknownCustomerError(f"no customer with e-mail {customer_email!r}")

        products = {
            product.sku: product
            for product in session.scalars(
                select(Product).where(Product.sku.in_(quantities), Product.is_active)
            )
        }
        missing = sorted(set(quantities) - set(products))
        if missing:
            raise UnknownProductError(f"unknown or inactive product(s): {', '.join(missing)}")

        order = Order(
            customer=customer,
            # Drawn up front rather than left to the column's sequence default,
            # which SQLAlchemy renders inline and does not return: the caller
            # gets an Order whose invoice number is already known.
            invoice_number=_draw_invoice_number(session),
            lines=[
                OrderLine(
                    product=products[sku],
                    quantity=quantity,
                    unit_price_cents=products[sku].price_cents,
                )
                for sku, quantity in quantities.items()
            ],
        )
        session.add(order)
    return order


def cancel_order(order_id: int) -> Order:
    """Cancel a pending order; paid or already cancelled orders are refused.

    The row is locked so a concurrent payment cannot slip in between the
    status check and the update.
    """
    with SessionLocal() as session, session.begin():
        order = session.scalar(
            select(Order)
            .where(Order.id == order_id)
            .options(selectinload(Order.lines))
            .with_for_update()
        )
        if order is None:
            raise OrderStateError(f"order {order_id} does not exist")
        if order.status is not OrderStatus.PENDING:
            raise OrderStateError(
                f"order {order_id} is {order.status.value}; only pending orders can be cancelled"
            )
        order.status = OrderStatus.CANCELLED
    return order


def next_invoice_number() -> int:
    """Reserve the next invoice number.

    ``nextval`` is not transactional: a reserved number is never handed out
    again, even if the caller's transaction rolls back.
    """
    with engine.begin() as connection:
        return _draw_invoice_number(connection)


def _draw_invoice_number(executor: Session | Connection) -> int:
    """Take the next value from ``invoice_number_seq`` on the given transaction."""
    number = executor.scalar(select(invoice_number_seq.next_value()))
    assert number is not None  # nextval always returns a value or raises
    return number


def count_orders() -> int:
    """Count all orders, whatever their status."""
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(Order)) or 0
