"""One loopback TCP port per emulated endpoint, forwarding to the real PostgreSQL.

Why a proxy: on Neon, a branch's endpoint keeps its host, port, role name and
password when the branch is restored, and ``neondb``/``neondb_owner`` are the
same names on every branch. The emulator's branches are databases with
generated names on one server, so the proxy reads the client's startup packet,
rewrites ``database`` (``neondb`` -> the database currently backing the
branch) and ``user`` (``neondb_owner`` -> the real role; for a ``read_only``
endpoint the role that cannot write), and from then on only pipes bytes.
Authentication (SCRAM) happens between the client and the real server, so the
password the API returns is checked by PostgreSQL itself.

Protocol details handled here:

* ``SSLRequest`` / ``GSSENCRequest`` are answered ``N`` (no TLS: clients must
  not demand ``sslmode=require``), after which the client sends the real
  startup packet;
* ``CancelRequest`` is passed through unchanged (the backend key data the
  client holds came from the real server);
* startup refusals (unknown database or role, endpoint gone) are sent as a
  PostgreSQL ``ErrorResponse`` so that clients show a normal error message.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EndpointProxy", "ProxyRefusal", "Route"]

logger = logging.getLogger(__name__)

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_MAX_STARTUP_LENGTH = 10_000
_STARTUP_TIMEOUT = 30.0
_CHUNK = 65536
# Client messages that execute SQL: simple Query, Execute, FunctionCall.
_EXECUTING_MESSAGES = frozenset(b"QEF")


class ProxyRefusal(Exception):
    """Refuse a connection at startup with a PostgreSQL error (SQLSTATE and message)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


@dataclass(frozen=True)
class Route:
    """Where one client connection goes: the real database and role.

    ``on_execute`` is called before any SQL-executing message is forwarded
    (read_write endpoints only); the emulator uses it to know that a branch may
    have changed since its last snapshot.
    """

    database: str
    user: str
    on_execute: Callable[[], None] | None = None


# route(database, user) -> Route, may block (endpoint starting) or raise ProxyRefusal.
Router = Callable[[str, str], Route]


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client closed the connection during startup")
        data += chunk
    return bytes(data)


