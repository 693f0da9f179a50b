"""create accounts

Revision ID: m001
"""

import sqlalchemy as sa
from alembic import op

revision = "m001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=50), nullable=True),
        sa.Column("balance", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("accounts")
