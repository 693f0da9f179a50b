"""posts.slug

Revision ID: e003
Revises: e002
"""

import sqlalchemy as sa
from alembic import op

revision = "e003"
down_revision = "e002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("posts", sa.Column("slug", sa.String(200), nullable=True))
    op.create_unique_constraint("uq_posts_slug", "posts", ["slug"])


def downgrade() -> None:
    op.drop_constraint("uq_posts_slug", "posts", type_="unique")
    op.drop_column("posts", "slug")
