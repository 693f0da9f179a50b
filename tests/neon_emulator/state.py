"""The emulated Neon project: branches, endpoints, operations and Neon's rules about them.

Everything here follows ``docs/neon-api.md`` (the fact sheet); comments marked
"Open question" record a choice where Neon's behaviour is not documented. The
HTTP layer (``server.py``) only routes requests to the ``api_*`` methods,
which return ``(status, body)`` or raise :class:`ApiError`.

Concurrency: one re-entrant lock guards all state, *including* the work done
in PostgreSQL (clones take ~10 ms on tmpfs). Holding it across that work is
what makes the emulator simple to reason about: a proxy resolving "which
database backs this branch right now" can never observe a half-done restore.
Proxies never hold the lock while piping bytes.

Time: operations of one call run one after another, each taking
``operation_delay`` seconds (give or take ``operation_jitter``, a fraction of
it, drawn for each operation); their effects (branch ``ready``, endpoint
``active``, the data swap of a restore, a new password) happen when they
finish. :meth:`Project.advance` applies everything that is due; it runs at the
start of every request and in a background thread, so the state is exact at
each request whatever the thread's timing.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import random
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from .postgres import Cluster, new_password
from .proxy import EndpointProxy, ProxyRefusal, Route

__all__ = ["DATABASE_NAME", "ROLE_NAME", "ApiError", "Project"]

logger = logging.getLogger(__name__)

DATABASE_NAME = "neondb"
ROLE_NAME = "neondb_owner"
REGION_ID = "aws-us-east-2"
HOST = "127.0.0.1"
DEFAULT_BRANCH_NAME = "main"
MAX_EXPIRY_SECONDS = 30 * 24 * 3600
MAX_NAME_LENGTH = 256
MAX_ANNOTATION_PROPERTIES = 50  # the spec's AnnotationValueData: maxProperties 50
# Open question (not in the fact sheet): the ``object.type`` Neon puts in a branch's
# annotation is not documented; clients read only ``value``.
ANNOTATION_OBJECT_TYPE = "branch"
# Open question 10 (creation_source for API-created objects): "console" is what
# the only recorded real responses show.
CREATION_SOURCE = "console"
EXPIRY_SWEEP_INTERVAL = 0.5
COMPUTE_START_TIMEOUT = 30.0

# 423 body, as Neon words it, plus the reason in the emulator's words.
LOCKED_MESSAGE = (
    "project already has running conflicting operations, scheduling of new ones is "
    "prohibited: another operation is in progress"
)

_ADJECTIVES = (
    "autumn", "billowing", "bitter", "black", "blue", "bold", "broad", "cold", "cool",
    "crimson", "damp", "dawn", "delicate", "divine", "dry", "empty", "falling", "floral",
    "fragrant", "frosty", "green", "hidden", "holy", "icy", "late", "lingering", "little",
    "lively", "misty", "morning", "muddy", "noisy", "odd", "old", "orange", "patient",
    "plain", "polished", "proud", "purple", "quiet", "rapid", "restless", "rough", "round",
    "shy", "silent", "small", "snowy", "soft", "solitary", "sparkling", "spring", "square",
    "steep", "still", "summer", "super", "sweet", "tight", "tiny", "twilight", "wandering",
    "weathered", "white", "wild", "winter", "wispy", "withered", "young",
)  # fmt: skip
_NOUNS = (
    "art", "band", "bar", "base", "bird", "block", "boat", "bonus", "bread", "breeze",
    "brook", "bush", "butterfly", "cake", "cell", "cherry", "cloud", "credit", "darkness",
    "dawn", "dew", "disk", "dream", "dust", "feather", "field", "fire", "firefly", "flower",
    "fog", "forest", "frog", "frost", "glade", "glitter", "grass", "hall", "hat", "haze",
    "heart", "hill", "king", "lab", "lake", "leaf", "limit", "math", "meadow", "mode",
    "moon", "morning", "mountain", "mouse", "mud", "night", "paper", "pine", "poetry",
    "pond", "queen", "rain", "recipe", "resonance", "rice", "river", "salad", "scene",
    "sea", "shadow", "shape", "silence", "sky", "smoke", "snow", "snowflake", "sound",
    "star", "sun", "sunset", "surf", "term", "thunder", "tooth", "tree", "truth", "union",
    "unit", "violet", "voice", "water", "waterfall", "wave", "wildflower", "wind", "wood",
)  # fmt: skip
_ID_ALPHABET = string.ascii_lowercase + string.digits
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


class ApiError(Exception):
    """An error answer: HTTP status and Neon's GeneralError body (``code`` often empty)."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def rfc3339(timestamp: float) -> str:
    """Neon's timestamp format: UTC, second precision, ``Z``."""
    return datetime.fromtimestamp(int(timestamp), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _generated_id(prefix: str) -> str:
    """``br-square-dawn-a5kwozbg`` / ``ep-misty-truth-a5favp6j``: Neon's ID shape."""
    suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
    return f"{prefix}-{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{suffix}"


def parse_expires_at(value: Any, now: float) -> float:
    """Validate ``expires_at`` as Neon does; returns the epoch second it names.

    RFC 3339 with a mandatory time zone; fractional seconds accepted but cut to
    the second; in the future and at most 30 days ahead.
    """
    if not isinstance(value, str):
        raise ApiError(400, "expires_at must be an RFC 3339 timestamp string")
    match = _RFC3339.match(value)
    if match is None:
        raise ApiError(
            400,
            f"expires_at {value!r} is not an RFC 3339 timestamp with a time zone "
            "(e.g. 2025-06-09T18:02:16Z)",
        )
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    zone = match.group(8)
    if zone in ("Z", "z"):
        tzinfo = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        tzinfo = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=tzinfo).timestamp()
    except ValueError as error:
        raise ApiError(400, f"expires_at {value!r} is not a valid date: {error}") from None
    if moment <= now:
        raise ApiError(400, "expires_at must be in the future")
    if moment - now > MAX_EXPIRY_SECONDS:
        raise ApiError(400, "expires_at must not be more than 30 days in the future")
    return float(moment)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, f"request body has an error: {what} must be a JSON object")
    return value


