"""Helpers of the inner contract tests (copied into the inner project as e2e_check.py)."""

from __future__ import annotations

import os

import psycopg

PRISTINE_TABLES = {"alembic_version", "items", "notes"}


def backend() -> str:
    """The backend the outer test runs this session on: ``E2E_BACKEND``, ``local`` if unset."""
    return os.environ.get("E2E_BACKEND", "local")


def neon_api_get(path: str) -> dict:
    """GET ``path`` of the Neon project from NEON_API_URL / NEON_PROJECT_ID / NEON_API_KEY."""
    import requests

    base = os.environ["NEON_API_URL"].rstrip("/")
    answer = requests.get(
        f"{base}/projects/{os.environ['NEON_PROJECT_ID']}/{path}",
        headers={"Authorization": f"Bearer {os.environ['NEON_API_KEY']}"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()


def names(url: str) -> list[str]:
    """The names in ``items``, sorted, read on a new connection."""
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM items ORDER BY name")]


def check_pristine(url: str) -> None:
    """The database at ``url`` is exactly in the migrated state: data, schema and sequences."""
    with psycopg.connect(url) as connection:
        tables = {
            row[0]
            for row in connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
        assert tables == PRISTINE_TABLES
        columns = [
            row[0]
            for row in connection.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = 'items' ORDER BY ordinal_position"
            )
        ]
        assert columns == ["id", "name"]
        assert [row[0] for row in connection.execute("SELECT name FROM items")] == ["seed"]
        assert connection.execute("SELECT count(*) FROM notes").fetchone() == (0,)
        large_objects = connection.execute("SELECT count(*) FROM pg_largeobject_metadata")
        assert large_objects.fetchone() == (0,)
        sequence = connection.execute("SELECT last_value, is_called FROM items_id_seq").fetchone()
        assert sequence == (1, True)
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("r2",)]


def record(kind: str, branch) -> None:
    """Append ``kind worker branch_id`` to shared_ids.txt, for the outer test to compare."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open("shared_ids.txt", "a") as file:
        file.write(f"{kind} {worker} {branch.branch_id}\n")
