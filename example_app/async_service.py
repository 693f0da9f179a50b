"""An async service: ``create_async_engine`` with asyncpg and an ``async_sessionmaker``,
built at import from ``DATABASE_URL``, as async FastAPI apps do."""

from __future__ import annotations

import os

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from example_app.db import to_sqlalchemy_url
from example_app.models import Customer, Product

async_engine = create_async_engine(to_sqlalchemy_url(os.environ["DATABASE_URL"], "asyncpg"))
AsyncSessionLocal = async_sessionmaker(async_engine, expire_on_commit=False)


async def active_product_skus() -> list[str]:
    async with AsyncSessionLocal() as session:
        result = await session.scalars(select(Product.sku).where(Product.is_active))
        return sorted(result)


async def register_customer(email: str, name: str) -> Customer:
    customer = Customer(email=email, name=name)
    async with AsyncSessionLocal() as session, session.begin():
        session.add(customer)
    return customer


async def count_customers() -> int:
    async with AsyncSessionLocal() as session:
        return await session.scalar(select(func.count()).select_from(Customer)) or 0
