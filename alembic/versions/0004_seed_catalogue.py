"""Seed the product catalogue and a demo customer.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-06 09:30:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Lightweight table stubs frozen at this revision's schema: importing the ORM
# models here would break as soon as they gained columns this revision lacks.
products = sa.table(
    "products",
    sa.column("sku", sa.String),
    sa.column("name", sa.String),
    sa.column("price_cents", sa.Integer),
)
customers = sa.table(
    "customers",
    sa.column("email", sa.String),
    sa.column("name", sa.String),
)

SEED_PRODUCTS = [
    {"sku": "WIDGET-001", "name": "Widget", "price_cents": 1999},
    {"sku": "GADGET-002", "name": "Gadget", "price_cents": 4950},
    {"sku": "GIZMO-003", "name": "Gizmo", "price_cents": 1250},
]
SEED_CUSTOMERS = [
    {"email": "ada@example.com", "name": "Ada Lovelace"},
]


def upgrade() -> None:
    op.bulk_insert(products, SEED_PRODUCTS)
    op.bulk_insert(customers, SEED_CUSTOMERS)


def downgrade() -> None:
    # Delete only the seeded rows, by their natural keys, so data that users
    # added after this revision is left alone.
    op.execute(
        customers.delete().where(customers.c.email.in_([row["email"] for row in SEED_CUSTOMERS]))
    )
    op.execute(products.delete().where(products.c.sku.in_([row["sku"] for row in SEED_PRODUCTS])))
