"""Connection URLs: the same database under another name or role, and SQLAlchemy's form."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit


def replace_database(
    url: str, database: str, user: str | None = None, password: str | None = None
) -> str:
    """``url`` pointing at another database (and optionally as another role)."""
    parts = urlsplit(url)
    user = user if user is not None else unquote(parts.username or "")
    password = password if password is not None else unquote(parts.password or "")
    netloc = ""
    if user:
        netloc = quote(user, safe="")
        if password:
            netloc += ":" + quote(password, safe="")
        netloc += "@"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc += host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, "/" + quote(database, safe=""), parts.query, ""))


def sqlalchemy_url(connection_string: str) -> str:
    """The SQLAlchemy URL for a libpq connection string, using psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if connection_string.startswith(prefix):
            return "postgresql+psycopg://" + connection_string[len(prefix) :]
    return connection_string
