"""``neon_async_engine`` and ``neon_async_session``: async SQLAlchemy on the isolated branch.

They are plain (sync) fixtures on purpose: an engine made without a loop makes
its connections in whichever loop the test runs — pytest-asyncio's per-test,
per-module or per-session loop alike — and they are closed in that same loop
after the test. An async fixture would run in a loop of its own scope, and a
connection made there fails in the test with "attached to a different loop".
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from .branch import NeonBranch


def async_driver() -> str:
    """asyncpg when it is installed, else psycopg 3's async mode."""
    return "asyncpg" if importlib.util.find_spec("asyncpg") else "psycopg"


class _Loops:
    """The event loops an async engine made connections in, to close them there."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.loops: list[asyncio.AbstractEventLoop] = []
        event.listen(engine.sync_engine, "connect", self._connected)

    def _connected(self, *_args: Any) -> None:
        loop = asyncio.get_running_loop()
        if loop not in self.loops:
            self.loops.append(loop)

    def run(self, make: Any) -> None:
        """Run the coroutine ``make()`` returns in every loop still usable."""
        for loop in self.loops:
            if not loop.is_closed() and not loop.is_running():
                coroutine: Coroutine[Any, Any, Any] = make()
                with contextlib.suppress(Exception):
                    loop.run_until_complete(coroutine)


_LOOPS: dict[int, _Loops] = {}


@pytest.fixture
def neon_async_engine(neon_branch_isolated: NeonBranch) -> Iterator[Any]:
    """SQLAlchemy ``AsyncEngine`` on ``neon_branch_isolated``, one per test.

    asyncpg when installed, else psycopg's async mode (build your own with
    ``neon_branch_isolated.sqlalchemy_url("asyncpg" | "psycopg")``). Correct
    under pytest-asyncio's per-test and per-module loops: connections are made
    in the test's loop and closed in it after the test. With the ``transaction``
    strategy, what it commits is reset as with the ``branch`` strategy.
    """
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(neon_branch_isolated.sqlalchemy_url(async_driver()))
    loops = _Loops(engine)
    _LOOPS[id(engine)] = loops
    yield engine
    loops.run(engine.dispose)
    engine.sync_engine.dispose(close=False)  # whatever is left (a loop already closed)
    _LOOPS.pop(id(engine), None)


@pytest.fixture
def neon_async_session(neon_async_engine: Any) -> Iterator[Any]:
    """SQLAlchemy ``AsyncSession`` on ``neon_async_engine`` (``expire_on_commit=False``),
    closed in the test's loop after the test."""
    from sqlalchemy.ext.asyncio import AsyncSession

    session = AsyncSession(neon_async_engine, expire_on_commit=False)
    yield session
    loops = _LOOPS.get(id(neon_async_engine))
    if loops is not None:
        loops.run(session.close)
