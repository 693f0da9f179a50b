"""tickets.closed

Revision ID: h002
Revises: h001
"""

import sqlalchemy as sa
from alembic import op

revision = "h002"
down_revision = "h001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tickets", sa.Column("closed", sa.Boolean(), server_default=sa.false(), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("tickets", "closed")
