"""Read-only access that no SQL can turn into a write: one test per attack class.

Each attack runs with the read-only branch's own credentials, first as is and
then after ``SET default_transaction_read_only = off`` (and the other ways to
ask for a read-write transaction), and must be refused; afterwards every
database and the role are exactly as before. The embedded server's read-only
access is a hot standby; a server given with --neon-local-url gets a confined
role, whose two open classes (the role's power over itself) are pinned here so
that the README's list stays true.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

from pytest_neon_alembic.backends.local import LocalBackend
from pytest_neon_alembic.branch import NeonBranch
from pytest_neon_alembic.server.embedded import EmbeddedServer
from pytest_neon_alembic.urls import replace_database

MIGRATION = """
CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL);
INSERT INTO items (label) VALUES ('one'), ('two');
CREATE FUNCTION add_item(label text) RETURNS void LANGUAGE sql SECURITY DEFINER
    AS $$ INSERT INTO items (label) VALUES (label) $$;
CREATE FUNCTION count_items_as_owner() RETURNS bigint LANGUAGE sql SECURITY DEFINER
    AS $$ SELECT count(*) FROM items $$;
CREATE FUNCTION count_items_volatile() RETURNS bigint LANGUAGE plpgsql VOLATILE
    AS $$ BEGIN RETURN (SELECT count(*) FROM items); END $$;
"""

READ_WRITE = (
    "SET default_transaction_read_only = off",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
)

# attack class -> statements, each tried alone and after READ_WRITE
ATTACKS: dict[str, tuple[str, ...]] = {
    "plain writes": (
        "INSERT INTO items (label) VALUES ('x')",
        "UPDATE items SET label = 'x'",
        "DELETE FROM items",
        "TRUNCATE items",
    ),
    "security definer function": ("SELECT add_item('x')",),
    "ddl and temporary tables": (
        "CREATE TABLE t (a int)",
        "CREATE TEMP TABLE t (a int)",
        "CREATE SCHEMA s",
        "COMMENT ON TABLE items IS 'x'",
    ),
    "sequences": ("SELECT nextval('items_id_seq')", "SELECT setval('items_id_seq', 99)"),
    "large objects": ("SELECT lo_create(0)", "SELECT lo_from_bytea(0, 'x')"),
    "alter role settings": (
        "ALTER ROLE CURRENT_USER SET search_path = pg_catalog",
        "ALTER ROLE CURRENT_USER SET default_transaction_read_only = off",
    ),
    "alter role password": ("ALTER ROLE CURRENT_USER PASSWORD 'changed-by-a-test'",),
    "alter default privileges": ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",),
}
# What a confined role in one server cannot be kept from (README, "What can go wrong").
OPEN_ON_A_GIVEN_SERVER = {"alter role settings", "alter role password", "alter default privileges"}


class Setting:
    """A migrated branch, the run's other databases, and read-only access to the first."""

    def __init__(self, backend: LocalBackend, admin_url: str) -> None:
        run = backend.run_id
        self.backend = backend
        self.admin_url = admin_url
        self.migration = backend.create_branch(f"pytest_{run}_migration", None)
        with psycopg.connect(self.migration.connection_string, autocommit=True) as connection:
            connection.execute(MIGRATION)
        self.others = [
            backend.create_branch(f"pytest_{run}_{suffix}", self.migration)
            for suffix in ("dirty", "isolated_main")
        ]
        backend.store_cached(self.migration, f"pytest_cache_{run}", f"pytest_cache_{run}")
        self.readonly = backend.create_readonly(f"pytest_{run}_readonly", self.migration)

    def state(self) -> list:
        """Everything an attack could change: rows, catalogs, the role's settings."""
        rows = []
        for branch in (self.migration, *self.others):
            with psycopg.connect(branch.connection_string, autocommit=True) as connection:
                rows.append(connection.execute("SELECT * FROM items ORDER BY id").fetchall())
        with psycopg.connect(self.readonly.connection_string, autocommit=True) as connection:
            rows.append(connection.execute("SELECT * FROM items ORDER BY id").fetchall())
            rows.append(connection.execute("SELECT count(*) FROM pg_default_acl").fetchall())
            rows.append(connection.execute("SELECT count(*) FROM pg_class").fetchall())
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            rows.append(
                connection.execute(
                    "SELECT s.setconfig, r.rolpassword FROM pg_authid r LEFT JOIN "
                    "pg_db_role_setting s ON s.setrole = r.oid WHERE r.rolname = %s",
                    (self.readonly.branch_id,),
                ).fetchall()
            )
        return rows

    def undo_role_changes(self) -> None:
        """What the open classes changed on a given server, put back as the plugin left it."""
        role = self.readonly.branch_id
        password = urlsplit(self.readonly.connection_string).password
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'ALTER ROLE "{role}" RESET ALL')
            connection.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
            connection.execute(f"ALTER ROLE \"{role}\" PASSWORD '{password}'")
        url = replace_database(self.admin_url, role)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                f'ALTER DEFAULT PRIVILEGES FOR ROLE "{role}" REVOKE SELECT ON TABLES FROM PUBLIC'
            )

    def refused(self, statement: str, prefix: tuple[str, ...] = ()) -> bool:
        with psycopg.connect(self.readonly.connection_string, autocommit=True) as connection:
            for setting in prefix:
                try:
                    connection.execute(setting)
                except psycopg.Error:
                    return True  # refused even the switch to read-write
            try:
                connection.execute(statement)
            except psycopg.Error:
                return True
        return False


