"""The async service (asyncpg engine built at import) under pytest-asyncio: no glue.

pytest-asyncio gives each test its own event loop; the app's engine, made once
at import, drops the previous loop's pooled connections on its own.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from example_app import async_service


@pytest.mark.asyncio
@pytest.mark.neon
async def test_register_1_commits() -> None:
    await async_service.register_customer("grace@example.com", "Grace Hopper")
    assert await async_service.count_customers() == 2


@pytest.mark.asyncio
@pytest.mark.neon
async def test_register_2_is_gone() -> None:
    assert await async_service.count_customers() == 1


@pytest.mark.asyncio
@pytest.mark.neon("readonly")
async def test_catalogue_on_the_readonly_branch() -> None:
    assert await async_service.active_product_skus() == ["GADGET-002", "GIZMO-003", "WIDGET-001"]


@pytest.mark.asyncio(loop_scope="module")
async def test_async_session_fixture_in_a_module_loop(neon_async_session) -> None:
    count = await neon_async_session.scalar(text("SELECT count(*) FROM customers"))
    assert count == 1
