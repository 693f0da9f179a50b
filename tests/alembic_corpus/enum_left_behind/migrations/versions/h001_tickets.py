"""tickets, with the ticket_priority enum type

Revision ID: h001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "h001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column(
            "priority",
            sa.Enum("low", "normal", "urgent", name="ticket_priority"),
            server_default="normal",
            nullable=False,
        ),
    )


def downgrade() -> None:
    # The bug: CREATE TYPE ticket_priority came with the table; DROP TABLE leaves it.
    op.drop_table("tickets")
