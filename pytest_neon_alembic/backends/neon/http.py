"""The one way this plugin talks HTTP to the Neon API: URLs, headers, timeouts, retries, errors.

Everything the Neon backend sends goes through ``NeonHTTP.request`` (and the
``neon-api`` client, when used, is routed through it too), so there is exactly
one place that knows the base URL, the headers and the retry rules. pytest-neon
2.x had two HTTP stacks with the base URL hard-coded in one of them; this is
why it could not be pointed at an emulator.

Retry rules (from the API spec's GeneralError notes and Neon's own clients):

* 429 (rate limit) and 423 (project locked by running operations) are retried
  for every method: the server did nothing. ``Retry-After`` is honoured when
  present; otherwise exponential backoff from 1 s, doubling, ±25 % jitter, at
  most 20 s per wait.
* 503 is always safe to retry (the spec says so); other 5xx, read timeouts and
  connections dropped before the answer are retried only when repeating the
  request is harmless: GET and DELETE (a second delete answers 204). For a
  create or a restore, the caller gets an ``AmbiguousRequestError`` and looks
  up whether the first attempt landed before sending it again (``recovery.py``,
  ``restores.py``).
* A request that never left this machine (connection refused, connect
  timeout) is repeated for any method, for a shorter time (20 s): nothing
  answering at all is a wrong URL or a dead API, not a busy one.
* Everything is bounded by a total time budget (120 s by default); then one
  clear error says what kept failing. A call that got no answer at all marks
  the API unreachable: later calls try once, so a dead API costs one budget
  per run, not one per reset and delete.

The API key never appears in a message, a ``repr`` or a local variable of a
frame that can end up in a traceback: it lives in a ``Secret`` and is put on
the wire by an ``AuthBase`` whose ``repr`` is masked.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import requests
from requests.auth import AuthBase

from ...errors import NeonAPIError
from ...redact import mask_text, mask_url

try:  # the version for the User-Agent: which plugin version made a call shows in Neon's logs
    from importlib.metadata import version as _package_version

    _VERSION = _package_version("pytest-neon-alembic")
except Exception:  # pragma: no cover - not installed as a distribution
    _VERSION = "unknown"

USER_AGENT = f"pytest-neon-alembic/{_VERSION} (+https://pypi.org/project/pytest-neon-alembic)"

# Statuses after which the server did nothing, so any method may be repeated.
_ALWAYS_RETRY = {423, 429, 503}
# Gateway-style failures: the request may or may not have been applied.
_MAYBE_APPLIED = {500, 502, 504, 520, 522, 524}

_STATUS_HINTS = {
    423: "423 (project locked by other running operations)",
    429: "429 (rate limited; Neon allows about 700 requests per minute per account)",
    503: "503 (service unavailable)",
}


class Secret:
    """A string that never shows itself: ``repr``/``str`` are masked, ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickled into a file or sent to another process
        raise TypeError("a Secret cannot be pickled")


