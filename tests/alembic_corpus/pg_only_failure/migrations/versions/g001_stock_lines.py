"""stock_lines, quantity as text

Revision ID: g001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "g001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stock_lines",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sku", sa.String(40), nullable=False),
        sa.Column("quantity", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stock_lines")
