"""Accounts as the models describe them, after months without `alembic revision`."""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))  # migrated: String(50), nullable
    balance: Mapped[float] = mapped_column(sa.Numeric(12, 2))  # migrated: Integer, nullable
    status: Mapped[str] = mapped_column(sa.String(20))  # migrated: String(10), nullable
    created_at: Mapped[datetime.datetime] = mapped_column()  # never migrated


class Profile(Base):  # never migrated, nor the three below
    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"), index=True)


class Login(Base):
    __tablename__ = "logins"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"), index=True)


class Audit(Base):
    __tablename__ = "audits"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"), index=True)


target_metadata = Base.metadata