class _BearerAuth(AuthBase):
    """Adds ``Authorization: Bearer <key>`` to each prepared request, and shows no key."""

    def __init__(self, key: Secret) -> None:
        self._key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = "Bearer " + self._key.reveal()
        return request

    def __repr__(self) -> str:
        return "<BearerAuth ***>"


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how hard to insist. Tests shrink these; users keep the defaults."""

    budget: float = 120.0  # total seconds spent retrying one call
    unreachable_budget: float = 20.0  # shorter when nothing answers at all: a wrong URL
    first_backoff: float = 1.0
    max_backoff: float = 20.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0


class AmbiguousRequestError(NeonAPIError):
    """A call that is not safe to repeat got no clear answer: it may have been applied."""


class NeonHTTP:
    """A ``requests`` session bound to one API base URL and key, with the retry rules above."""

    def __init__(
        self,
        api_key: str | Secret,
        base_url: str,
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = api_key if isinstance(api_key, Secret) else Secret(api_key)
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._unreachable = False  # the last call found nothing answering
        self._session = requests.Session()
        self._session.auth = _BearerAuth(self._key)
        self._session.headers.update(
            {
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            }
        )
        self.requests_sent = 0  # for the API-call figures

    def __repr__(self) -> str:
        return f"NeonHTTP({mask_url(self.base_url)!r}, api_key=***)"

    def url(self, path: str) -> str:
        """The full URL of an API path (``projects/p/branches`` or ``/projects/...``)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def mask(self, text: str) -> str:
        """``text`` without the API key or any URL password."""
        return mask_text(text, secrets=(self._key.reveal(),))

    def close(self) -> None:
        self._session.close()

    # -- the call ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> dict[str, Any]:
        """Send one API call, retrying as the module docstring says; the decoded JSON body.

        204 and empty bodies give ``{}``. ``idempotent`` (default: GET and DELETE)
        says whether a request that may have been applied can simply be sent again;
        otherwise such a request raises ``AmbiguousRequestError`` for the caller to
        resolve.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in ("GET", "DELETE")
        label = f"{method} /{path.lstrip('/')}"
        started = self._clock()
        deadline = started + self.policy.budget
        backoff = self.policy.first_backoff
        attempts = 0
        answered = False  # any HTTP answer at all during this call
        while True:
            attempts += 1
            try:
                response = self._send(method, path, params, json)
            except requests.RequestException as error:
                never_sent = _surely_not_sent(error)
                if not never_sent and not idempotent:
                    raise AmbiguousRequestError(
                        f"Neon API: {label} got no answer ({self._describe_error(error)}); it may "
                        "or may not have been applied."
                    ) from None
                if self._unreachable:
                    limit = started  # found unreachable before: one attempt
                elif never_sent:
                    limit = min(deadline, started + self.policy.unreachable_budget)
                else:
                    limit = deadline  # reached, but no answer in time: retried as a 5xx
                wait = self._next_wait(backoff, None, limit)
                if wait is None:
                    self._unreachable = not answered
                    raise NeonAPIError(
                        f"Could not reach the Neon API at {mask_url(self.base_url)} ({label}, "
                        f"{attempts} attempt{'s' if attempts > 1 else ''} over "
                        f"{self._clock() - started:.0f} s): {self._describe_error(error)}. Check "
                        "the network, or --neon-api-url / NEON_API_URL."
                    ) from None
                self._sleep(wait)
                backoff = min(backoff * 2, self.policy.max_backoff)
                continue

            answered = True
            self._unreachable = False
            status = response.status_code
            if status < 300:
                return self._decode(response, label)
            retryable = status in _ALWAYS_RETRY or (status in _MAYBE_APPLIED and idempotent)
            if retryable:
                wait = self._next_wait(backoff, _retry_after(response), deadline)
                if wait is not None:
                    self._sleep(wait)
                    backoff = min(backoff * 2, self.policy.max_backoff)
                    continue
                hint = _STATUS_HINTS.get(status, str(status))
                raise NeonAPIError(
                    f"Neon API kept answering {hint} to {label} for {self.policy.budget:.0f} s "
                    f"({attempts} attempts): {self._api_message(response)}. Run fewer xdist "
                    "workers or fewer concurrent test runs on this account, or retry later.",
                    status=status,
                    api_message=self._api_message(response),
                )
            if status in _MAYBE_APPLIED and not idempotent:
                raise AmbiguousRequestError(
                    f"Neon API: {label} failed with {status} "
                    f"({self._api_message(response)}); it may or may not have been applied.",
                    status=status,
                    api_message=self._api_message(response),
                )
            raise self._error(response, label)

    def _send(
        self, method: str, path: str, params: dict[str, Any] | None, json: Any
    ) -> requests.Response:
        self.requests_sent += 1
        return self._session.request(
            method,
            self.url(path),
            params=params,
            json=json,
            timeout=(self.policy.connect_timeout, self.policy.read_timeout),
        )

    def _next_wait(
        self, backoff: float, retry_after: float | None, deadline: float
    ) -> float | None:
        """How long to wait before the next attempt; None when the budget is spent."""
        remaining = deadline - self._clock()
        if remaining <= 0:
            return None
        if retry_after is not None:
            wait = max(retry_after, 0.0)
        else:
            wait = backoff * random.uniform(0.75, 1.25)
            wait = min(wait, self.policy.max_backoff)
        return min(wait, remaining)

    def _decode(self, response: requests.Response, label: str) -> dict[str, Any]:
        if response.status_code == 204 or not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise NeonAPIError(
                f"Neon API: {label} answered {response.status_code} with a body that is not "
                f"JSON: {self.mask(response.text[:200])!r}. Is --neon-api-url "
                f"({mask_url(self.base_url)}) the Neon API v2 base URL?",
                status=response.status_code,
            ) from None
        return body if isinstance(body, dict) else {"items": body}

    def _api_message(self, response: requests.Response) -> str:
        """Neon's own error text (``message`` of the GeneralError body), masked."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("message"):
            text = str(body["message"])
            if body.get("code"):
                text = f"{text} (code {body['code']})"
        else:
            text = response.text.strip()[:300] or response.reason or ""
        request_id = response.headers.get("X-Neon-Ret-Request-Id") or (
            body.get("request_id") if isinstance(body, dict) else None
        )
        if request_id:
            text = f"{text} [request id {request_id}]"
        return self.mask(text)

    def _error(self, response: requests.Response, label: str) -> NeonAPIError:
        status = response.status_code
        message = self._api_message(response)
        if status in (401, 403):
            word = "401 Unauthorized" if status == 401 else "403 Forbidden"
            return NeonAPIError(
                f"Neon rejected the API key ({word}) on {label}: {message}. Check NEON_API_KEY / "
                "--neon-api-key (a key of the account or organization that owns the project, "
                "not revoked).",
                status=status,
                api_message=message,
            )
        return NeonAPIError(
            f"Neon API refused {label}: {status} {message}", status=status, api_message=message
        )

    def _describe_error(self, error: requests.RequestException) -> str:
        return self.mask(f"{type(error).__name__}: {error}")