def _setting(admin_url: str, embedded_server: dict | None) -> Iterator[Setting]:
    run_id = "ro" + uuid.uuid4().hex[:8]
    backend = LocalBackend(
        admin_url, run_id=run_id, owner_pid=os.getpid(), embedded_server=embedded_server
    )
    if embedded_server is not None:
        backend.close_to_public("postgres", "template1")  # as the plugin does at start
    try:
        setting = Setting(backend, admin_url)
        yield setting
        backend.delete_branch(setting.readonly)
    finally:
        backend.drop_abandoned(lambda marker: marker.get("run") == run_id)
        backend._drop_database(f"pytest_cache_{run_id}")
        backend.close()


@pytest.fixture(scope="module")
def standby_setting(embedded_server: EmbeddedServer) -> Iterator[Setting]:
    """The embedded backend: read-only access is a hot standby of the server."""
    yield from _setting(embedded_server.admin_url, embedded_server.to_state())


@pytest.fixture(scope="module")
def confined_setting(embedded_server: EmbeddedServer) -> Iterator[Setting]:
    """A server given with --neon-local-url: a confined role on the server itself."""
    yield from _setting(embedded_server.admin_url, None)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_embedded_read_only_refuses(standby_setting: Setting, attack: str) -> None:
    before = standby_setting.state()
    for statement in ATTACKS[attack]:
        assert standby_setting.refused(statement), statement
        assert standby_setting.refused(statement, READ_WRITE), statement
    assert standby_setting.state() == before


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_given_server_read_only_refuses_all_but_the_role_itself(
    confined_setting: Setting, attack: str
) -> None:
    before = confined_setting.state()
    outcomes = {
        confined_setting.refused(statement, prefix)
        for statement in ATTACKS[attack]
        for prefix in ((), READ_WRITE)
    }
    if attack in OPEN_ON_A_GIVEN_SERVER:
        confined_setting.undo_role_changes()
        assert False in outcomes, f"{attack} is refused now: update README and this list"
        return
    assert outcomes == {True}
    assert confined_setting.state() == before


@pytest.mark.parametrize("setting_name", ["standby_setting", "confined_setting"])
def test_read_only_credentials_reach_no_other_database(
    request: pytest.FixtureRequest, setting_name: str, embedded_server: EmbeddedServer
) -> None:
    """Migration branch (every reset's source), dirty and isolated branches, the cached
    template, the server's own databases: on the standby and on the primary."""
    setting: Setting = request.getfixturevalue(setting_name)
    readonly = setting.readonly
    ports = {urlsplit(readonly.connection_string).port, embedded_server.port}
    names = [b.branch_id for b in (setting.migration, *setting.others)]
    names.append(f"pytest_cache_{setting.backend.run_id}")
    if setting_name == "standby_setting":  # on a given server, those are not the run's
        names += ["postgres", "template1"]
    for port in ports:
        for name in names:
            url = replace_database(readonly.connection_string, name).replace(
                f":{urlsplit(readonly.connection_string).port}/", f":{port}/"
            )
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(url.split("?")[0], connect_timeout=5).close()


@pytest.mark.parametrize("setting_name", ["standby_setting", "confined_setting"])
def test_reads_are_unaffected(request: pytest.FixtureRequest, setting_name: str) -> None:
    setting: Setting = request.getfixturevalue(setting_name)
    with psycopg.connect(setting.readonly.connection_string) as connection:
        assert connection.execute("SELECT count(*) FROM items").fetchone() == (2,)
        assert connection.execute("SELECT count_items_as_owner()").fetchone() == (2,)
        assert connection.execute("SELECT count_items_volatile()").fetchone() == (2,)
        assert 0 <= connection.execute("SELECT random()").fetchone()[0] < 1


def test_readonly_branch_reflects_the_migrated_state(standby_setting: Setting) -> None:
    branch: NeonBranch = standby_setting.readonly
    assert branch.read_only
    with psycopg.connect(branch.connection_string) as connection:
        assert connection.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
