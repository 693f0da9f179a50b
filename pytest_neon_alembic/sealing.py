"""Passwords in the run's files, sealed with a key that only the run's processes hold.

The processes of a run (the controller and its xdist workers) share connection
strings through the run directory: the embedded server's admin URL, each
branch's URL (a Neon role password -- on an unprotected parent, the parent's
own --, the local admin or read-only role's). In those files the password of
every URL is sealed with a random key that the owning process makes at start
and hands to its workers in memory (through xdist's pipe), never on disk. A run
that ends removes its files; a run that is killed leaves ciphertext that nobody
can open -- the key died with its processes -- until the next start removes it.

Standard library only: a SHAKE-256 keystream over (key, fresh 16-byte nonce)
XORed with the password, then an HMAC-SHA256 tag over nonce and ciphertext
(encrypt-then-MAC, with separate keys derived from the run key). What it
protects is narrow on purpose: files left by a dead run, readable by the same
user. A live run's processes hold the key and the plain passwords anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Any

SEALED_PREFIX = "pna-sealed."
_NONCE = 16
_TAG = 16
# The password of a URL, anywhere in a string: scheme://user:PASSWORD@host...
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]+)(?=@)")


class RunKey:
    """The run's key; its ``repr`` shows nothing, and it is never written to a file."""

    __slots__ = ("_encrypt", "_sign", "_value")

    def __init__(self, value: bytes) -> None:
        if len(value) != 32:
            raise ValueError("a run key is 32 bytes")
        self._value = value
        self._encrypt = hashlib.sha256(b"pytest-neon-alembic encrypt" + value).digest()
        self._sign = hashlib.sha256(b"pytest-neon-alembic sign" + value).digest()

    @classmethod
    def new(cls) -> RunKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_hex(cls, text: str | None) -> RunKey | None:
        return cls(bytes.fromhex(text)) if text else None

    def hex(self) -> str:
        """For handing to the run's workers in memory (xdist's workerinput)."""
        return self._value.hex()

    def __repr__(self) -> str:
        return "RunKey(***)"

    def seal(self, secret: str) -> str:
        nonce = secrets.token_bytes(_NONCE)
        plain = secret.encode()
        cipher = bytes(a ^ b for a, b in zip(plain, self._stream(nonce, len(plain)), strict=True))
        tag = hmac.new(self._sign, nonce + cipher, hashlib.sha256).digest()[:_TAG]
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + tag + cipher).decode().rstrip("=")

    def unseal(self, token: str) -> str:
        """The secret ``seal`` made ``token`` from; ValueError if it is not this key's."""
        if not token.startswith(SEALED_PREFIX):
            raise ValueError("not a sealed value")
        body = token[len(SEALED_PREFIX) :]
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        nonce, tag, cipher = raw[:_NONCE], raw[_NONCE : _NONCE + _TAG], raw[_NONCE + _TAG :]
        expected = hmac.new(self._sign, nonce + cipher, hashlib.sha256).digest()[:_TAG]
        if len(nonce) != _NONCE or not hmac.compare_digest(tag, expected):
            raise ValueError("sealed with another key, or damaged")
        plain = bytes(a ^ b for a, b in zip(cipher, self._stream(nonce, len(cipher)), strict=True))
        return plain.decode()

    def _stream(self, nonce: bytes, length: int) -> bytes:
        return hashlib.shake_256(self._encrypt + nonce).digest(length)


def seal_passwords(value: Any, key: RunKey | None) -> Any:
    """``value`` (decoded JSON) with the password of every URL in it sealed; as is without
    a key (a run that keeps its branches for inspection writes them in clear)."""
    if key is None:
        return value
    return _map_passwords(value, lambda password: key.seal(password))


def unseal_passwords(value: Any, key: RunKey | None) -> Any:
    """The reverse of ``seal_passwords``; sealed passwords stay sealed without the key."""
    if key is None:
        return value

    def unseal(password: str) -> str:
        if not password.startswith(SEALED_PREFIX):
            return password
        try:
            return key.unseal(password)
        except ValueError:
            return password

    return _map_passwords(value, unseal)


def is_sealed(url: str) -> bool:
    """Whether ``url``'s password is sealed (and so cannot be used without the run's key)."""
    match = _URL_PASSWORD.search(url)
    return bool(match and match.group("password").startswith(SEALED_PREFIX))


def _map_passwords(value: Any, change: Any) -> Any:
    """``value`` with ``change`` applied to every URL password in its strings (an error
    message quoting a URL included)."""
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: m.group("head") + change(m.group("password")), value)
    if isinstance(value, dict):
        return {name: _map_passwords(item, change) for name, item in value.items()}
    if isinstance(value, list):
        return [_map_passwords(item, change) for item in value]
    return value
