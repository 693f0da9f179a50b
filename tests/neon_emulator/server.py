"""The HTTP side of the emulator and its public entry point, :class:`NeonEmulator`.

Real HTTP on 127.0.0.1 (stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive
like Neon's API), so clients are tested through their real ``requests`` /
``neon-api`` code paths: URL building, headers, status handling, JSON parsing.
The order of checks for each request: injected faults, authentication, route
(404/405), project, then the API method under the state lock.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import socket
import socketserver
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .faults import FaultInjector
from .postgres import Cluster
from .state import LOCKED_MESSAGE, ApiError, Project

__all__ = ["NeonEmulator"]

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v2"
_ID_PATTERN = re.compile(r"^[a-z0-9-]{1,60}$")

Handler = Callable[[Project, dict[str, str], dict[str, str], Any], tuple[int, Any]]

# (method, path pattern after /api/v2, handler). "{name}" matches one path segment.
_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/projects", lambda p, a, q, b: p.api_list_projects(q)),
    ("GET", "/projects/{project_id}", lambda p, a, q, b: p.api_get_project()),
    ("GET", "/projects/{project_id}/branches", lambda p, a, q, b: p.api_list_branches(q)),
    ("POST", "/projects/{project_id}/branches", lambda p, a, q, b: p.api_create_branch(b)),
    ("GET", "/projects/{project_id}/branches/count", lambda p, a, q, b: p.api_count_branches(q)),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}",
        lambda p, a, q, b: p.api_get_branch(a["branch_id"]),
    ),
    (
        "PATCH",
        "/projects/{project_id}/branches/{branch_id}",
        lambda p, a, q, b: p.api_update_branch(a["branch_id"], b),
    ),
    (
        "DELETE",
        "/projects/{project_id}/branches/{branch_id}",
        lambda p, a, q, b: p.api_delete_branch(a["branch_id"]),
    ),
    (
        "POST",
        "/projects/{project_id}/branches/{branch_id}/restore",
        lambda p, a, q, b: p.api_restore_branch(a["branch_id"], b),
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/endpoints",
        lambda p, a, q, b: p.api_list_branch_endpoints(a["branch_id"]),
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/roles",
        lambda p, a, q, b: p.api_list_roles(a["branch_id"]),
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/roles/{role}",
        lambda p, a, q, b: p.api_get_role(a["branch_id"], a["role"]),
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/roles/{role}/reveal_password",
        lambda p, a, q, b: p.api_reveal_password(a["branch_id"], a["role"]),
    ),
    (
        "POST",
        "/projects/{project_id}/branches/{branch_id}/roles/{role}/reset_password",
        lambda p, a, q, b: p.api_reset_password(a["branch_id"], a["role"]),
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/databases",
        lambda p, a, q, b: p.api_list_databases(a["branch_id"]),
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/databases/{database}",
        lambda p, a, q, b: p.api_get_database(a["branch_id"], a["database"]),
    ),
    ("GET", "/projects/{project_id}/endpoints", lambda p, a, q, b: p.api_list_endpoints()),
    ("POST", "/projects/{project_id}/endpoints", lambda p, a, q, b: p.api_create_endpoint(b)),
    (
        "GET",
        "/projects/{project_id}/endpoints/{endpoint_id}",
        lambda p, a, q, b: p.api_get_endpoint(a["endpoint_id"]),
    ),
    (
        "DELETE",
        "/projects/{project_id}/endpoints/{endpoint_id}",
        lambda p, a, q, b: p.api_delete_endpoint(a["endpoint_id"]),
    ),
    ("GET", "/projects/{project_id}/operations", lambda p, a, q, b: p.api_list_operations(q)),
    (
        "GET",
        "/projects/{project_id}/operations/{operation_id}",
        lambda p, a, q, b: p.api_get_operation(a["operation_id"]),
    ),
    (
        "GET",
        "/projects/{project_id}/connection_uri",
        lambda p, a, q, b: p.api_connection_uri(q),
    ),
]
_COMPILED = [
    (method, tuple(pattern.split("/")[1:]), handler) for method, pattern, handler in _ROUTES
]


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    args: dict[str, str] = {}
    for expected, actual in zip(pattern, segments, strict=True):
        if expected.startswith("{"):
            if not actual:
                return None
            args[expected[1:-1]] = actual
        elif expected != actual:
            return None
    return args


def _resolve(method: str, path: str) -> tuple[Handler, dict[str, str]]:
    """The handler for ``method path`` (path after /api/v2), or 404 / 405 as a real router."""
    segments = [unquote(segment) for segment in path.split("/")[1:]]
    allowed = []
    for route_method, pattern, handler in _COMPILED:
        args = _match(pattern, segments)
        if args is None:
            continue
        # "count" is a fixed segment that also fits {branch_id}; fixed routes come first.
        if route_method == method:
            return handler, args
        allowed.append(route_method)
    if allowed:
        raise _MethodNotAllowed(sorted(set(allowed)))
    raise ApiError(404, "not found")


class _MethodNotAllowed(ApiError):
    def __init__(self, allowed: list[str]) -> None:
        super().__init__(405, "method not allowed")
        self.allowed = allowed


class _HttpServer(ThreadingHTTPServer):
    """Serves requests in daemon threads and can cut its keep-alive connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: NeonEmulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() does a reverse DNS lookup (getfqdn); not offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def cut_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' sessions expect
    server_version = "neon-emulator"
    sys_version = ""
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        # Headers and body are two writes; without this, Nagle + delayed ACK add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        # Paths and statuses only: no header (API key) or body (passwords) is logged.
        logger.debug("Neon emulator: " + format, *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- the request ---------------------------------------------------------------------

    def _drop(self) -> None:
        """Answer nothing and close: what a dead server looks like to a client."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _handle(self, method: str) -> None:
        emulator = self.server.emulator
        if emulator.faults.dead or emulator.stopped:
            self._drop()
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        url = urlsplit(self.path)
        path = url.path
        relative = path[len(API_PREFIX) :] if path.startswith(API_PREFIX + "/") else None
        self._call = (method, relative if relative is not None else path)
        emulator.calls.append(self._call)
        request_id = self.headers.get("X-Request-ID") or str(uuid.uuid4())

        fault = emulator.faults.take(*self._call)
        if fault is not None and fault.kind == "hang" and fault.stall == "request":
            time.sleep(fault.seconds)
            if emulator.faults.dead or emulator.stopped:
                self._drop()
                return
        try:
            if fault is not None and fault.kind == "rate_limit":
                retry_after = format(fault.retry_after, "g")
                self._send_error(
                    429,
                    "rate limit exceeded: too many requests, retry later",
                    request_id,
                    {"Retry-After": retry_after},
                )
                return
            if fault is not None and fault.kind == "fail":
                self._send_error(fault.status, "internal server error", request_id)
                return
            if fault is not None and fault.kind == "lock":
                self._send_error(423, LOCKED_MESSAGE, request_id)
                return
            status, body = self._answer(method, relative, url.query, raw)
            if fault is not None and fault.kind == "hang":  # stall="answer": applied already
                time.sleep(fault.seconds)
                if emulator.faults.dead or emulator.stopped:
                    self._drop()
                    return
            self._send(status, body, request_id)
        except _MethodNotAllowed as error:
            self._send_error(405, error.message, request_id, {"Allow": ", ".join(error.allowed)})
        except ApiError as error:
            self._send_error(error.status, error.message, request_id, code=error.code)
        except Exception:
            logger.exception("Neon emulator: %s %s failed", method, path)
            self._send_error(500, "internal server error", request_id)

    def _answer(
        self, method: str, relative: str | None, query_string: str, raw: bytes
    ) -> tuple[int, Any]:
        emulator = self.server.emulator
        if not self._authorized(emulator.api_key):
            raise ApiError(401, "authentication failed")
        if relative is None:
            raise ApiError(404, "not found")
        handler, args = _resolve(method, relative)
        if "project_id" in args and args["project_id"] != emulator.project_id:
            raise ApiError(404, "project not found")
        for key, value in args.items():
            if key.endswith("_id") and not _ID_PATTERN.match(value):
                raise ApiError(400, f"{key} must match ^[a-z0-9-]{{1,60}}$")
        query = {key: values[-1] for key, values in parse_qs(query_string, True).items()}
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                raise ApiError(400, "request body is not valid JSON") from None
        project = emulator.project
        with project.lock:
            if emulator.stopped:  # stop() is tearing down: start nothing new
                raise ApiError(503, "service unavailable")
            project.advance()
            return handler(project, args, query, body)

    def _authorized(self, api_key: str) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), api_key.encode())

    def _send(
        self,
        status: int,
        body: Any,
        request_id: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        if status == 423:
            self.server.emulator.locked.append(self._call)
        try:
            self.send_response(status)
            if status != 204:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Neon-Ret-Request-Id", request_id)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if payload and status != 204:
                self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # the client gave up (timeout) or we were cut

    def _send_error(
        self,
        status: int,
        message: str,
        request_id: str,
        headers: dict[str, str] | None = None,
        code: str = "",
    ) -> None:
        self._send(
            status,
            {"code": code, "message": message, "request_id": request_id},
            request_id,
            headers,
        )


class NeonEmulator:
    """A Neon API v2 for one project, on loopback, backed by real PostgreSQL databases.

    ``start()`` starts the HTTP server (and an embedded PostgreSQL unless
    ``admin_url`` names a server to use); ``stop()`` tears everything down and
    may be called any number of times. Use :attr:`base_url` as neon-api's
    ``base_url`` (add the trailing slash neon-api needs: ``base_url + "/"``).

    ``operation_delay`` is how long each operation runs, give or take
    ``operation_jitter`` (a fraction of it: 0.3 is +-30 %, drawn for each
    operation); a call's operations run one after another.
    """

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        project_id: str = "emulated-project-123456",
        operation_delay: float = 0.05,
        operation_jitter: float = 0.0,
        admin_url: str | None = None,
        port: int = 0,
    ) -> None:
        if not _ID_PATTERN.match(project_id):
            raise ValueError("project_id must match ^[a-z0-9-]{1,60}$, like Neon's IDs")
        if operation_delay < 0:
            raise ValueError("operation_delay must not be negative")
        if not 0 <= operation_jitter < 1:
            raise ValueError("operation_jitter must be a fraction in [0, 1)")
        self.operation_jitter = operation_jitter
        self.api_key = api_key
        self.project_id = project_id
        self.operation_delay = operation_delay
        self._admin_url = admin_url
        self._port = port
        self.calls: list[tuple[str, str]] = []
        self.locked: list[tuple[str, str]] = []  # the calls answered 423 (retried by clients)
        self.faults = FaultInjector()
        self.faults._on_die.append(self._shut_http)
        self.faults._on_revive.append(self._open_http)
        self.base_url = ""
        self.default_branch_id = ""
        self.stopped = False
        self._project: Project | None = None
        self._cluster: Cluster | None = None
        self._http: _HttpServer | None = None
        self._threads: list[threading.Thread] = []
        self._embedded: Any = None
        self._run_dir: Path | None = None
        self._http_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"NeonEmulator(base_url={self.base_url!r}, project_id={self.project_id!r})"

    def __enter__(self) -> NeonEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def project(self) -> Project:
        """The emulated project's state (for the emulator's own tests)."""
        if self._project is None:
            raise RuntimeError("the Neon emulator is not started")
        return self._project

    def start(self) -> NeonEmulator:
        """Start PostgreSQL (if needed), the project (default branch ``main``) and HTTP."""
        if self._project is not None or self.stopped:
            raise RuntimeError("a NeonEmulator can be started once")
        try:
            admin_url = self._admin_url or self._start_embedded()
            self._cluster = Cluster(admin_url, prefix=f"neonemu_{secrets.token_hex(4)}")
            self._project = Project(
                project_id=self.project_id,
                operation_delay=self.operation_delay,
                operation_jitter=self.operation_jitter,
                cluster=self._cluster,
            )
            self._project.bootstrap()
            self.default_branch_id = self._project.default_branch_id
            self._spawn("neon-emulator-operations", self._project.run_background)
            self._open_http()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop HTTP, proxies and the background thread; drop the databases (or the server)."""
        if self.stopped:
            return
        self.stopped = True
        self._shut_http()
        if self._project is not None:
            self._project.close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._cluster is not None:
            # Under the state lock, so that no request still being served creates
            # a database after the cleanup.
            with self._project.lock if self._project is not None else contextlib.nullcontext():
                if self._embedded is None:
                    self._cluster.cleanup()
                self._cluster.close()
        try:
            if self._embedded is not None:
                self._embedded.stop()
        finally:
            self._embedded = None
            if self._run_dir is not None:
                shutil.rmtree(self._run_dir, ignore_errors=True)
                self._run_dir = None

    def branches(self) -> list[dict[str, Any]]:
        """The project's current branches as the API shows them, oldest first."""
        return self.project.branch_list()

    def backdate(self, branch_id: str, seconds: float) -> None:
        """Make a branch look ``seconds`` older (created and last reset that much earlier)."""
        self.project.backdate(branch_id, seconds)

    # -- internals ----------------------------------------------------------------------

    def _start_embedded(self) -> str:
        """An embedded PostgreSQL of our own, as the plugin starts it."""
        from pytest_neon_alembic.coordination import state_root
        from pytest_neon_alembic.server.embedded import EmbeddedServer

        root = state_root()
        self._run_dir = Path(tempfile.mkdtemp(prefix="neon-emulator-", dir=root))
        # As root the server runs as an unprivileged user that must traverse this.
        os.chmod(self._run_dir, 0o711)
        self._embedded = EmbeddedServer.start(self._run_dir / "server", root / "cache")
        return self._embedded.admin_url

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    @staticmethod
    def _http_serve(server: _HttpServer | None) -> None:
        if server is not None:
            server.serve_forever(poll_interval=0.05)

    def _open_http(self) -> None:
        """Serve the API (again, after ``faults.die()``: on the same port)."""
        with self._http_lock:
            if self._http is not None or self.stopped:
                return
            server = self._http = _HttpServer(("127.0.0.1", self._port), self)
            self._port = server.server_address[1]
        self._spawn("neon-emulator-http", lambda: self._http_serve(server))
        self.base_url = f"http://127.0.0.1:{self._port}{API_PREFIX}"

    def _shut_http(self) -> None:
        """Close the API port and its keep-alive connections (``stop()`` and ``faults.die()``)."""
        with self._http_lock:
            server, self._http = self._http, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.cut_connections()
