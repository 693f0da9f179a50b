"""stock_lines.quantity: text -> integer

Revision ID: g002
Revises: g001
"""

import sqlalchemy as sa
from alembic import op

revision = "g002"
down_revision = "g001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Works on SQLite; PostgreSQL wants postgresql_using="quantity::integer".
    op.alter_column("stock_lines", "quantity", type_=sa.Integer(), existing_type=sa.Text())


def downgrade() -> None:
    op.alter_column("stock_lines", "quantity", type_=sa.Text(), existing_type=sa.Integer())
