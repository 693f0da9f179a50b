"""tags (the other developer's branch, also on top of aaaa0001)

Revision ID: cccc0002
Revises: aaaa0001
"""

import sqlalchemy as sa
from alembic import op

revision = "cccc0002"
down_revision = "aaaa0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("label", sa.String(50), nullable=False, unique=True),
    )


def downgrade() -> None:
    op.drop_table("tags")
