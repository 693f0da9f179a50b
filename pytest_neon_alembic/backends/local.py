"""Branches as databases on one PostgreSQL server, cloned with ``CREATE DATABASE … TEMPLATE``.

The server is either the embedded one the plugin started, or one the user gave
with ``--neon-local-url``. Everything here goes through an administrative
connection with CREATEDB (and CREATEROLE for read-only access); every database
it creates carries a comment naming the run, so a run that was killed can be
cleaned up by the next one without touching anything else on the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from .. import isolation
from ..branch import NeonBranch
from ..errors import ServerError
from ..processes import pid_namespace
from ..redact import mask_text, mask_url
from ..urls import replace_database
from . import inplace
from .base import CLEAN, RESTORED, SWAPPED, Backend
from .janitor import MARKER_KEY, ServerJanitor, remedy
from .readonly import definer_role, read_only_role
from .spare import SpareClone, WarmConnection

T = TypeVar("T")

_EXACT_SEQUENCES = """
DO $$
DECLARE s regclass;
BEGIN
  FOR s IN SELECT c.oid::regclass FROM pg_class c WHERE c.relkind = 'S' LOOP
    EXECUTE format('SELECT setval(%L, last_value, is_called) FROM %s', s, s);
  END LOOP;
END $$
"""


class LocalBackend(ServerJanitor, Backend):
    """Branches as databases on one server, reached through an administrative URL."""

    name = "local"

    def __init__(
        self,
        admin_url: str,
        *,
        run_id: str,
        owner_pid: int,
        parent_database: str | None = None,
        server_label: str = "server",
        embedded_server: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(admin_url, server_label)
        # The embedded server's state (server/embedded.py), when the run started it:
        # read-only access is then a hot standby of it.
        self.embedded_server = embedded_server
        self.run_id = run_id
        self.owner_pid = owner_pid
        self.parent_database = parent_database or "template1"
        self.can_create_roles = True  # checked by check_privileges()
        self._spares: dict[str, SpareClone] = {}  # next swap's copy, by branch
        self._restorers = isolation.KeptConnections()  # one per isolated branch, for reset()
        self._warming: dict[str, WarmConnection] = {}  # the next restorer, after a swap
        self._tracked: set[str] = set()  # branches whose writes are logged
        self._superuser: bool | None = None

    def __repr__(self) -> str:
        return f"LocalBackend({mask_url(self.admin_url)!r}, run_id={self.run_id!r})"

    def check_privileges(self) -> None:
        """Fail early, with the remedy, when the role cannot create databases."""
        rows = self._execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, current_user FROM pg_roles "
            "WHERE rolname = current_user"
        )
        superuser, createdb, createrole, user = rows[0]
        self.can_create_roles = bool(superuser or createrole)
        if not (superuser or createdb):
            raise ServerError(
                f"Role {user!r} on {mask_url(self.admin_url)} cannot create databases, and every "
                f"branch is a database. Grant it: ALTER ROLE {user} CREATEDB CREATEROLE; or use "
                "another role in --neon-local-url, or leave the option unset to use the "
                "embedded server."
            )

    def describe(self) -> str:
        version = self._execute("SHOW server_version")[0][0]
        return f"local ({self.server_label} PostgreSQL {version.split()[0]})"

    # -- branches -----------------------------------------------------------------------

    def create_branch(
        self, name: str, parent: NeonBranch | None, *, can_expire: bool = True
    ) -> NeonBranch:
        template = parent.branch_id if parent else self.parent_database
        if parent is not None:
            self._terminate_connections(template)
        self._clone(template, name)
        return self._branch(name, parent_id=template)

    def create_readonly(self, name: str, source: NeonBranch) -> NeonBranch:
        """A clone of ``source`` that a login role may only read.

        A clone, not ``source`` itself: connections to a database block cloning it,
        and the migration branch is cloned for every reset.
        """
        if not self.can_create_roles:
            raise ServerError(
                f"Read-only access needs a login role that may only read, and the role in "
                f"{mask_url(self.admin_url)} cannot create roles. Grant it CREATEROLE, or use "
                "another role in --neon-local-url."
            )
        self._terminate_connections(source.branch_id)
        self._clone(source.branch_id, name)
        try:
            url = self._read_only_url(name)
        except BaseException:
            with contextlib.suppress(ServerError):  # not recorded yet: nobody else would drop it
                self._drop_database(name)
                self._drop_roles(name)
            raise
        return self._branch(name, parent_id=source.branch_id, read_only=True, url=url)

    def _read_only_url(self, name: str) -> str:
        """The role that may only read the clone ``name``, and the URL that reaches it:
        on a hot standby of the embedded server, else with read-only startup options."""
        password = read_only_role(self._execute, replace_database(self.admin_url, name), name)
        url = replace_database(self.admin_url, name, user=name, password=password)
        if self.embedded_server is None:
            # Startup options override whatever the role sets for itself later.
            return url + "?options=-c%20default_transaction_read_only%3Don"
        from ..server.embedded import EmbeddedServer
        from ..server.standby import start_hot_standby

        kept = self.embedded_server.get("kept_dir")
        if kept:
            standby = self._follow_on_kept_standby(Path(kept), name)
        else:
            standby = start_hot_standby(EmbeddedServer.from_state(self.embedded_server))
            # The credentials work on the standby only, which cannot write.
            self._execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(name)))
        return url.replace(f":{urlsplit(url).port}/", f":{standby.port}/", 1)

    def _follow_on_kept_standby(self, kept_dir: Path, name: str) -> Any:
        """The kept server's standby, once it shows the clone and role ``name``; the role
        joins the readers the server itself refuses."""
        from ..kept_server import kept_standby, renew_standby
        from ..server.standby import READERS, StandbyStalled, replay_until

        # A sequence's WAL runs up to 32 values ahead of it (nextval logs in advance),
        # and the standby shows what the WAL says: log each one's exact position.
        with psycopg.connect(replace_database(self.admin_url, name), autocommit=True) as clone:
            clone.execute(_EXACT_SEQUENCES)
        readers = sql.Identifier(READERS)  # made with the kept server (refuse_readers)
        # Committed with the WAL flushed (the server's commits are asynchronous): the
        # standby receives only flushed WAL, and this covers everything before it too.
        self._execute(
            sql.SQL("BEGIN; SET LOCAL synchronous_commit = on; GRANT {} TO {}; COMMIT").format(
                readers, sql.Identifier(name)
            )
        )
        standby = kept_standby(kept_dir)
        position = self._execute("SELECT pg_current_wal_flush_lsn()::text")[0][0]
        try:
            replay_until(standby, position)
        except StandbyStalled as stalled:
            warnings.warn(f"{stalled} It was replaced by a fresh copy.", RuntimeWarning, 2)
            standby = renew_standby(kept_dir, standby)
            replay_until(standby, position)  # a new copy: at once
        return standby

    def seal(self, branch: NeonBranch) -> list[list[Any]]:
        """After migrations: the change tracking of ``inplace`` installed (every copy
        inherits it), and no session left on a database that is cloned from."""
        sequences = self._instrument(branch.branch_id)
        self._terminate_connections(branch.branch_id)
        return sequences

    def _instrument(self, database: str) -> list[list[Any]]:
        url = replace_database(self.admin_url, database)
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
                inplace.instrument(connection)
                return isolation.sequence_state(connection)
        except psycopg.Error as error:
            raise ServerError(
                f"Could not prepare the migrated database {database!r} for resets in place: "
                f"{mask_text(str(error)).strip()}"
            ) from None

    def reset_branch(self, branch: NeonBranch, source: NeonBranch) -> None:
        """Replace the database: rename a spare copy into place (or clone one now);
        then start the next spare.

        The fallback of ``after_test`` for what cannot be put back in place
        (DDL, large objects). The used database is renamed away and dropped in
        the background, by the thread that makes the next spare, at low CPU
        priority.
        """
        self._release_connections(branch.branch_id)
        spare = self._spares.pop(branch.branch_id, None)
        used = f"{branch.branch_id}_used"
        if spare is not None and spare.template == source.branch_id and spare.ready():
            self._terminate_connections(branch.branch_id)
            self._rename(branch.branch_id, used)
            self._rename(spare.name, branch.branch_id)
        else:
            if spare is not None:
                spare.ready()
                self._drop_database(spare.name)
            self._drop_database(branch.branch_id)
            self._terminate_connections(source.branch_id)
            self._clone(source.branch_id, branch.branch_id)
            if branch.branch_id in self._tracked and self._superuser_role():
                inplace.enable_tracking(self._admin(), branch.branch_id)
        if branch.branch_id in self._tracked:
            self._warming[branch.branch_id] = WarmConnection(
                replace_database(self.admin_url, branch.branch_id), self._restore_options()
            )
        self._spares[branch.branch_id] = SpareClone(
            self.admin_url,
            source.branch_id,
            f"{branch.branch_id}_spare",
            self._clone,
            drop_first=used,
            track=branch.branch_id in self._tracked and self._superuser_role(),
        )

    def delete_branch(self, branch: NeonBranch) -> None:
        self._release_connections(branch.branch_id)
        self._discard_spare(branch.branch_id)
        kept = (self.embedded_server or {}).get("kept_dir")
        if branch.read_only and self.embedded_server and not kept:
            from ..server.standby import stop_hot_standby

            stop_hot_standby(Path(self.embedded_server["run_dir"]))
        self._drop_database(branch.branch_id)
        if branch.read_only:
            self._drop_roles(branch.branch_id)

    def _discard_spare(self, branch_id: str) -> None:
        spare = self._spares.pop(branch_id, None)
        if spare is not None:
            spare.ready()
            self._drop_database(spare.name)
            self._drop_database(f"{branch_id}_used")

    def restore_cached(self, branch: NeonBranch, cache_name: str) -> bool:
        """Make ``branch`` a copy of the cached migrated state, if the server has it."""
        with self._cache_lock(cache_name):
            if not self._execute("SELECT 1 FROM pg_database WHERE datname = %s", (cache_name,)):
                return False
            self._drop_database(branch.branch_id)
            self._clone(cache_name, branch.branch_id)
        return True

    def store_cached(self, branch: NeonBranch, cache_name: str, project_prefix: str) -> None:
        """Keep a copy of the migrated ``branch`` for later runs; drop this project's older ones.

        Runs sharing a server (parallel CI jobs on one service) take turns: a
        run that finds the entry already stored by another keeps that one. The
        branch is instrumented first, so that ``seal`` finds the cached copies ready.
        """
        self._instrument(branch.branch_id)
        with self._cache_lock(cache_name):
            if self._execute("SELECT 1 FROM pg_database WHERE datname = %s", (cache_name,)):
                return
            stale = self._execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s AND datname <> %s",
                (project_prefix.replace("_", "\\_") + "%", cache_name),
            )
            for (name,) in stale:
                self._drop_database(name)
            self._terminate_connections(branch.branch_id)
            self._clone(branch.branch_id, cache_name)
            self._comment(cache_name, {"cache": cache_name})

    @contextlib.contextmanager
    def _cache_lock(self, cache_name: str) -> Iterator[None]:
        """A server-wide lock per project's cache entries (session advisory lock)."""
        project = cache_name.rsplit("_", 1)[0]
        key = int.from_bytes(hashlib.sha256(project.encode()).digest()[:8], "big", signed=True)
        self._execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            with contextlib.suppress(ServerError):
                self._execute("SELECT pg_advisory_unlock(%s)", (key,))

    def keep_branch(self, branch: NeonBranch) -> None:
        self._comment(branch.branch_id, {"kept": True})

    # -- write detection and restore in place -------------------------------------------

    def write_marker(self, branch: NeonBranch) -> None:
        """Nothing to take: the database logs what changes. Logging starts before the
        branch's first test (per database setting, for the sessions opened after it)."""
        if branch.branch_id not in self._tracked:
            if self._superuser_role():  # otherwise always on (see inplace)
                self._detect(lambda admin: inplace.enable_tracking(admin, branch.branch_id))
            self._tracked.add(branch.branch_id)

    def after_test(
        self,
        branch: NeonBranch,
        source: NeonBranch,
        marker: Any,
        *,
        committed_only: bool = False,
        sequences: list[list[Any]] | None = None,
    ) -> str:
        """Put back what the test changed, in place; replace the database when that
        cannot be done. Rolled-back writes left nothing to put back but sequences,
        so ``committed_only`` needs nothing more here."""
        if branch.branch_id not in self._tracked:
            self.reset_branch(branch, source)
            return SWAPPED
        outcome = self._restore_in_place(branch)
        if outcome == inplace.SWAP:
            self.reset_branch(branch, source)
            return SWAPPED
        if not outcome.startswith(inplace.RESTORED):
            return CLEAN
        for table in outcome.split(":", 1)[1].splitlines() if ":" in outcome else ():
            self._restorers.run(
                branch.branch_id,
                replace_database(self.admin_url, branch.branch_id),
                lambda connection, table=table: connection.execute(f"VACUUM {table}"),
                options=self._restore_options(),
            )
        return RESTORED

    def _restore_in_place(self, branch: NeonBranch) -> str:
        url = replace_database(self.admin_url, branch.branch_id)
        options = self._restore_options()
        warming = self._warming.pop(branch.branch_id, None)
        prepared = warming.take() if warming is not None else None
        if prepared is not None:
            self._restorers.adopt(branch.branch_id, prepared)
        for _ in range(3):
            try:
                outcome = self._restorers.run(branch.branch_id, url, inplace.reset, options=options)
            except psycopg.OperationalError as error:
                if error.sqlstate is None:  # the server went away
                    raise ServerError(
                        f"Lost the connection to PostgreSQL at {mask_url(url)}: "
                        f"{mask_text(str(error)).strip()}\n{remedy(self.server_label)}"
                    ) from None
                return inplace.SWAP  # a lock not granted in time, …: replace the database
            except psycopg.Error:
                self._restorers.forget(branch.branch_id)
                return inplace.SWAP
            if not outcome.startswith(inplace.BUSY):
                return outcome
            # Sessions still in a transaction: end them, then look again (their writes
            # are then either committed, and logged, or rolled back).
            pids = [int(pid) for pid in outcome.split(":", 1)[1].split(",")]
            self._terminate_pids(branch.branch_id, pids)
        return inplace.SWAP

    def _superuser_role(self) -> bool:
        if self._superuser is None:
            self._superuser = bool(
                self._execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")[0][0]
            )
        return self._superuser

    def _restore_options(self) -> str:
        return inplace.RESTORE_OPTIONS if self._superuser_role() else inplace.LIMITED_OPTIONS

    # -- housekeeping ---------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "admin_url": self.admin_url,
            "run_id": self.run_id,
            "owner_pid": self.owner_pid,
            "parent_database": self.parent_database,
            "server_label": self.server_label,
            "embedded_server": self.embedded_server,
            "can_create_roles": self.can_create_roles,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LocalBackend:
        backend = cls(
            state["admin_url"],
            run_id=state["run_id"],
            owner_pid=state["owner_pid"],
            parent_database=state["parent_database"],
            server_label=state["server_label"],
            embedded_server=state.get("embedded_server"),
        )
        backend.can_create_roles = state.get("can_create_roles", True)
        return backend

    def drop_abandoned(self, is_abandoned: Any) -> list[str]:
        """Drop databases (and roles) whose marker names a run for which ``is_abandoned`` holds."""
        rows = self._execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE shobj_description(oid, 'pg_database') LIKE %s",
            (f'{{"{MARKER_KEY}"%',),
        )
        dropped = []
        for name, comment in rows:
            try:
                marker = json.loads(comment)[MARKER_KEY]
            except (ValueError, KeyError, TypeError):
                continue
            if "cache" not in marker and is_abandoned(marker):
                self._drop_database(name)
                self._drop_roles(name)
                dropped.append(name)
        return dropped

    def _release_connections(self, branch_id: str) -> None:
        """Close this process's own connections to the branch (restorer, warm one)."""
        warming = self._warming.pop(branch_id, None)
        prepared = warming.take() if warming is not None else None
        if prepared is not None:
            prepared.close()
        self._restorers.forget(branch_id)

    def close(self) -> None:
        for branch_id in list(self._warming):
            self._release_connections(branch_id)
        for branch_id in list(self._spares):
            with contextlib.suppress(ServerError):
                self._discard_spare(branch_id)
        self._restorers.close()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- helpers --------------------------------------------------------------------------

    def _branch(
        self, name: str, *, parent_id: str, read_only: bool = False, url: str | None = None
    ) -> NeonBranch:
        return NeonBranch(
            branch_id=name,
            project_id=None,
            connection_string=url or replace_database(self.admin_url, name),
            host=urlsplit(self.admin_url).hostname,
            parent_id=parent_id,
            endpoint_id=None,
            name=name,
            read_only=read_only,
        )

    def _clone(
        self, template: str, name: str, connection: psycopg.Connection | None = None
    ) -> None:
        """Clone ``template`` as ``name``, closed to PUBLIC (only the administrator and the
        roles granted CONNECT may reach it)."""
        strategy = sql.SQL(" STRATEGY FILE_COPY") if self.server_version >= 150000 else sql.SQL("")
        self._execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
                sql.Identifier(name), sql.Identifier(template), strategy
            ),
            connection=connection,
        )
        owner = {"run": self.run_id, "pid": self.owner_pid, "host": socket.gethostname()}
        owner["pidns"] = pid_namespace()
        self._comment(name, owner, connection, close_to_public=True)

    def _drop_roles(self, name: str) -> None:
        """The read-only roles of a database (if it had any)."""
        for role in (name, definer_role(name)):
            self._execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