def _surely_not_sent(error: requests.RequestException) -> bool:
    """Whether the request certainly never reached the server (so repeating it is harmless).

    A connect timeout or a refused connection happen before any byte is sent; a
    read timeout or a dropped connection may come after the server acted.
    """
    if isinstance(error, requests.ConnectTimeout):
        return True
    if isinstance(error, requests.ConnectionError) and not isinstance(error, requests.ReadTimeout):
        text = str(error)
        return "NewConnectionError" in text or "Failed to establish a new connection" in text
    return False


def _retry_after(response: requests.Response) -> float | None:
    """``Retry-After`` in seconds (either form the HTTP spec allows), if the answer has one."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def neon_api_client(http: NeonHTTP) -> Any:
    """A ``neon_api.NeonAPI`` whose every call goes through ``http`` (headers, retries, errors).

    neon-api 0.3.0 has no timeouts or retries, loses the status code of errors
    and fails on 204, so it is used only for calls whose typed answer is worth
    having and where a parsing surprise is harmless.
    """
    from neon_api import NeonAPI

    class _RoutedNeonAPI(NeonAPI):
        def __init__(self) -> None:
            # The real key stays in ``http``; the client never holds it.
            super().__init__("***", base_url=http.base_url + "/")
            self._http = http

        def _request(self, method: str, path: str, **kwargs: Any) -> Any:
            return self._http.request(
                method, path, params=kwargs.get("params"), json=kwargs.get("json")
            )

        def __repr__(self) -> str:
            return f"<NeonAPI via {self._http!r}>"

    return _RoutedNeonAPI()
