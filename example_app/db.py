"""The application's database engine, built lazily from ``DATABASE_URL``.

The engine is not created at import time because the URL is only known once the
test plugin (or the deployment environment) has set ``DATABASE_URL``, and under
pytest-neon-alembic it points at a different branch from one test to the next.
Engines are therefore cached per URL: code that reads ``get_engine()`` always
talks to whatever database ``DATABASE_URL`` names right now.
"""

from __future__ import annotations

import os
import threading

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

DATABASE_URL_ENV = "DATABASE_URL"

# Plain libpq-style schemes (what Neon and the plugin hand out) carry no driver;
# SQLAlchemy would pick psycopg2 for them, but this app is written for psycopg 3.
_PLAIN_SCHEMES = frozenset({"postgres", "postgresql"})

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def to_sqlalchemy_url(url: str) -> str:
    """Pin a plain ``postgresql://`` URL to the psycopg 3 driver.

    URLs that already name a driver are returned unchanged, so callers that
    deliberately chose one (e.g. ``postgresql+psycopg2://``) keep it.
    """
    parsed = make_url(url)
    if parsed.drivername not in _PLAIN_SCHEMES:
        return url
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def database_url() -> str:
    """Return ``DATABASE_URL``, failing with a message that says how to fix it."""
    url = os.environ.get(DATABASE_URL_ENV)
    if not url:
        raise RuntimeError(
            f"{DATABASE_URL_ENV} is not set; point it at a PostgreSQL database "
            "(under pytest, request a neon_branch_* fixture so the plugin sets it)"
        )
    return url


def get_engine() -> Engine:
    """Return the engine for the current ``DATABASE_URL``, creating it on first use.

    ``pool_pre_ping`` is on because a test branch may be reset between tests,
    which kills pooled connections; pre-ping replaces them instead of failing
    the next checkout.
    """
    url = to_sqlalchemy_url(database_url())
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return engine


def new_session() -> Session:
    """Open a session on the current engine.

    ``expire_on_commit=False`` lets services return ORM objects that callers can
    still read after the session that loaded them is closed.
    """
    return Session(get_engine(), expire_on_commit=False)


def dispose_engines() -> None:
    """Close every cached engine's pooled connections and forget the engines.

    Useful at shutdown, or before dropping a database the app has been using,
    since idle pooled connections would otherwise keep it busy.
    """
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()
