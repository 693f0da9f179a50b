"""urls.sqlalchemy_url: SQLAlchemy URLs that name their driver."""

from __future__ import annotations

import pytest

from pytest_neon_alembic.branch import NeonBranch
from pytest_neon_alembic.urls import sqlalchemy_url

NEON = "postgresql://u:pw@ep-x.neon.tech/neondb?sslmode=require&options=-c%20a%3Db"


@pytest.mark.parametrize(
    ("driver", "expected"),
    [
        (
            "psycopg",
            "postgresql+psycopg://u:pw@ep-x.neon.tech/neondb?sslmode=require&options=-c%20a%3Db",
        ),
        (
            "psycopg2",
            "postgresql+psycopg2://u:pw@ep-x.neon.tech/neondb?sslmode=require&options=-c%20a%3Db",
        ),
        ("asyncpg", "postgresql+asyncpg://u:pw@ep-x.neon.tech/neondb?ssl=require"),
    ],
)
def test_sqlalchemy_url_names_its_driver(driver: str, expected: str) -> None:
    assert sqlalchemy_url(NEON, driver) == expected


def test_urls_that_name_a_driver_are_kept() -> None:
    assert sqlalchemy_url("postgresql+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"


def test_neon_branch_gives_each_form() -> None:
    branch = NeonBranch("b", None, "postgres://u:pw@h:5432/d", "h")
    assert branch.sqlalchemy_url() == "postgresql+psycopg://u:pw@h:5432/d"
    assert branch.sqlalchemy_url("asyncpg") == "postgresql+asyncpg://u:pw@h:5432/d"
