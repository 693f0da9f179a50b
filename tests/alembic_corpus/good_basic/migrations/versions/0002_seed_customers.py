"""data migration: the house customer and a first order

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

customers = sa.table("customers", sa.column("id", sa.Integer), sa.column("email", sa.String))
orders = sa.table(
    "orders",
    sa.column("customer_id", sa.Integer),
    sa.column("total", sa.Numeric),
)


def upgrade() -> None:
    op.bulk_insert(customers, [{"email": "house@example.com"}, {"email": "ADA@example.com"}])
    house = op.get_bind().execute(
        sa.select(customers.c.id).where(customers.c.email == "house@example.com")
    )
    op.bulk_insert(orders, [{"customer_id": house.scalar_one(), "total": 0}])


def downgrade() -> None:
    op.execute("DELETE FROM orders")
    op.execute(
        customers.delete().where(customers.c.email.in_(["house@example.com", "ADA@example.com"]))
    )
