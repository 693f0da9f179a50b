"""The documented recipe for a history that does not start from an empty database."""

import os

import pytest
from models import Base

from pytest_neon_alembic import MigrationStart


@pytest.fixture(scope="session")
def neon_migration_context():
    with open("context.log", "a") as log:
        url = os.environ.get("DATABASE_URL", "")  # the plugin's sandbox outside a branch
        log.write("enter " + ("sandbox" if ".pytest-neon-alembic.invalid" in url else url) + "\n")
    yield MigrationStart(create=Base.metadata.create_all, stamp="heads")
    with open("context.log", "a") as log:
        log.write("exit\n")
