"""The embedded PostgreSQL server: find binaries, copy them, run as an unprivileged user,
prepare and cache the cluster, start and stop the postmaster.

Usable without pytest (like pytest-postgresql's executors): ``EmbeddedServer.start``
gives a running server with a superuser URL; ``stop_abandoned_server`` cleans up
after a process that was killed.
"""

from .binaries import BINDIR_ENV_VAR, find_postgres_bindir
from .embedded import EmbeddedServer, stop_abandoned_server

__all__ = ["BINDIR_ENV_VAR", "EmbeddedServer", "find_postgres_bindir", "stop_abandoned_server"]
