"""customers.display_name (backfilled from email) and customers.is_active

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Add nullable, backfill, then tighten: the usual three steps of a data migration.
    op.add_column("customers", sa.Column("display_name", sa.String(200), nullable=True))
    op.execute("UPDATE customers SET display_name = lower(split_part(email, '@', 1))")
    op.alter_column("customers", "display_name", nullable=False)
    op.add_column(
        "customers",
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("customers", "is_active")
    op.drop_column("customers", "display_name")
