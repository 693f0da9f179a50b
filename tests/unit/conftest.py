"""Shared fixtures of the unit tests: one real embedded PostgreSQL server for the session."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_neon_alembic.backends.embedded import EmbeddedServer
from pytest_neon_alembic.backends.local import LocalBackend
from pytest_neon_alembic.coordination import state_root


def _reachable_by_others(path: Path) -> bool:
    """Whether every parent of ``path`` is o+x (as root the server runs as another user)."""
    return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in path.absolute().parents)


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One embedded server for all unit tests, stopped at the end of the session.

    The run directory comes from ``tmp_path_factory``. As root, pytest's base temp
    directory is mode 0700 (pytest enforces it), which the unprivileged server user
    cannot traverse; then the run directory goes under the plugin's state root
    (/dev/shm, o+x) instead, and is removed at the end.
    """
    run_dir = tmp_path_factory.mktemp("embedded")
    fallback: Path | None = None
    if os.geteuid() == 0 and not _reachable_by_others(run_dir):
        fallback = Path(tempfile.mkdtemp(prefix="unit-tests-", dir=state_root()))
        os.chmod(fallback, 0o711)
        run_dir = fallback
    server = EmbeddedServer.start(run_dir / "server", state_root() / "cache")
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            if fallback is not None:
                shutil.rmtree(fallback, ignore_errors=True)


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
