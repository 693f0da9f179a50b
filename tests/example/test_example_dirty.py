"""The dirty branch: shared by every test and xdist worker, never reset.

Nothing here may assume what other tests left behind, so the test writes a row
only it knows about and reads it back on a separate connection, which shows the
write was committed to the shared branch rather than held in a transaction.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, insert, select
from sqlalchemy.pool import NullPool

from example_app.db import to_sqlalchemy_url
from example_app.models import Customer

if TYPE_CHECKING:
    from pytest_neon_alembic import NeonBranch


def test_dirty_branch_keeps_committed_writes(neon_branch_dirty: NeonBranch) -> None:
    email = f"dirty-{uuid.uuid4().hex}@example.com"
    # NullPool: each connect() is a new server session, so the read cannot be
    # served by the writer's connection.
    engine = create_engine(
        to_sqlalchemy_url(neon_branch_dirty.connection_string), poolclass=NullPool
    )
    try:
        with engine.begin() as writer:
            writer.execute(insert(Customer).values(email=email, name="Dirty Writer"))

        with engine.connect() as reader:
            name = reader.scalar(select(Customer.name).where(Customer.email == email))
    finally:
        engine.dispose()

    assert name == "Dirty Writer"
