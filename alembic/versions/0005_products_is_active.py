"""Add products.is_active, defaulting to true.

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-13 14:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The server default backfills existing rows, which is what lets the
    # column be NOT NULL in a single step.
    op.add_column(
        "products",
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("products", "is_active")
