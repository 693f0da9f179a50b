"""Masking of secrets (passwords in URLs, API keys) wherever the plugin prints text."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?=@)")
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'[^']*'|\S+)", re.I)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``; anything unparsable is masked whole."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as written: IPv6 brackets and port kept
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def mask_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask URL passwords, ``password=...`` pairs and the given secrets in free text."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + "***", text)
    text = _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + "***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
