"""Users, with an email column that no migration creates."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), server_default="anonymous")
    # The drift: added here, never migrated.
    email: Mapped[str | None] = mapped_column(sa.String(320))


target_metadata = Base.metadata
