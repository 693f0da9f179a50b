"""The ORM models; they must describe exactly the schema the migrations build.

The Alembic revisions under ``alembic/versions`` are the source of truth for the
database. These models mirror them column for column (names, types, nullability,
server defaults, constraint names) so that an autogenerate comparison finds no
differences; change both together.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    Sequence,
    String,
    UniqueConstraint,
    func,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Explicit naming so that constraint names are predictable: the migrations
# spell out the same names, and autogenerate compares constraints by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Invoice numbers come from their own sequence rather than the order id, so they
# can start at a recognisable value and be reserved before an order exists.
FIRST_INVOICE_NUMBER = 1000
invoice_number_seq = Sequence("invoice_number_seq", start=FIRST_INVOICE_NUMBER)


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata Alembic compares against."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class OrderStatus(enum.Enum):
    """Lifecycle of an order, stored as the PostgreSQL enum type ``order_status``."""

    PENDING = "pending"
    PAID = "paid"
    CANCELLED = "cancelled"


# The database stores the lower-case values, not the Python member names.
order_status_type = Enum(
    OrderStatus,
    name="order_status",
    values_callable=lambda members: [member.value for member in members],
)


class Customer(Base):
    """Someone who places orders; the e-mail address identifies them."""

    __tablename__ = "customers"
    __table_args__ = (UniqueConstraint("email"),)
    # Load created_at on INSERT: services return customers after their session closes.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    orders: Mapped[list[Order]] = relationship(back_populates="customer")


class Product(Base):
    """Something that can be ordered; prices are integer cents to avoid rounding."""

    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("sku"),
        CheckConstraint("price_cents >= 0", name="price_not_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    price_cents: Mapped[int] = mapped_column(Integer)
    # Added by a later revision with a server default, so existing rows are active.
    is_active: Mapped[bool] = mapped_column(server_default=true())


class Order(Base):
    """An order header; its lines hold the products and quantities."""

    __tablename__ = "orders"
    # Fetch server-generated status/placed_at on INSERT so objects returned by
    # the services are complete after their session is closed.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    status: Mapped[OrderStatus] = mapped_column(
        order_status_type, server_default=OrderStatus.PENDING.value
    )
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Nullable because orders placed before invoicing existed have no number;
    # new orders draw one from the sequence on INSERT.
    invoice_number: Mapped[int | None] = mapped_column(BigInteger, invoice_number_seq, unique=True)

    customer: Mapped[Customer] = relationship(back_populates="orders")
    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def total_cents(self) -> int:
        """Order total computed from the lines, which snapshot unit prices."""
        return sum(line.quantity * line.unit_price_cents for line in self.lines)


class OrderLine(Base):
    """One product on an order, with the price it was sold at."""

    __tablename__ = "order_lines"
    __table_args__ = (
        UniqueConstraint("order_id", "product_id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    # Copied from the product when ordered, so later price changes don't
    # rewrite history.
    unit_price_cents: Mapped[int] = mapped_column(Integer)

    order: Mapped[Order] = relationship(back_populates="lines")
    product: Mapped[Product] = relationship()
