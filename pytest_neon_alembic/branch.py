"""NeonBranch, the value every branch fixture gives, and the roles branches play in a run."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from .redact import mask_url
from .urls import sqlalchemy_url


class BranchRole(str, enum.Enum):
    """Why a branch exists; it decides its parent, its name suffix and who deletes it."""

    FRESH = "fresh"  # empty, for pytest-alembic's checks
    MIGRATION = "migration"  # `alembic upgrade head` runs here once
    READONLY = "readonly"  # enforced read-only access to the migration state
    DIRTY = "dirty"  # shared by every worker, never reset
    ISOLATED = "isolated"  # one per worker, reset after each test that wrote
    SHARED = "shared"  # one per test module, never reset


@dataclass(frozen=True)
class NeonBranch:
    """A database branch a test can connect to.

    The first six fields are pytest-neon 2.3's, so code written for it keeps
    working. On the local backend ``branch_id`` is the database name and
    ``project_id``/``endpoint_id`` are None.
    """

    branch_id: str
    project_id: str | None
    # Neither shown nor compared: pytest's diff of two unequal dataclasses prints every
    # compared field in full, password included. A branch's identity is its id.
    connection_string: str = field(repr=False, compare=False)
    host: str | None
    parent_id: str | None = None
    endpoint_id: str | None = None
    name: str = ""
    read_only: bool = False

    def __repr__(self) -> str:
        return (
            f"NeonBranch(branch_id={self.branch_id!r}, name={self.name!r}, "
            f"read_only={self.read_only}, parent_id={self.parent_id!r}, "
            f"connection_string={mask_url(self.connection_string)!r})"
        )

    def sqlalchemy_url(self, driver: str = "psycopg") -> str:
        """``connection_string`` as a SQLAlchemy URL that names its driver: ``psycopg``
        (default; also for ``create_async_engine``), ``psycopg2`` or ``asyncpg``."""
        return sqlalchemy_url(self.connection_string, driver)

    @property
    def key(self) -> str:
        """Identity in the run's registry: read-only access to a branch is its own entry
        (on Neon it is an endpoint of the branch it reads)."""
        if self.read_only and self.endpoint_id:
            return f"{self.branch_id}#{self.endpoint_id}"
        return self.branch_id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NeonBranch:
        return cls(**values)
