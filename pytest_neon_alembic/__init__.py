"""pytest-neon-alembic: the database state each test asks for, on branches of PostgreSQL."""

from .branch import NeonBranch
from .errors import (
    ConfigError,
    GuardError,
    MigrationError,
    NeonAlembicError,
    PostgresNotFoundError,
    ServerError,
)
from .migrations import MigrationStart

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "GuardError",
    "MigrationError",
    "MigrationStart",
    "NeonAlembicError",
    "NeonBranch",
    "PostgresNotFoundError",
    "ServerError",
]
