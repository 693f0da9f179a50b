"""authors.bio (one developer's branch)

Revision ID: bbbb0002
Revises: aaaa0001
"""

import sqlalchemy as sa
from alembic import op

revision = "bbbb0002"
down_revision = "aaaa0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("authors", sa.Column("bio", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("authors", "bio")
