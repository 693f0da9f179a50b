"""redact.mask_url and mask_text: no password or API key survives printing."""

from __future__ import annotations

import pytest

from pytest_neon_alembic.redact import mask_text, mask_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://user:s3cret@host:5432/db?sslmode=require",
            "postgresql://user:***@host:5432/db?sslmode=require",
        ),
        ("postgres://neondb_owner:npg_AbC123@ep-x.neon.tech/neondb", None),
        ("postgresql://u:p%40ss%3Aword@localhost/db", None),
        ("postgresql+psycopg://app:pw-with-dash@127.0.0.1:6543/app", None),
    ],
)
def test_mask_url_replaces_the_password(url: str, expected: str | None) -> None:
    masked = mask_url(url)
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert password not in masked
    assert ":***@" in masked
    if expected is not None:
        assert masked == expected
    # Everything but the password is kept.
    assert masked.split("@", 1)[1] == url.split("@", 1)[1]
    assert masked.split("://", 1)[0] == url.split("://", 1)[0]


def test_mask_url_keeps_the_user_name() -> None:
    assert mask_url("postgresql://alice:pw@h/db") == "postgresql://alice:***@h/db"


def test_mask_url_keeps_ipv6_hosts_valid() -> None:
    assert mask_url("postgresql://u:secretpw@[::1]:5432/db") == "postgresql://u:***@[::1]:5432/db"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://localhost:5432/db",
        "postgresql://user@localhost:5432/db",
        "postgresql:///db?host=/var/run/postgresql",
        "https://console.neon.tech/api/v2",
        "sqlite:///tmp/file.db",
    ],
)
def test_mask_url_leaves_urls_without_password_unchanged(url: str) -> None:
    assert mask_url(url) == url


def test_mask_text_masks_url_passwords_in_free_text() -> None:
    text = (
        "could not connect to postgresql://app:topsecret1@db:5432/app; "
        "fallback postgres://other:topsecret2@replica/app failed too"
    )
    masked = mask_text(text)
    assert "topsecret1" not in masked
    assert "topsecret2" not in masked
    assert "postgresql://app:***@db:5432/app;" in masked
    assert "postgres://other:***@replica/app failed too" in masked


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("host=db port=5432 password=hunter2 user=app", "hunter2", "user=app"),
        ("host=db PASSWORD = hunter2 dbname=x", "hunter2", "dbname=x"),
        ("dsn: host=db password='two words' sslmode=require", "two words", "sslmode=require"),
    ],
)
def test_mask_text_masks_password_pairs(text: str, secret: str, kept: str) -> None:
    masked = mask_text(text)
    assert secret not in masked
    assert "***" in masked
    assert kept in masked


def test_mask_text_masks_explicit_secrets() -> None:
    key = "napi_0123456789abcdef"
    masked = mask_text(f"Neon API said 401 for key {key} (key {key})", secrets=(key,))
    assert key not in masked
    assert masked == "Neon API said 401 for key *** (key ***)"


def test_mask_text_ignores_empty_secrets() -> None:
    text = "nothing secret here"
    assert mask_text(text, secrets=("",)) == text


@pytest.mark.parametrize(
    "text",
    [
        "connect to postgresql://app@db:5432/app failed",
        'FATAL: password authentication failed for user "app"',
        "https://console.neon.tech/api/v2/projects/p-1/branches",
        "no secrets at all",
    ],
)
def test_mask_text_leaves_text_without_secrets_unchanged(text: str) -> None:
    assert mask_text(text) == text