def _only(obj: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    """Reject unknown properties, as Neon's schema validation does (catches client typos)."""
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ApiError(
            400,
            f'request body has an error: doesn\'t match schema: property "{unknown[0]}" '
            f"is unsupported in {where}",
        )


def _check_name(value: Any, what: str = "name") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{what} must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise ApiError(400, f"{what} must be at most {MAX_NAME_LENGTH} characters")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ApiError(400, f"{what} must be a boolean")
    return value


def _query_int(query: dict[str, str], key: str, low: int, high: int) -> int | None:
    if key not in query:
        return None
    try:
        value = int(query[key])
    except ValueError:
        raise ApiError(400, f"{key} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{key} must be between {low} and {high}")
    return value


# --------------------------------------------------------------------------------------
# The objects
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class Operation:
    """One Neon operation; ``on_finish`` applies its effect when it finishes."""

    id: str
    seq: int
    action: str
    branch_id: str | None
    endpoint_id: str | None
    created_at: float
    start_at: float
    finish_at: float
    status: str
    updated_at: float
    on_finish: Callable[[], None] | None = None
    error: str | None = None

    def to_json(self, project_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "project_id": project_id,
            "action": self.action,
            "status": self.status,
            "failures_count": 1 if self.status == "failed" else 0,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "total_duration_ms": (
                int((self.finish_at - self.start_at) * 1000) if self.status == "finished" else 0
            ),
        }
        if self.branch_id is not None:
            body["branch_id"] = self.branch_id
        if self.endpoint_id is not None:
            body["endpoint_id"] = self.endpoint_id
        if self.error is not None:
            body["error"] = self.error
        return body


@dataclass(eq=False)
class Branch:
    """A branch and the real database that currently holds its data.

    ``database`` is None only for a restore backup whose data arrives when the
    restore finishes. ``snapshot`` is a private copy of the branch taken when
    it was last cloned from, valid while ``last_write < snapshot_mark``; it
    lets children and restores copy a branch without cutting the sessions of
    its read-only endpoints (PostgreSQL cannot copy a database that has
    sessions). ``last_write`` is bumped by the read_write proxies before any SQL
    is forwarded, so the check errs on the side of a fresh snapshot.
    """

    id: str
    name: str
    parent_id: str | None
    database: str | None
    created_at: float
    default: bool = False
    protected: bool = False
    current_state: str = "init"
    pending_state: str | None = "ready"
    state_changed_at: float = 0.0
    updated_at: float = 0.0
    parent_timestamp: float | None = None
    parent_lsn: str | None = None
    expires_at: float | None = None
    ttl_interval_seconds: int | None = None
    last_reset_at: float | None = None
    snapshot: str | None = None
    snapshot_mark: int = 0
    last_write: int = 0
    database_id: int = 0
    annotation: dict[str, str] | None = None  # annotation_value given at creation

    def annotation_json(self) -> dict[str, Any]:
        """The spec's AnnotationData: what the branch was annotated with (``{}``: nothing)."""
        body: dict[str, Any] = {
            "object": {"type": ANNOTATION_OBJECT_TYPE, "id": self.id},
            "value": dict(self.annotation or {}),
        }
        if self.annotation is not None:
            body["created_at"] = body["updated_at"] = rfc3339(self.created_at)
        return body

    def to_json(self, project_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "project_id": project_id,
            "name": self.name,
            "current_state": self.current_state,
            "state_changed_at": rfc3339(self.state_changed_at),
            "creation_source": CREATION_SOURCE,
            "primary": self.default,  # deprecated twin of `default`; 2024 responses had only it
            "default": self.default,
            "protected": self.protected,
            "cpu_used_sec": 0,
            "compute_time_seconds": 0,
            "active_time_seconds": 0,
            "written_data_bytes": 0,
            "data_transfer_bytes": 0,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "init_source": "parent-data",
            "created_by": {"name": "Neon emulator", "image": ""},
        }
        if self.parent_id is not None:
            body["parent_id"] = self.parent_id
        if self.parent_lsn is not None:
            body["parent_lsn"] = self.parent_lsn
        if self.parent_timestamp is not None:
            body["parent_timestamp"] = rfc3339(self.parent_timestamp)
        if self.pending_state is not None:
            body["pending_state"] = self.pending_state
        if self.expires_at is not None:
            body["expires_at"] = rfc3339(self.expires_at)
            body["ttl_interval_seconds"] = self.ttl_interval_seconds
        if self.last_reset_at is not None:
            body["last_reset_at"] = rfc3339(self.last_reset_at)
        return body


@dataclass(eq=False)
class Endpoint:
    """A compute: in the emulator, a proxy port in front of its branch's database."""

    id: str
    branch: Branch
    type: str
    created_at: float
    settings: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    current_state: str = "init"
    pending_state: str | None = "active"
    updated_at: float = 0.0
    started_at: float | None = None
    proxy: EndpointProxy | None = None
    deleted: bool = False

    @property
    def port(self) -> int:
        assert self.proxy is not None
        return self.proxy.port

    def to_json(self, project_id: str) -> dict[str, Any]:
        options = self.options
        body: dict[str, Any] = {
            "host": HOST,
            "id": self.id,
            "project_id": project_id,
            "branch_id": self.branch.id,
            "autoscaling_limit_min_cu": options.get("autoscaling_limit_min_cu", 0.25),
            "autoscaling_limit_max_cu": options.get("autoscaling_limit_max_cu", 0.25),
            "region_id": REGION_ID,
            "type": self.type,
            "current_state": self.current_state,
            "settings": self.settings,
            "pooler_enabled": options.get("pooler_enabled", False),
            "pooler_mode": "transaction",
            "disabled": options.get("disabled", False),
            "passwordless_access": options.get("passwordless_access", True),
            "creation_source": CREATION_SOURCE,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "proxy_host": HOST,
            "suspend_timeout_seconds": options.get("suspend_timeout_seconds", 0),
            "provisioner": options.get("provisioner", "k8s-neonvm"),
        }
        if self.pending_state is not None:
            body["pending_state"] = self.pending_state
        if self.started_at is not None:
            body["started_at"] = rfc3339(self.started_at)
            body["last_active"] = rfc3339(self.started_at)
        if "name" in options:
            body["name"] = options["name"]
        return body


_BRANCH_CREATE_FIELDS = frozenset({"branch", "endpoints", "annotation_value"})
_BRANCH_FIELDS = frozenset(
    {
        "parent_id",
        "name",
        "parent_lsn",
        "parent_timestamp",
        "protected",
        "archived",
        "init_source",
        "expires_at",
    }
)
_BRANCH_UPDATE_FIELDS = frozenset({"name", "expires_at", "protected"})
_BRANCH_ENDPOINT_FIELDS = frozenset(
    {
        "type",
        "autoscaling_limit_min_cu",
        "autoscaling_limit_max_cu",
        "provisioner",
        "settings",
        "suspend_timeout_seconds",
    }
)
_ENDPOINT_FIELDS = _BRANCH_ENDPOINT_FIELDS | frozenset(
    {
        "branch_id",
        "region_id",
        "pooler_enabled",
        "pooler_mode",
        "disabled",
        "passwordless_access",
        "name",
    }
)
_RESTORE_FIELDS = frozenset(
    {"source_branch_id", "source_lsn", "source_timestamp", "preserve_under_name"}
)
_SORT_KEYS = ("name", "created_at", "updated_at")


def _endpoint_options(spec: dict[str, Any], allowed: frozenset[str], where: str) -> dict[str, Any]:
    """Validate an endpoint spec (branch-create item or endpoint-create body)."""
    _only(spec, allowed, where)
    kind = spec.get("type")
    if kind not in ("read_write", "read_only"):
        raise ApiError(400, f"{where}: type must be read_write or read_only, got {kind!r}")
    options: dict[str, Any] = {"type": kind}
    if "settings" in spec:
        settings = spec["settings"]
        if not isinstance(settings, dict) or not isinstance(settings.get("pg_settings"), dict):
            raise ApiError(400, "settings must not be nil")  # Neon's words, per its test client
        options["settings"] = settings
    for key in ("autoscaling_limit_min_cu", "autoscaling_limit_max_cu"):
        if key in spec:
            value = spec[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0.25:
                raise ApiError(400, f"{key} must be a number of at least 0.25")
            options[key] = float(value)
    low = options.get("autoscaling_limit_min_cu", 0.25)
    if options.get("autoscaling_limit_max_cu", max(low, 0.25)) < low:
        raise ApiError(400, "autoscaling_limit_max_cu must not be below autoscaling_limit_min_cu")
    if "provisioner" in spec:
        if spec["provisioner"] not in ("k8s-pod", "k8s-neonvm"):
            raise ApiError(400, "provisioner must be k8s-pod or k8s-neonvm")
        options["provisioner"] = spec["provisioner"]
    if "suspend_timeout_seconds" in spec:
        value = spec["suspend_timeout_seconds"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not (value in (-1, 0) or 60 <= value <= 604800)
        ):
            raise ApiError(400, "suspend_timeout_seconds must be -1, 0 or between 60 and 604800")
        options["suspend_timeout_seconds"] = value
    for key in ("pooler_enabled", "disabled", "passwordless_access"):
        if key in spec:
            options[key] = _bool(spec[key], key)
    if "pooler_mode" in spec and spec["pooler_mode"] != "transaction":
        raise ApiError(400, "pooler_mode must be transaction")
    if "region_id" in spec and spec["region_id"] != REGION_ID:
        raise ApiError(400, f"region_id must be the project's region {REGION_ID}")
    if "name" in spec:
        name = spec["name"]
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise ApiError(400, "name must be 1 to 64 characters")
        options["name"] = name
    return options


def _encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise ApiError(400, "invalid cursor") from None
    if not isinstance(key, list) or len(key) != 2:
        raise ApiError(400, "invalid cursor")
    return key


# --------------------------------------------------------------------------------------
# The project
# --------------------------------------------------------------------------------------


class Project:
    """One emulated Neon project, its state lock, and the API's behaviour."""

    def __init__(
        self,
        *,
        project_id: str,
        operation_delay: float,
        cluster: Cluster,
        operation_jitter: float = 0.0,
    ) -> None:
        self.id = project_id
        self.name = "emulated-project"
        self.operation_delay = operation_delay
        self.operation_jitter = operation_jitter
        self.cluster = cluster
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.created_at = time.time()
        self.branches: dict[str, Branch] = {}  # live branches only
        self.endpoints: dict[str, Endpoint] = {}  # live endpoints only
        self.operations: list[Operation] = []  # all, oldest first
        self._pending: list[Operation] = []  # not finished yet, oldest first
        self._proxies: dict[str, EndpointProxy] = {}  # every open proxy, also of deleting endpoints
        self._op_seq = itertools.count(1)
        self._writes = itertools.count(1)
        self._database_ids = itertools.count(1)
        self._lsn = 0x1F6B2C8
        self._next_sweep = 0.0
        self._closed = False
        self.password = ""  # the stored (revealed) password of neondb_owner
        self.default_branch_id = ""

    # -- life cycle ---------------------------------------------------------------------

    def bootstrap(self) -> None:
        """Roles, the default branch ``main`` (root, ready) and its active read_write endpoint."""
        with self.lock:
            self.password = new_password()
            self.cluster.setup(self.password)
            now = time.time()
            database = self.cluster.new_name()
            self.cluster.create_empty(database)
            branch = Branch(
                id=self._new_branch_id(),
                name=DEFAULT_BRANCH_NAME,
                parent_id=None,
                database=database,
                created_at=now,
                default=True,
                current_state="ready",
                pending_state=None,
                state_changed_at=now,
                updated_at=now,
                database_id=next(self._database_ids),
            )
            self.branches[branch.id] = branch
            self.default_branch_id = branch.id
            endpoint = self._new_endpoint(branch, {"type": "read_write"}, now)
            endpoint.current_state = "active"
            endpoint.pending_state = None
            endpoint.started_at = now

    def close(self) -> None:
        """Close every proxy and stop the background thread; the databases are the caller's."""
        with self.lock:
            self._closed = True
            proxies = list(self._proxies.values())
            self._proxies.clear()
            self.changed.notify_all()
        for proxy in proxies:
            proxy.close()

    def run_background(self) -> None:
        """Body of the background thread: finish operations on time, sweep expired branches."""
        with self.lock:
            while not self._closed:
                self.advance()
                deadlines = [self._next_sweep]
                for op in self._pending:
                    deadlines.append(op.start_at if op.status == "scheduling" else op.finish_at)
                timeout = min(deadlines) - time.time()
                self.changed.wait(timeout=min(max(timeout, 0.001), 1.0))

    # -- time -----------------------------------------------------------------------------

    def advance(self) -> None:
        """Apply every operation transition and expiry that is due (call with the lock)."""
        now = time.time()
        changed = False
        remaining: list[Operation] = []
        for op in self._pending:
            if now >= op.finish_at:
                self._finish(op)
                changed = True
            else:
                if op.status == "scheduling" and now >= op.start_at:
                    op.status = "running"
                    op.updated_at = op.start_at
                    changed = True
                remaining.append(op)
        # on_finish callbacks never schedule operations, so nothing new was appended.
        self._pending = remaining
        if now >= self._next_sweep:
            self._next_sweep = now + EXPIRY_SWEEP_INTERVAL
            changed |= self._sweep_expired(now)
        if changed:
            self.changed.notify_all()

    def _finish(self, op: Operation) -> None:
        op.status = "finished"
        op.updated_at = op.finish_at
        if op.on_finish is None:
            return
        try:
            op.on_finish()
        except Exception as error:  # an emulator bug or a PostgreSQL failure
            logger.exception("Neon emulator: effect of operation %s (%s) failed", op.id, op.action)
            op.status = "failed"
            op.error = f"{type(error).__name__}: {error}"

    def _schedule(
        self, steps: list[tuple[str, str | None, str | None, Callable[[], None] | None]]
    ) -> list[Operation]:
        """Operations ``(action, branch_id, endpoint_id, on_finish)`` run one after another."""
        start = time.time()
        ops = []
        begins = start
        for index, (action, branch_id, endpoint_id, on_finish) in enumerate(steps):
            spread = self.operation_jitter
            ends = begins + self.operation_delay * random.uniform(1 - spread, 1 + spread)
            ops.append(
                Operation(
                    id=str(uuid.uuid4()),
                    seq=next(self._op_seq),
                    action=action,
                    branch_id=branch_id,
                    endpoint_id=endpoint_id,
                    created_at=start,
                    start_at=begins,
                    finish_at=ends,
                    status="running" if index == 0 else "scheduling",
                    updated_at=start,
                    on_finish=on_finish,
                )
            )
            begins = ends
        self.operations.extend(ops)
        self._pending.extend(ops)
        self.advance()  # with operation_delay=0 everything is done at once
        self.changed.notify_all()
        return ops

    def _busy(self, *branches: Branch) -> None:
        """423 while any operation on one of these branches is still running (Neon's lock).

        Open question 4 (which operations conflict): the emulator locks per branch
        -- the branch acted on, the parent a child is copied from, the source of a
        restore -- not project-wide; ``faults.lock()`` simulates project-wide 423s.
        """
        ids = {branch.id for branch in branches}
        for op in self._pending:
            if op.branch_id in ids:
                raise ApiError(
                    423, f"{LOCKED_MESSAGE} on branch {op.branch_id} (operation {op.action})"
                )

    # -- helpers ----------------------------------------------------------------------------

    def _new_branch_id(self) -> str:
        while True:
            candidate = _generated_id("br")
            if candidate not in self.branches:
                return candidate

    def _next_lsn(self) -> str:
        self._lsn += 0x2A18
        return f"0/{self._lsn:X}"

    def _branch(self, branch_id: str) -> Branch:
        branch = self.branches.get(branch_id)
        if branch is None:
            raise ApiError(404, "branch not found")
        return branch

    def _children(self, branch: Branch) -> list[Branch]:
        return [child for child in self.branches.values() if child.parent_id == branch.id]

    def _branch_endpoints(self, branch: Branch) -> list[Endpoint]:
        return [ep for ep in self.endpoints.values() if ep.branch is branch]

    def _name_taken(self, name: str, other_than: Branch | None = None) -> bool:
        return any(b.name == name and b is not other_than for b in self.branches.values())

    def _role_json(self, branch: Branch, password: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "branch_id": branch.id,
            "name": ROLE_NAME,
            "protected": False,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.created_at),
        }
        if password is not None:
            body["password"] = password
        return body

    def _database_json(self, branch: Branch) -> dict[str, Any]:
        return {
            "id": branch.database_id,
            "branch_id": branch.id,
            "name": DATABASE_NAME,
            "owner_name": ROLE_NAME,
            "created_at": rfc3339(branch.created_at),
            "updated_at": rfc3339(branch.created_at),
        }

    def _uri(self, endpoint: Endpoint) -> str:
        # Open question (URI form): Neon adds ?sslmode=require&channel_binding=require;
        # the proxies speak no TLS, so the emulator's URIs carry no query string.
        return (
            f"postgresql://{ROLE_NAME}:{quote(self.password, safe='')}@{HOST}:{endpoint.port}"
            f"/{DATABASE_NAME}"
        )

    def _copy_data(self, source: Branch, target_database: str) -> None:
        """Make ``target_database`` a copy of ``source``'s current data.

        Copies go through the source's snapshot, re-taken only when the source
        may have been written since; taking it is the only moment the source's
        sessions are cut (an emulator limitation: PostgreSQL cannot copy a
        database that has sessions, Neon can).
        """
        assert source.database is not None
        if source.snapshot is None or source.last_write >= source.snapshot_mark:
            mark = next(self._writes)
            snapshot = self.cluster.new_name("snap")
            self.cluster.clone(source.database, snapshot)
            if source.snapshot is not None:
                self.cluster.drop(source.snapshot)
            source.snapshot, source.snapshot_mark = snapshot, mark
        self.cluster.clone(source.snapshot, target_database)

    def _new_endpoint(self, branch: Branch, options: dict[str, Any], now: float) -> Endpoint:
        settings = options.get("settings") or {"pg_settings": {}}
        endpoint = Endpoint(
            id=_generated_id("ep"),
            branch=branch,
            type=options["type"],
            created_at=now,
            updated_at=now,
            settings=settings,
            options={k: v for k, v in options.items() if k not in ("type", "settings")},
        )
        proxy = EndpointProxy(
            endpoint.id,
            (self.cluster.host, self.cluster.port),
            lambda database, user: self._route(endpoint, database, user),
        )
        endpoint.proxy = proxy.start()
        self._proxies[endpoint.id] = proxy
        self.endpoints[endpoint.id] = endpoint
        return endpoint

    def _endpoint_started(self, endpoint: Endpoint) -> None:
        now = time.time()
        endpoint.current_state = "active"
        endpoint.pending_state = None
        endpoint.started_at = now
        endpoint.updated_at = now

    def _branch_ready(self, branch: Branch) -> None:
        now = time.time()
        branch.current_state = "ready"
        branch.pending_state = None
        branch.state_changed_at = now
        branch.updated_at = now

    def _close_proxy(self, endpoint: Endpoint) -> None:
        proxy = self._proxies.pop(endpoint.id, None)
        if proxy is not None:
            proxy.close()

    def _delete_branch(self, branch: Branch) -> list[Operation]:
        """Remove a branch from the API at once; its computes and data go when its ops finish."""
        del self.branches[branch.id]
        endpoints = self._branch_endpoints(branch)
        for endpoint in endpoints:
            del self.endpoints[endpoint.id]
            endpoint.deleted = True

        def remove() -> None:
            for endpoint in endpoints:
                self._close_proxy(endpoint)
            for database in (branch.database, branch.snapshot):
                if database is not None:
                    self.cluster.drop(database)

        steps: list[tuple[str, str | None, str | None, Callable[[], None] | None]] = [
            ("suspend_compute", branch.id, endpoint.id, None) for endpoint in endpoints
        ]
        steps.append(("delete_timeline", branch.id, None, remove))
        return self._schedule(steps)

    def _sweep_expired(self, now: float) -> bool:
        """Delete branches past ``expires_at``, like Neon's background job (not to the second).

        Open question 11: a branch expires with its read_only endpoints attached.
        A branch with running operations waits for them.
        """
        busy = {op.branch_id for op in self._pending}
        expired = [
            b
            for b in self.branches.values()
            if b.expires_at is not None
            and b.expires_at <= now
            and not b.default
            and b.id not in busy
            and not self._children(b)
        ]
        for branch in expired:
            logger.debug("Neon emulator: branch %s expired", branch.id)
            self._delete_branch(branch)
        return bool(expired)

    # -- proxy routing ----------------------------------------------------------------------

    def _route(self, endpoint: Endpoint, database: str, user: str) -> Route:
        """Where a new connection to ``endpoint`` goes; waits while the compute starts.

        Like Neon's proxy, a connection to a starting compute waits for it
        rather than failing.
        """
        deadline = time.monotonic() + COMPUTE_START_TIMEOUT
        with self.lock:
            while True:
                self.advance()
                if self._closed or endpoint.id not in self._proxies:
                    raise ProxyRefusal("57P01", f"endpoint {endpoint.id} was deleted")
                if endpoint.current_state == "active":
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProxyRefusal("57P03", f"compute {endpoint.id} did not start in time")
                self.changed.wait(min(remaining, 0.1))
            if database != DATABASE_NAME:
                raise ProxyRefusal("3D000", f'database "{database}" does not exist')
            if user != ROLE_NAME:
                raise ProxyRefusal("28P01", f'password authentication failed for user "{user}"')
            branch = endpoint.branch
            if branch.database is None:
                raise ProxyRefusal("57P03", f"branch {branch.id} is not ready")
            if endpoint.type == "read_only":
                return Route(branch.database, self.cluster.readonly_role)

            def mark_write() -> None:
                branch.last_write = next(self._writes)

            return Route(branch.database, self.cluster.owner_role, mark_write)

    # -- public snapshot for tests ----------------------------------------------------------

    def backdate(self, branch_id: str, seconds: float) -> None:
        """Move a branch's history ``seconds`` into the past (for tests of stale branches):
        its creation, last change and last reset; its expiry stays."""
        with self.lock:
            branch = self._branch(branch_id)
            branch.created_at -= seconds
            branch.updated_at -= seconds
            branch.state_changed_at -= seconds
            if branch.last_reset_at is not None:
                branch.last_reset_at -= seconds
            if branch.parent_timestamp is not None:
                branch.parent_timestamp -= seconds

    def branch_list(self) -> list[dict[str, Any]]:
        with self.lock:
            self.advance()
            ordered = sorted(self.branches.values(), key=lambda b: (b.created_at, b.id))
            return [b.to_json(self.id) for b in ordered]

    # ======================================================================================
    # The API. Each method runs with the lock held by the caller (server.py).
    # ======================================================================================

    def project_json(self) -> dict[str, Any]:
        created = rfc3339(self.created_at)
        now = time.time()
        return {
            "data_storage_bytes_hour": 0,
            "data_transfer_bytes": 0,
            "written_data_bytes": 0,
            "compute_time_seconds": 0,
            "active_time_seconds": 0,
            "cpu_used_sec": 0,
            "id": self.id,
            "platform_id": "aws",
            "region_id": REGION_ID,
            "name": self.name,
            "provisioner": "k8s-neonvm",
            "pg_version": self.cluster.server_version // 10000,
            "proxy_host": HOST,
            "branch_logical_size_limit": 0,
            "branch_logical_size_limit_bytes": 0,
            "store_passwords": True,
            "creation_source": CREATION_SOURCE,
            "history_retention_seconds": 86400,
            "created_at": created,
            "updated_at": created,
            "consumption_period_start": created,
            "consumption_period_end": rfc3339(now + 30 * 86400),
            "owner_id": "emulated-owner",
            "default_endpoint_settings": {
                "autoscaling_limit_min_cu": 0.25,
                "autoscaling_limit_max_cu": 0.25,
                "suspend_timeout_seconds": 0,
            },
            "settings": {
                "allowed_ips": {"ips": [], "protected_branches_only": False},
                "enable_logical_replication": False,
            },
        }

    def api_list_projects(self, query: dict[str, str]) -> tuple[int, Any]:
        item = {
            key: self.project_json()[key]
            for key in ("id", "platform_id", "region_id", "name", "provisioner", "created_at")
        }
        return 200, {"projects": [item]}

    def api_get_project(self) -> tuple[int, Any]:
        return 200, {"project": self.project_json()}

    # -- branches ---------------------------------------------------------------------------

    def _search(self, query: dict[str, str]) -> list[Branch]:
        needle = query.get("search", "").lower()
        return [
            b for b in self.branches.values() if needle in b.name.lower() or needle in b.id.lower()
        ]

    def api_list_branches(self, query: dict[str, str]) -> tuple[int, Any]:
        """Search, sort and keyset-paginate like Neon.

        Open question 5: without ``limit`` every branch is returned (neon-api
        0.3.0 and pytest-neon never paginate).
        """
        sort_by = query.get("sort_by", "updated_at")
        if sort_by not in _SORT_KEYS:
            raise ApiError(400, f"sort_by must be one of {', '.join(_SORT_KEYS)}")
        sort_order = query.get("sort_order", "desc")
        if sort_order not in ("asc", "desc"):
            raise ApiError(400, "sort_order must be asc or desc")
        limit = _query_int(query, "limit", 1, 10000)

        def key(branch: Branch) -> list[Any]:
            return [getattr(branch, sort_by), branch.id]

        branches = sorted(self._search(query), key=key, reverse=sort_order == "desc")
        if "cursor" in query:
            after = _decode_cursor(query["cursor"])
            if sort_order == "asc":
                branches = [b for b in branches if key(b) > after]
            else:
                branches = [b for b in branches if key(b) < after]
        pagination: dict[str, Any] = {"sort_by": sort_by, "sort_order": sort_order}
        if limit is not None and len(branches) > limit:
            branches = branches[:limit]
            pagination["next"] = _encode_cursor(key(branches[-1]))
        return 200, {
            "branches": [b.to_json(self.id) for b in branches],
            # Keyed by branch ID (AnnotationsMapResponse), only the annotated ones.
            "annotations": {b.id: b.annotation_json() for b in branches if b.annotation},
            "pagination": pagination,
        }

    def api_count_branches(self, query: dict[str, str]) -> tuple[int, Any]:
        return 200, {"count": len(self._search(query))}

    def api_get_branch(self, branch_id: str) -> tuple[int, Any]:
        branch = self._branch(branch_id)
        # AnnotationResponse: ``annotation`` is required in the answer of a get.
        return 200, {"branch": branch.to_json(self.id), "annotation": branch.annotation_json()}

    def api_create_branch(self, body: Any) -> tuple[int, Any]:
        body = {} if body is None else _object(body, "the request body")
        _only(body, _BRANCH_CREATE_FIELDS, "the request body")
        spec = _object(body.get("branch") or {}, "branch")
        _only(spec, _BRANCH_FIELDS, "branch")
        if spec.get("parent_lsn") is not None or spec.get("parent_timestamp") is not None:
            raise ApiError(400, "parent_lsn and parent_timestamp are not supported by the emulator")
        if spec.get("archived"):
            raise ApiError(400, "archived branches are not supported by the emulator")
        init_source = spec.get("init_source")
        if init_source not in (None, "parent-data"):
            if init_source == "schema-only":
                raise ApiError(400, "init_source schema-only is not supported by the emulator")
            raise ApiError(400, "init_source must be parent-data or schema-only")
        protected = _bool(spec.get("protected", False), "protected")
        name = _check_name(spec["name"]) if spec.get("name") is not None else None
        parent_id = spec.get("parent_id") or None
        if parent_id is not None and not isinstance(parent_id, str):
            raise ApiError(400, "parent_id must be a string")
        annotations = body.get("annotation_value")
        if annotations is not None and not (
            isinstance(annotations, dict) and all(isinstance(v, str) for v in annotations.values())
        ):
            raise ApiError(400, "annotation_value must be an object of strings")
        if annotations is not None and len(annotations) > MAX_ANNOTATION_PROPERTIES:
            raise ApiError(
                400, f"annotation_value must have at most {MAX_ANNOTATION_PROPERTIES} properties"
            )
        endpoint_specs = body.get("endpoints") or []
        if not isinstance(endpoint_specs, list):
            raise ApiError(400, "endpoints must be an array")
        endpoint_options = [
            _endpoint_options(_object(item, "endpoints item"), _BRANCH_ENDPOINT_FIELDS, "endpoints")
            for item in endpoint_specs
        ]
        if sum(1 for o in endpoint_options if o["type"] == "read_write") > 1:
            raise ApiError(409, "a branch can have only one read_write endpoint")
        now = time.time()
        expires_at = None
        if spec.get("expires_at") is not None:
            expires_at = parse_expires_at(spec["expires_at"], now)
            if protected:
                raise ApiError(400, "cannot set expiration on a protected branch")

        parent = self._branch(parent_id or self.default_branch_id)
        # Open question 1 (status of this refusal): 400.
        if parent.expires_at is not None:
            raise ApiError(400, "cannot create a branch from a branch with expiration")
        if name is not None and self._name_taken(name):
            raise ApiError(409, "branch already exists")
        self._busy(parent)

        database = self.cluster.new_name()
        self._copy_data(parent, database)
        branch_id = self._new_branch_id()
        branch = Branch(
            id=branch_id,
            name=name or branch_id,
            parent_id=parent.id,
            database=database,
            created_at=now,
            protected=protected,
            state_changed_at=now,
            updated_at=now,
            parent_timestamp=now,
            parent_lsn=self._next_lsn(),
            database_id=next(self._database_ids),
            annotation=dict(annotations) if annotations is not None else None,
        )
        if expires_at is not None:
            branch.expires_at = expires_at
            branch.ttl_interval_seconds = round(expires_at - now)
        self.branches[branch.id] = branch
        endpoints = [self._new_endpoint(branch, options, now) for options in endpoint_options]
        steps: list[tuple[str, str | None, str | None, Callable[[], None] | None]] = [
            ("create_branch", branch.id, None, lambda: self._branch_ready(branch))
        ]
        for endpoint in endpoints:
            steps.append(
                (
                    "start_compute",
                    branch.id,
                    endpoint.id,
                    lambda endpoint=endpoint: self._endpoint_started(endpoint),
                )
            )
        ops = self._schedule(steps)
        response: dict[str, Any] = {
            "branch": branch.to_json(self.id),
            "endpoints": [ep.to_json(self.id) for ep in endpoints],
            "operations": [op.to_json(self.id) for op in ops],
            "roles": [self._role_json(branch)],
            "databases": [self._database_json(branch)],
        }
        if endpoints:
            main = next((ep for ep in endpoints if ep.type == "read_write"), endpoints[0])
            response["connection_uris"] = [
                {
                    "connection_uri": self._uri(main),
                    "connection_parameters": {
                        "database": DATABASE_NAME,
                        "password": self.password,
                        "role": ROLE_NAME,
                        "host": HOST,
                        "pooler_host": HOST,
                    },
                }
            ]
        return 201, response

    def api_update_branch(self, branch_id: str, body: Any) -> tuple[int, Any]:
        body = _object(body, "the request body")
        _only(body, frozenset({"branch"}), "the request body")
        spec = _object(body.get("branch"), "branch")
        _only(spec, _BRANCH_UPDATE_FIELDS, "branch")
        branch = self._branch(branch_id)
        now = time.time()
        if "name" in spec:
            name = _check_name(spec["name"])
            if self._name_taken(name, other_than=branch):
                raise ApiError(409, "branch already exists")
        protected = _bool(spec.get("protected", branch.protected), "protected")
        expires_at = branch.expires_at
        if "expires_at" in spec:
            if spec["expires_at"] is None:
                expires_at = None
            else:
                expires_at = parse_expires_at(spec["expires_at"], now)
                if branch.default:
                    raise ApiError(400, "cannot set expiration on the default branch")
                if self._children(branch):
                    raise ApiError(400, "cannot set expiration on a branch that has children")
        if protected and expires_at is not None:
            raise ApiError(400, "cannot set expiration on a protected branch")
        if "name" in spec:
            branch.name = spec["name"]
        branch.protected = protected
        if "expires_at" in spec:
            branch.expires_at = expires_at
            branch.ttl_interval_seconds = (
                round(expires_at - now) if expires_at is not None else None
            )
        branch.updated_at = now
        return 200, {"branch": branch.to_json(self.id), "operations": []}

    def api_delete_branch(self, branch_id: str) -> tuple[int, Any]:
        branch = self.branches.get(branch_id)
        if branch is None:
            return 204, None  # unknown or already deleted: 204 with an empty body
        if branch.default:
            raise ApiError(400, "cannot delete the default branch")
        if branch.protected:
            raise ApiError(400, "cannot delete a protected branch")
        if self._children(branch):
            raise ApiError(400, "cannot delete a branch that has children")
        self._busy(branch)
        ops = self._delete_branch(branch)
        return 200, {
            "branch": branch.to_json(self.id),
            "operations": [op.to_json(self.id) for op in ops],
        }

    def api_restore_branch(self, branch_id: str, body: Any) -> tuple[int, Any]:
        """Restore (reset) a branch to the current state of ``source_branch_id``.

        Keeps the branch ID and its endpoints (host, port, password); the data
        is copied from the source now and swapped in -- cutting the branch's
        sessions -- when the last operation finishes, so a client that does not
        wait for the operations still sees the old data.

        Open question 2 (operations of a restore): ``create_timeline`` for the
        branch, then ``start_compute`` per endpoint (actions within neon-api
        0.3.0's enum). Open question 7: endpoints stay ``active`` meanwhile; the
        branch is ``resetting``. Restoring the default/root branch from another
        branch is allowed, as on Neon: clients must guard against it.
        """
        body = _object(body, "the request body")
        _only(body, _RESTORE_FIELDS, "the request body")
        source_id = body.get("source_branch_id")
        if not isinstance(source_id, str) or not source_id:
            raise ApiError(400, "source_branch_id is required")
        if body.get("source_lsn") is not None or body.get("source_timestamp") is not None:
            raise ApiError(400, "source_lsn and source_timestamp are not supported by the emulator")
        preserve = body.get("preserve_under_name")
        if preserve is not None:
            preserve = _check_name(preserve, "preserve_under_name")
        target = self._branch(branch_id)
        source = self.branches.get(source_id)
        if source is None:
            raise ApiError(404, "source branch not found")
        # Open question 1 (status of these refusals): 400.
        if target.protected:
            raise ApiError(400, "cannot restore a protected branch")
        if source is target:
            raise ApiError(
                400,
                "restoring a branch from its own history needs preserve_under_name and "
                "source_lsn or source_timestamp, which are not supported by the emulator",
            )
        children = self._children(target)
        if children and preserve is None:
            raise ApiError(400, "preserve_under_name is required when the branch has children")
        if preserve is not None and self._name_taken(preserve):
            raise ApiError(409, "branch already exists")
        self._busy(target, source)

        new_database = self.cluster.new_name()
        self._copy_data(source, new_database)
        now = time.time()
        backup: Branch | None = None
        if preserve is not None:
            # The old state lives on as the backup, which becomes the parent of the
            # branch's children and (for a non-root branch) of the branch itself.
            backup = Branch(
                id=self._new_branch_id(),
                name=preserve,
                parent_id=target.parent_id,
                database=None,
                created_at=now,
                state_changed_at=now,
                updated_at=now,
                parent_timestamp=target.parent_timestamp,
                parent_lsn=target.parent_lsn,
                database_id=next(self._database_ids),
            )
            self.branches[backup.id] = backup
            for child in children:
                child.parent_id = backup.id
            if target.parent_id is not None:
                target.parent_id = backup.id
        target.current_state = "resetting"
        target.pending_state = "ready"
        target.state_changed_at = now
        target.updated_at = now
        target.last_reset_at = now
        if target.parent_id is not None:
            target.parent_timestamp = now
            target.parent_lsn = self._next_lsn()
        if target.ttl_interval_seconds is not None:
            target.expires_at = float(int(now) + target.ttl_interval_seconds)

        def swap() -> None:
            old_database, old_snapshot = target.database, target.snapshot
            old_mark, old_write = target.snapshot_mark, target.last_write
            target.database = new_database
            target.snapshot = None
            target.last_write = next(self._writes)
            if backup is not None and self.branches.get(backup.id) is backup:
                assert old_database is not None
                self.cluster.terminate(old_database)
                backup.database = old_database
                backup.snapshot, backup.snapshot_mark = old_snapshot, old_mark
                backup.last_write = old_write
                self._branch_ready(backup)
            else:
                for database in (old_database, old_snapshot):
                    if database is not None:
                        self.cluster.drop(database)  # WITH (FORCE): cuts the sessions
            self._branch_ready(target)

        steps: list[tuple[str, str | None, str | None, Callable[[], None] | None]] = [
            ("create_timeline", target.id, None, None)
        ]
        if backup is not None:
            steps.append(("create_branch", backup.id, None, None))
        steps.extend(
            ("start_compute", target.id, endpoint.id, None)
            for endpoint in self._branch_endpoints(target)
        )
        last_action, last_branch, last_endpoint, _ = steps[-1]
        steps[-1] = (last_action, last_branch, last_endpoint, swap)
        ops = self._schedule(steps)
        return 200, {
            "branch": target.to_json(self.id),
            "operations": [op.to_json(self.id) for op in ops],
        }

    # -- roles and databases -------------------------------------------------------------------

    def _role(self, branch_id: str, role: str) -> Branch:
        branch = self._branch(branch_id)
        if role != ROLE_NAME:
            raise ApiError(404, "role not found")
        return branch

    def api_list_roles(self, branch_id: str) -> tuple[int, Any]:
        return 200, {"roles": [self._role_json(self._branch(branch_id))]}

    def api_get_role(self, branch_id: str, role: str) -> tuple[int, Any]:
        return 200, {"role": self._role_json(self._role(branch_id, role))}

    def api_reveal_password(self, branch_id: str, role: str) -> tuple[int, Any]:
        self._role(branch_id, role)
        return 200, {"password": self.password}

    def api_reset_password(self, branch_id: str, role: str) -> tuple[int, Any]:
        """New password: stored (and revealed) now, valid in PostgreSQL when the ops finish.

        Emulator limitation: all branches share the project's role, so the new
        password applies to every branch, not only this one as on Neon.
        Sessions on this branch are cut, as Neon restarts the compute.
        """
        branch = self._role(branch_id, role)
        self._busy(branch)
        password = new_password()
        self.password = password

        def apply() -> None:
            self.cluster.set_password(password)
            if branch.database is not None:
                self.cluster.terminate(branch.database)

        endpoints = self._branch_endpoints(branch)
        steps: list[tuple[str, str | None, str | None, Callable[[], None] | None]] = [
            ("apply_config", branch.id, endpoint.id, None) for endpoint in endpoints
        ] or [("apply_config", branch.id, None, None)]
        action, branch_ref, endpoint_ref, _ = steps[-1]
        steps[-1] = (action, branch_ref, endpoint_ref, apply)
        ops = self._schedule(steps)
        return 200, {
            "role": self._role_json(branch, password),
            "operations": [op.to_json(self.id) for op in ops],
        }

    def api_list_databases(self, branch_id: str) -> tuple[int, Any]:
        return 200, {"databases": [self._database_json(self._branch(branch_id))]}

    def api_get_database(self, branch_id: str, database: str) -> tuple[int, Any]:
        branch = self._branch(branch_id)
        if database != DATABASE_NAME:
            raise ApiError(404, "database not found")
        return 200, {"database": self._database_json(branch)}

    # -- endpoints ---------------------------------------------------------------------------

    def api_list_endpoints(self) -> tuple[int, Any]:
        endpoints = sorted(self.endpoints.values(), key=lambda ep: (ep.created_at, ep.id))
        return 200, {"endpoints": [ep.to_json(self.id) for ep in endpoints]}

    def api_list_branch_endpoints(self, branch_id: str) -> tuple[int, Any]:
        branch = self._branch(branch_id)
        endpoints = sorted(self._branch_endpoints(branch), key=lambda ep: (ep.created_at, ep.id))
        return 200, {"endpoints": [ep.to_json(self.id) for ep in endpoints]}

    def api_get_endpoint(self, endpoint_id: str) -> tuple[int, Any]:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise ApiError(404, "endpoint not found")
        return 200, {"endpoint": endpoint.to_json(self.id)}

    def api_create_endpoint(self, body: Any) -> tuple[int, Any]:
        """Open question 8: a read_only endpoint needs no read_write one on the branch."""
        body = _object(body, "the request body")
        _only(body, frozenset({"endpoint"}), "the request body")
        spec = _object(body.get("endpoint"), "endpoint")
        branch_id = spec.get("branch_id")
        if not isinstance(branch_id, str) or not branch_id:
            raise ApiError(400, "endpoint.branch_id is required")
        options = _endpoint_options(spec, _ENDPOINT_FIELDS, "endpoint")
        options.pop("branch_id", None)
        branch = self._branch(branch_id)
        if options["type"] == "read_write" and any(
            ep.type == "read_write" for ep in self._branch_endpoints(branch)
        ):
            raise ApiError(409, "branch already has a read_write endpoint")
        self._busy(branch)
        endpoint = self._new_endpoint(branch, options, time.time())
        ops = self._schedule(
            [("start_compute", branch.id, endpoint.id, lambda: self._endpoint_started(endpoint))]
        )
        return 201, {
            "endpoint": endpoint.to_json(self.id),
            "operations": [op.to_json(self.id) for op in ops],
        }

    def api_delete_endpoint(self, endpoint_id: str) -> tuple[int, Any]:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            return 204, None
        branch = endpoint.branch
        if branch.protected:
            raise ApiError(400, "cannot delete a compute of a protected branch")
        self._busy(branch)
        del self.endpoints[endpoint.id]
        endpoint.deleted = True
        ops = self._schedule(
            [("suspend_compute", branch.id, endpoint.id, lambda: self._close_proxy(endpoint))]
        )
        return 200, {
            "endpoint": endpoint.to_json(self.id),
            "operations": [op.to_json(self.id) for op in ops],
        }

    # -- operations ---------------------------------------------------------------------------

    def api_list_operations(self, query: dict[str, str]) -> tuple[int, Any]:
        """Newest first; ``pagination.cursor`` continues after the last one returned."""
        limit = _query_int(query, "limit", 1, 1000)
        ops = list(reversed(self.operations))
        if "cursor" in query:
            try:
                after = int(query["cursor"])
            except ValueError:
                raise ApiError(400, "invalid cursor") from None
            ops = [op for op in ops if op.seq < after]
        if limit is not None:
            ops = ops[:limit]
        body: dict[str, Any] = {"operations": [op.to_json(self.id) for op in ops]}
        if ops:
            body["pagination"] = {"cursor": str(ops[-1].seq)}
        return 200, body

    def api_get_operation(self, operation_id: str) -> tuple[int, Any]:
        for op in self.operations:
            if op.id == operation_id:
                return 200, {"operation": op.to_json(self.id)}
        raise ApiError(404, "operation not found")

    # -- connection URI ---------------------------------------------------------------------

    def api_connection_uri(self, query: dict[str, str]) -> tuple[int, Any]:
        """``GET /connection_uri``; ``pooled`` gives the same URI (no PgBouncer here).

        Open question 9: ``pooled`` accepts true/false in any case and 1/0 (neon-api
        sends Python's ``False``). ``branch_id`` defaults to the default branch even
        when ``endpoint_id`` is given, as documented; an endpoint of another branch
        is a 400.
        """
        for key in ("database_name", "role_name"):
            if not query.get(key):
                raise ApiError(400, f"{key} is required")
        pooled = query.get("pooled", "false").lower()
        if pooled not in ("true", "false", "1", "0"):
            raise ApiError(400, "pooled must be a boolean")
        branch = self._branch(query.get("branch_id") or self.default_branch_id)
        if query["database_name"] != DATABASE_NAME:
            raise ApiError(404, "database not found")
        if query["role_name"] != ROLE_NAME:
            raise ApiError(404, "role not found")
        endpoint_id = query.get("endpoint_id")
        if endpoint_id:
            endpoint = self.endpoints.get(endpoint_id)
            if endpoint is None:
                raise ApiError(404, "endpoint not found")
            if endpoint.branch is not branch:
                raise ApiError(400, f"endpoint {endpoint_id} does not belong to branch {branch.id}")
        else:
            candidates = [ep for ep in self._branch_endpoints(branch) if ep.type == "read_write"]
            if not candidates:
                raise ApiError(404, f"branch {branch.id} has no read_write endpoint")
            endpoint = candidates[0]
        return 200, {"uri": self._uri(endpoint)}
