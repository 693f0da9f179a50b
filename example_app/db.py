"""The application's database: one engine and one sessionmaker, built at import.

The FastAPI / Flask norm: ``DATABASE_URL`` is read once, when the module is
imported. Under pytest-neon-alembic it holds the plugin's sandbox URL at that
moment, and this engine then talks to whichever branch the running test asked
for — no test glue, no lazy per-URL engines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# Plain libpq-style schemes (what Neon and the plugin hand out) carry no driver:
# SQLAlchemy 2.0 would pick psycopg2 for them, 2.1 psycopg. This app uses psycopg 3.
_PLAIN_SCHEMES = frozenset({"postgres", "postgresql"})


def to_sqlalchemy_url(url: str, driver: str = "psycopg") -> str:
    """Pin a plain ``postgresql://`` URL to a driver (psycopg 3 unless told otherwise).

    URLs that already name a driver are returned unchanged, so callers that
    deliberately chose one (e.g. ``postgresql+psycopg2://``) keep it.
    """
    parsed = make_url(url)
    if parsed.drivername not in _PLAIN_SCHEMES:
        return url
    return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


DATABASE_URL = os.environ["DATABASE_URL"]

# In production you would add pool_pre_ping=True; the tests need no option at all.
engine = create_engine(to_sqlalchemy_url(DATABASE_URL))

# expire_on_commit=False lets services return ORM objects that callers can
# still read after the session that loaded them is closed.
SessionLocal = sessionmaker(engine, expire_on_commit=False)


def get_db() -> Iterator[Session]:
    """A session per request (the FastAPI dependency)."""
    with SessionLocal() as session:
        yield session
