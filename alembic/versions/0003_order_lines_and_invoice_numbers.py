"""Create order_lines and the invoice number sequence.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-06 09:20:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Autogenerate does not track sequences, so this one is written by hand; it must
# match example_app.models.invoice_number_seq.
invoice_number_seq = sa.Sequence("invoice_number_seq", start=1000)


def upgrade() -> None:
    op.create_table(
        "order_lines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_cents", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_order_lines_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_lines_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_order_lines_product_id_products"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_lines")),
        sa.UniqueConstraint(
            "order_id", "product_id", name=op.f("uq_order_lines_order_id_product_id")
        ),
    )
    op.execute(sa.schema.CreateSequence(invoice_number_seq))
    # Nullable: orders that existed before invoicing keep no number; the app
    # draws one from the sequence for every new order.
    op.add_column("orders", sa.Column("invoice_number", sa.BigInteger(), nullable=True))
    op.create_unique_constraint(op.f("uq_orders_invoice_number"), "orders", ["invoice_number"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_orders_invoice_number"), "orders", type_="unique")
    op.drop_column("orders", "invoice_number")
    op.execute(sa.schema.DropSequence(invoice_number_seq))
    op.drop_table("order_lines")
