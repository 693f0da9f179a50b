"""``pool_pre_ping`` without the round trip, for engines on a server on this machine.

The pre-ping finds pooled connections the server has ended (a swap ends the
branch's connections; a test may call ``pg_terminate_backend``). It sends
``SELECT 1`` at every checkout: ~0.15 ms, and a wake-up of the server process,
for every test. A server that ends a connection sends its FATAL message and
closes the socket, so the socket becomes readable. An idle pooled connection
whose socket has nothing pending is therefore alive, and a ``poll()`` of it
answers without a round trip; anything pending (the termination, a
notification, a parameter change) gets the real ping. Over a network a peer
can vanish without a word (a dropped route, a suspended compute behind a
proxy), so engines on a remote host keep the real ping.
"""

from __future__ import annotations

import select
from typing import Any

from sqlalchemy.engine import Engine

from .urls import on_this_machine


def ping_only_when_pending(engine: Engine) -> Engine:
    """Make ``engine``'s pre-ping a socket poll when its server is on this machine."""
    if not on_this_machine(engine.url.host):
        return engine
    real_ping = engine.dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        try:
            socket = dbapi_connection.fileno()
        except Exception:  # closed, or a driver without fileno(): let the real ping tell
            return real_ping(dbapi_connection)
        poller = select.poll()
        poller.register(socket, select.POLLIN | select.POLLPRI)
        if poller.poll(0):
            return real_ping(dbapi_connection)
        return True

    engine.dialect.do_ping = do_ping  # type: ignore[method-assign]
    return engine
