"""Support tickets with a priority enum."""

from __future__ import annotations

import enum

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Priority(enum.Enum):
    low = "low"
    normal = "normal"
    urgent = "urgent"


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(sa.String(200))
    priority: Mapped[Priority] = mapped_column(
        sa.Enum(Priority, name="ticket_priority"), server_default="normal"
    )
    closed: Mapped[bool] = mapped_column(server_default=sa.false())


target_metadata = Base.metadata
