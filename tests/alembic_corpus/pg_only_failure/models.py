"""Stock lines, whose quantity became an integer."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class StockLine(Base):
    __tablename__ = "stock_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(sa.String(40))
    quantity: Mapped[int] = mapped_column(sa.Integer)


target_metadata = Base.metadata
