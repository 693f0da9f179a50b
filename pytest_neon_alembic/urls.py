"""Connection URLs: the same database under another name or role, SQLAlchemy's form,
and whether a host is this machine."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def on_this_machine(host: str | None) -> bool:
    """A loopback address, a Unix socket directory, or no host (libpq's default socket)."""
    return not host or host in LOOPBACK or host.startswith("/")


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


def sqlalchemy_url(connection_string: str, driver: str = "psycopg") -> str:
    """The SQLAlchemy URL for a libpq connection string, naming its driver.

    ``driver``: ``psycopg`` (psycopg 3, sync or async), ``psycopg2`` or ``asyncpg``.
    A URL that names no driver means psycopg2 on SQLAlchemy 2.0 and psycopg on
    2.1, so the plugin always names one. For asyncpg, libpq's ``sslmode`` becomes
    ``ssl`` and ``options`` (which asyncpg does not take) is left out.
    """
    for prefix in ("postgresql://", "postgres://"):
        if connection_string.startswith(prefix):
            url = f"postgresql+{driver}://" + connection_string[len(prefix) :]
            break
    else:
        return connection_string
    if driver != "asyncpg" or "?" not in url:
        return url
    base, _, query = url.partition("?")
    pairs = [pair.split("=", 1) for pair in query.split("&") if "=" in pair]
    kept = [("ssl" if k == "sslmode" else k, v) for k, v in pairs if k != "options"]
    return base + ("?" + "&".join(f"{k}={v}" for k, v in kept) if kept else "")