def _parse_parameters(body: bytes) -> dict[str, str]:
    """The key/value pairs of a startup packet (after the protocol version)."""
    parts = body.split(b"\0")
    params: dict[str, str] = {}
    for key, value in zip(parts[0::2], parts[1::2], strict=False):
        if not key:
            break
        params[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return params


def _build_startup(protocol: int, params: dict[str, str]) -> bytes:
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!ii", len(body) + 8, protocol) + body


def _error_response(sqlstate: str, message: str) -> bytes:
    fields = b"SFATAL\0VFATAL\0C" + sqlstate.encode() + b"\0M" + message.encode("utf-8") + b"\0\0"
    return b"E" + struct.pack("!i", len(fields) + 4) + fields


def _strip_endpoint_option(options: str) -> str:
    """Drop Neon's ``endpoint=<id>`` routing hint from ``options`` (PostgreSQL rejects it)."""
    kept = [word for word in options.split() if not word.startswith("endpoint=")]
    return " ".join(kept)


class _ExecuteWatcher:
    """Follows the client->server message stream and reports SQL-executing messages.

    After the startup packet every frontend message is a type byte plus an
    int32 length (that includes itself), so message boundaries can be tracked
    across arbitrary ``recv`` chunks without buffering payloads.
    """

    def __init__(self, on_execute: Callable[[], None]) -> None:
        self._on_execute = on_execute
        self._header = b""
        self._remaining = 0

    def feed(self, data: bytes) -> None:
        index = 0
        size = len(data)
        while index < size:
            if self._remaining:
                step = min(self._remaining, size - index)
                index += step
                self._remaining -= step
                continue
            need = 5 - len(self._header)
            self._header += data[index : index + need]
            index += need
            if len(self._header) == 5:
                kind = self._header[0]
                length = struct.unpack("!i", self._header[1:5])[0]
                self._header = b""
                self._remaining = max(length - 4, 0)
                if kind in _EXECUTING_MESSAGES:
                    self._on_execute()


class EndpointProxy:
    """A listening socket on 127.0.0.1 for one endpoint, and its live connections."""

    def __init__(self, name: str, upstream: tuple[str, int], router: Router) -> None:
        self.name = name
        self._upstream = upstream
        self._router = router
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"neon-emulator-proxy-{name}", daemon=True
        )

    def start(self) -> EndpointProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening (new connections are refused) and cut every open connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sockets = list(self._sockets)
            self._sockets.clear()
        # shutdown() wakes the thread blocked in accept() on Linux; close() alone does not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in sockets:
            self._cut(sock)

    # -- internals ---------------------------------------------------------------------

    @staticmethod
    def _cut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def _track(self, *socks: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._sockets.update(socks)
            return True

    def _untrack(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._sockets.discard(sock)
        for sock in socks:
            self._cut(sock)

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._track(client):
                self._cut(client)
                return
            threading.Thread(
                target=self._serve,
                args=(client,),
                name=f"neon-emulator-conn-{self.name}",
                daemon=True,
            ).start()

    def _read_startup(self, client: socket.socket) -> tuple[int, bytes]:
        """(protocol code, body) of the real startup or cancel packet, after TLS/GSS refusals."""
        for _ in range(3):
            length = struct.unpack("!i", _recv_exact(client, 4))[0]
            if not 8 <= length <= _MAX_STARTUP_LENGTH:
                raise ProxyRefusal("08P01", "invalid startup packet length")
            payload = _recv_exact(client, length - 4)
            code = struct.unpack("!i", payload[:4])[0]
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                client.sendall(b"N")
                continue
            return code, payload[4:]
        raise ProxyRefusal("08P01", "too many encryption negotiation requests")

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            client.settimeout(_STARTUP_TIMEOUT)
            code, body = self._read_startup(client)
            if code == _CANCEL_REQUEST:
                with socket.create_connection(self._upstream, timeout=10) as cancel:
                    cancel.sendall(struct.pack("!ii", 16, code) + body)
                return
            params = _parse_parameters(body)
            user = params.get("user", "")
            route = self._router(params.get("database") or user, user)
            params["database"] = route.database
            params["user"] = route.user
            if "options" in params:
                params["options"] = _strip_endpoint_option(params["options"])
            upstream = socket.create_connection(self._upstream, timeout=10)
            if not self._track(upstream):
                return
            # Small protocol messages both ways: no Nagle delays on either leg.
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.sendall(_build_startup(code, params))
            client.settimeout(None)
            upstream.settimeout(None)
            watcher = _ExecuteWatcher(route.on_execute) if route.on_execute else None
            forward = threading.Thread(
                target=self._pump,
                args=(client, upstream, watcher),
                name=f"neon-emulator-pump-{self.name}",
                daemon=True,
            )
            forward.start()
            self._pump(upstream, client, None)
            forward.join()
        except ProxyRefusal as refusal:
            with contextlib.suppress(OSError):
                client.sendall(_error_response(refusal.sqlstate, refusal.message))
        except (OSError, ConnectionError, struct.error):
            pass  # the client went away or we were closed: nothing to report
        except Exception:  # a bug here must not kill the thread with a traceback
            logger.exception("Neon emulator proxy %s: connection failed", self.name)
        finally:
            self._untrack(client, *([upstream] if upstream is not None else []))

    def _pump(
        self, source: socket.socket, target: socket.socket, watcher: _ExecuteWatcher | None
    ) -> None:
        """Copy bytes one way until either side closes, then cut both."""
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                if watcher is not None:
                    watcher.feed(data)  # before forwarding: the mark must precede the write
                target.sendall(data)
        except OSError:
            pass
        finally:
            self._cut(source)
            self._cut(target)
