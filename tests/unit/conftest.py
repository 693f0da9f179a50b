"""Shared fixtures of the unit tests: one real embedded PostgreSQL server for the session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from pytest_neon_alembic.backends.local import LocalBackend
from pytest_neon_alembic.coordination import RunDirectory, state_root
from pytest_neon_alembic.server.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[EmbeddedServer]:
    """One embedded server for all unit tests, stopped at the end of the session.

    It lives in a run directory of the plugin's own, so if this process is
    killed, the next pytest run stops the server and removes its files.
    """
    run = RunDirectory.create(state_root())
    server = EmbeddedServer.start(run.path, state_root() / "cache")
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            run.remove()


@pytest.fixture(scope="session")
def admin_url(embedded_server: EmbeddedServer) -> str:
    return embedded_server.admin_url


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Database names no other test uses (the server is shared by the whole session)."""

    def make(prefix: str = "db") -> str:
        return f"ut_{prefix}_{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def local_backend(admin_url: str) -> Iterator[LocalBackend]:
    """A LocalBackend of its own run id; whatever it created is dropped after the test."""
    run_id = "unit" + uuid.uuid4().hex[:8]
    backend = LocalBackend(admin_url, run_id=run_id, owner_pid=os.getpid())
    try:
        yield backend
    finally:
        backend.drop_abandoned(lambda marker: marker.get("run") == run_id)
        backend.close()


@pytest.fixture
def fresh_database(local_backend: LocalBackend, unique_name: Callable[[str], str]) -> str:
    """The connection string of a new, empty database (a clone of template1)."""
    return local_backend.create_branch(unique_name("fresh"), None).connection_string
