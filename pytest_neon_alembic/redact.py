"""Masking of secrets (passwords in URLs, API keys) wherever the plugin prints text."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?=@)")
_QUERY_SECRET = re.compile(r"(?P<head>(?:^|&)(?:ssl)?password=)(?P<secret>[^&]*)", re.I)
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'[^']*'|[^\s&]+)", re.I)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` — in the user part and in ``?password=``.

    A keyword/value string (``host=... password=...``) is masked as text;
    anything unparsable is masked whole.
    """
    if "://" not in url:
        return mask_text(url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "***"
    netloc = parts.netloc
    if password is not None:
        host = parts.netloc.rpartition("@")[2]  # as written: IPv6 brackets and port kept
        netloc = f"{parts.username or ''}:***@{host}"
    query = _QUERY_SECRET.sub(lambda m: m.group("head") + "***", parts.query)
    if password is None and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask URL passwords, ``password=...`` pairs and the given secrets in free text."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + "***", text)
    text = _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + "***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
