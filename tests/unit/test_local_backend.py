"""backends.local.LocalBackend against the real embedded PostgreSQL server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql

from pytest_neon_alembic.backend_start import marker_is_abandoned
from pytest_neon_alembic.backends.local import LocalBackend
from pytest_neon_alembic.branch import NeonBranch
from pytest_neon_alembic.errors import ServerError
from pytest_neon_alembic.processes import pid_namespace
from pytest_neon_alembic.urls import replace_database

Names = Callable[[str], str]


def query(url: str, statement: str, params: tuple | None = None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def execute_script(url: str, *statements: str) -> None:
    with psycopg.connect(url) as connection:  # one committed transaction
        for statement in statements:
            connection.execute(statement)


def database_exists(admin_url: str, name: str) -> bool:
    return bool(query(admin_url, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def role_exists(admin_url: str, name: str) -> bool:
    return bool(query(admin_url, "SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)))


SCHEMA = (
    "CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL)",
    "INSERT INTO items (label) VALUES ('one'), ('two'), ('three')",
)


@pytest.fixture
def migrated(local_backend: LocalBackend, unique_name: Names) -> NeonBranch:
    """A "migration branch": a table whose sequence was used, sealed like the plugin does."""
    branch = local_backend.create_branch(unique_name("migration"), None)
    execute_script(branch.connection_string, *SCHEMA)
    local_backend.seal(branch)
    return branch


@pytest.fixture
def isolated(local_backend: LocalBackend, migrated: NeonBranch, unique_name: Names) -> NeonBranch:
    return local_backend.create_branch(unique_name("isolated"), migrated)


# -- creating branches -----------------------------------------------------------------------------


def test_create_branch_from_template1(
    local_backend: LocalBackend, unique_name: Names, admin_url: str
) -> None:
    name = unique_name("root")
    branch = local_backend.create_branch(name, None)

    assert branch.branch_id == name
    assert branch.name == name
    assert branch.parent_id == "template1"
    assert branch.read_only is False
    assert branch.host == "127.0.0.1"
    assert query(branch.connection_string, "SELECT current_database()") == [(name,)]
    assert query(
        branch.connection_string,
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
        "'information_schema')",
    ) == [(0,)]
    comment = query(
        admin_url,
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (name,),
    )[0][0]
    marker = json.loads(comment)["pytest_neon_alembic"]
    assert marker["run"] == local_backend.run_id
    assert marker["pid"] == os.getpid()
    assert marker["host"] == socket.gethostname()


def test_create_branch_from_another_branch_copies_its_state(
    local_backend: LocalBackend, unique_name: Names
) -> None:
    parent = local_backend.create_branch(unique_name("parent"), None)
    execute_script(parent.connection_string, *SCHEMA)

    child = local_backend.create_branch(unique_name("child"), parent)

    assert child.parent_id == parent.branch_id
    assert query(child.connection_string, "SELECT label FROM items ORDER BY id") == [
        ("one",),
        ("two",),
        ("three",),
    ]
    execute_script(child.connection_string, "DELETE FROM items")
    assert query(parent.connection_string, "SELECT count(*) FROM items") == [(3,)]


def test_create_branch_terminates_connections_to_its_parent(
    local_backend: LocalBackend, unique_name: Names
) -> None:
    parent = local_backend.create_branch(unique_name("parent"), None)
    with psycopg.connect(parent.connection_string, autocommit=True) as lingering:
        child = local_backend.create_branch(unique_name("child"), parent)
        assert query(child.connection_string, "SELECT 1") == [(1,)]
        with pytest.raises(psycopg.OperationalError):
            lingering.execute("SELECT 1")


# -- read-only access ------------------------------------------------------------------------------


@pytest.fixture
def readonly(local_backend: LocalBackend, migrated: NeonBranch, unique_name: Names) -> NeonBranch:
    return local_backend.create_readonly(unique_name("readonly"), migrated)


@pytest.fixture
def readonly_connection(readonly: NeonBranch) -> Iterator[psycopg.Connection]:
    with psycopg.connect(readonly.connection_string, autocommit=True) as connection:
        yield connection


def test_readonly_branch_can_select(readonly: NeonBranch, migrated: NeonBranch) -> None:
    assert readonly.read_only is True
    assert readonly.parent_id == migrated.branch_id
    assert readonly.connection_string != migrated.connection_string
    assert query(readonly.connection_string, "SELECT current_user") == [(readonly.branch_id,)]
    assert query(readonly.connection_string, "SELECT label FROM items ORDER BY id") == [
        ("one",),
        ("two",),
        ("three",),
    ]
    password = psycopg.conninfo.conninfo_to_dict(readonly.connection_string)["password"]
    assert password not in repr(readonly)


def test_readonly_branch_refuses_insert(readonly_connection: psycopg.Connection) -> None:
    with pytest.raises(pg_errors.ReadOnlySqlTransaction):
        readonly_connection.execute("INSERT INTO items (label) VALUES ('x')")


def test_readonly_branch_refuses_insert_even_after_turning_read_only_off(
    readonly_connection: psycopg.Connection,
) -> None:
    readonly_connection.execute("SET default_transaction_read_only = off")
    assert readonly_connection.execute("SHOW default_transaction_read_only").fetchone() == ("off",)
    with pytest.raises(pg_errors.InsufficientPrivilege):
        readonly_connection.execute("INSERT INTO items (label) VALUES ('x')")
    with pytest.raises(pg_errors.InsufficientPrivilege):
        readonly_connection.execute("UPDATE items SET label = 'y'")
    with pytest.raises(pg_errors.InsufficientPrivilege):
        readonly_connection.execute("DELETE FROM items")
    assert readonly_connection.execute("SELECT count(*) FROM items").fetchone() == (3,)


@pytest.mark.parametrize("read_only_off", [False, True], ids=["default", "read-only-off"])
def test_readonly_branch_refuses_nextval(
    readonly_connection: psycopg.Connection, read_only_off: bool
) -> None:
    if read_only_off:
        readonly_connection.execute("SET default_transaction_read_only = off")
    with pytest.raises((pg_errors.InsufficientPrivilege, pg_errors.ReadOnlySqlTransaction)):
        readonly_connection.execute("SELECT nextval('items_id_seq')")
    if read_only_off:
        with pytest.raises(pg_errors.InsufficientPrivilege):
            readonly_connection.execute("SELECT setval('items_id_seq', 100)")


@pytest.mark.parametrize("read_only_off", [False, True], ids=["default", "read-only-off"])
def test_readonly_branch_refuses_create_table(
    readonly_connection: psycopg.Connection, read_only_off: bool
) -> None:
    if read_only_off:
        readonly_connection.execute("SET default_transaction_read_only = off")
    with pytest.raises((pg_errors.InsufficientPrivilege, pg_errors.ReadOnlySqlTransaction)):
        readonly_connection.execute("CREATE TABLE intruder (id int)")
    if read_only_off:
        with pytest.raises(pg_errors.InsufficientPrivilege):
            readonly_connection.execute("CREATE SCHEMA intruder")


def test_readonly_branch_refuses_temp_tables(readonly_connection: psycopg.Connection) -> None:
    readonly_connection.execute("SET default_transaction_read_only = off")
    with pytest.raises(pg_errors.InsufficientPrivilege):
        readonly_connection.execute("CREATE TEMP TABLE scratch (id int)")


def test_delete_readonly_branch_drops_its_role(
    local_backend: LocalBackend, readonly: NeonBranch, admin_url: str
) -> None:
    assert database_exists(admin_url, readonly.branch_id)
    assert role_exists(admin_url, readonly.branch_id)

    local_backend.delete_branch(readonly)

    assert not database_exists(admin_url, readonly.branch_id)
    assert not role_exists(admin_url, readonly.branch_id)
    local_backend.delete_branch(readonly)  # deleting again is fine


def test_delete_branch_drops_the_database_even_with_connections(
    local_backend: LocalBackend, isolated: NeonBranch, admin_url: str
) -> None:
    with psycopg.connect(isolated.connection_string, autocommit=True):
        local_backend.delete_branch(isolated)
    assert not database_exists(admin_url, isolated.branch_id)


# -- seal and reset --------------------------------------------------------------------------------


def test_seal_installs_change_tracking_once(
    local_backend: LocalBackend, unique_name: Names
) -> None:
    branch = local_backend.create_branch(unique_name("seal"), None)
    execute_script(branch.connection_string, *SCHEMA)

    assert local_backend.seal(branch) == [["public.items_id_seq", 3, True]]

    triggers = "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pytest_neon_alembic%'"
    pristine = "SELECT count(*) FROM pytest_neon_alembic.p_1"
    assert query(branch.connection_string, triggers) == [(4,)]
    assert query(branch.connection_string, pristine) == [(3,)]
    signature = "SELECT obj_description('pytest_neon_alembic'::regnamespace)"
    before = query(branch.connection_string, signature)
    local_backend.seal(branch)  # unchanged schema: kept as it is
    assert query(branch.connection_string, signature) == before
    execute_script(branch.connection_string, "CREATE TABLE later (id int PRIMARY KEY)")
    local_backend.seal(branch)  # a new table: instrumented again, with it
    assert query(branch.connection_string, triggers) == [(8,)]


def test_seal_terminates_connections_to_the_branch(
    local_backend: LocalBackend, unique_name: Names
) -> None:
    branch = local_backend.create_branch(unique_name("seal"), None)
    with psycopg.connect(branch.connection_string, autocommit=True) as lingering:
        local_backend.seal(branch)
        with pytest.raises(psycopg.OperationalError):
            lingering.execute("SELECT 1")


def test_reset_branch_restores_data_schema_and_sequences(
    local_backend: LocalBackend, migrated: NeonBranch, isolated: NeonBranch
) -> None:
    url = isolated.connection_string
    execute_script(
        url,
        "INSERT INTO items (label) VALUES ('four')",
        "UPDATE items SET label = 'changed' WHERE id = 1",
        "DELETE FROM items WHERE id = 2",
        "CREATE TABLE extra (id int)",
        "ALTER TABLE items ADD COLUMN note text",
        "SELECT nextval('items_id_seq') FROM generate_series(1, 10)",
    )
    assert query(url, "SELECT to_regclass('extra') IS NOT NULL") == [(True,)]

    local_backend.reset_branch(isolated, migrated)

    assert query(url, "SELECT id, label FROM items ORDER BY id") == [
        (1, "one"),
        (2, "two"),
        (3, "three"),
    ]
    assert query(url, "SELECT to_regclass('extra') IS NULL") == [(True,)]
    columns = query(
        url,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'items' "
        "ORDER BY ordinal_position",
    )
    assert columns == [("id",), ("label",)]
    assert query(url, "SELECT last_value, is_called FROM items_id_seq") == [(3, True)]
    assert query(url, "SELECT nextval('items_id_seq')") == [(4,)]


def test_reset_branch_terminates_open_connections(
    local_backend: LocalBackend, migrated: NeonBranch, isolated: NeonBranch
) -> None:
    with psycopg.connect(isolated.connection_string) as lingering:
        lingering.execute("INSERT INTO items (label) VALUES ('uncommitted')")
        local_backend.reset_branch(isolated, migrated)
        with pytest.raises(psycopg.OperationalError):
            lingering.execute("SELECT 1")
    assert query(isolated.connection_string, "SELECT count(*) FROM items") == [(3,)]


def test_reset_branch_leaves_the_source_untouched(
    local_backend: LocalBackend, migrated: NeonBranch, isolated: NeonBranch
) -> None:
    execute_script(isolated.connection_string, "DELETE FROM items")
    local_backend.reset_branch(isolated, migrated)
    local_backend.reset_branch(isolated, migrated)  # twice in a row is fine
    assert query(migrated.connection_string, "SELECT count(*) FROM items") == [(3,)]
    assert query(isolated.connection_string, "SELECT count(*) FROM items") == [(3,)]


# -- cleaning up after killed runs -----------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


def test_drop_abandoned_drops_only_databases_of_dead_runs_on_this_host(
    admin_url: str, local_backend: LocalBackend, unique_name: Names
) -> None:
    dead = LocalBackend(admin_url, run_id="deadrun", owner_pid=_dead_pid())
    try:
        dead_branch = dead.create_branch(unique_name("dead"), None)
        dead_readonly = dead.create_readonly(unique_name("deadro"), dead_branch)
        kept = dead.create_branch(unique_name("kept"), None)
        dead.keep_branch(kept)
    finally:
        dead.close()
    alive_branch = local_backend.create_branch(unique_name("alive"), None)
    elsewhere = unique_name("otherhost")
    unmarked = unique_name("unmarked")
    query(admin_url, f'CREATE DATABASE "{elsewhere}"')
    query(admin_url, f'CREATE DATABASE "{unmarked}"')
    foreign_marker = {"run": "x", "pid": dead.owner_pid, "host": "some-other-machine"}
    query(
        admin_url,
        sql.SQL("COMMENT ON DATABASE {} IS {}")
        .format(
            sql.Identifier(elsewhere),
            sql.Literal(json.dumps({"pytest_neon_alembic": foreign_marker})),
        )
        .as_string(),
    )
    query(admin_url, f"COMMENT ON DATABASE \"{unmarked}\" IS 'somebody else''s database'")
    # Same host name, a pid that is dead here, but another PID namespace (a container).
    other_namespace = unique_name("otherns")
    query(admin_url, f'CREATE DATABASE "{other_namespace}"')
    namespaced = {**foreign_marker, "host": socket.gethostname(), "pidns": "pid:[4026531836]x"}
    query(
        admin_url,
        sql.SQL("COMMENT ON DATABASE {} IS {}")
        .format(
            sql.Identifier(other_namespace),
            sql.Literal(json.dumps({"pytest_neon_alembic": namespaced})),
        )
        .as_string(),
    )
    try:
        dropped = local_backend.drop_abandoned(marker_is_abandoned)

        assert set(dropped) == {dead_branch.branch_id, dead_readonly.branch_id}
        assert not database_exists(admin_url, dead_branch.branch_id)
        assert not database_exists(admin_url, dead_readonly.branch_id)
        assert not role_exists(admin_url, dead_readonly.branch_id)
        survivors = (alive_branch.branch_id, kept.branch_id, elsewhere, unmarked, other_namespace)
        for survivor in survivors:
            assert database_exists(admin_url, survivor), survivor
    finally:
        for name in (kept.branch_id, elsewhere, unmarked, other_namespace):
            query(admin_url, f'DROP DATABASE IF EXISTS "{name}"')


def test_drop_abandoned_uses_the_given_predicate(
    admin_url: str, local_backend: LocalBackend, unique_name: Names
) -> None:
    branch = local_backend.create_branch(unique_name("mine"), None)
    seen: list[dict] = []

    def never(marker: dict) -> bool:
        seen.append(marker)
        return False

    assert local_backend.drop_abandoned(never) == []
    assert database_exists(admin_url, branch.branch_id)
    mine = {"run": local_backend.run_id, "pid": os.getpid(), "host": socket.gethostname()}
    assert {**mine, "pidns": pid_namespace()} in seen


# -- privileges and connection errors --------------------------------------------------------------


@pytest.fixture
def limited_role(admin_url: str, unique_name: Names) -> Iterator[Callable[[str], str]]:
    """Makes login roles with the given attributes; gives their admin URL."""
    made: list[str] = []

    def make(attributes: str, password: str | None = None) -> str:
        name = unique_name("role")
        password = password or "limited-Pa55-" + name[-6:]
        query(
            admin_url,
            sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}")
            .format(sql.Identifier(name), sql.SQL(attributes), sql.Literal(password))
            .as_string(),
        )
        made.append(name)
        host, port = urlsplit(admin_url).hostname, urlsplit(admin_url).port
        return (
            f"postgresql://{quote(name, safe='')}:{quote(password, safe='')}@{host}:{port}/postgres"
        )

    yield make
    for name in made:
        query(admin_url, f'DROP ROLE IF EXISTS "{name}"')


def test_check_privileges_without_createdb_raises(limited_role: Callable[[str], str]) -> None:
    url = limited_role("NOCREATEDB NOCREATEROLE")
    password = psycopg.conninfo.conninfo_to_dict(url)["password"]
    backend = LocalBackend(url, run_id="nocreatedb", owner_pid=os.getpid())
    try:
        with pytest.raises(ServerError) as caught:
            backend.check_privileges()
    finally:
        backend.close()
    message = str(caught.value)
    assert "CREATEDB" in message
    assert password not in message


def test_check_privileges_without_createrole_blocks_readonly_access(
    limited_role: Callable[[str], str], unique_name: Names
) -> None:
    url = limited_role("CREATEDB NOCREATEROLE")
    backend = LocalBackend(url, run_id="nocreaterole", owner_pid=os.getpid())
    source = NeonBranch("template1", None, url, "127.0.0.1", name="template1")
    try:
        backend.check_privileges()  # CREATEDB is enough to create branches
        assert backend.can_create_roles is False
        with pytest.raises(ServerError, match="CREATEROLE"):
            backend.create_readonly(unique_name("ro"), source)
    finally:
        backend.close()


def test_check_privileges_passes_for_a_superuser(local_backend: LocalBackend) -> None:
    local_backend.check_privileges()
    assert local_backend.can_create_roles is True
    assert local_backend.describe().startswith("local (server PostgreSQL ")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connect_admin_to_a_closed_port_raises_with_the_password_masked() -> None:
    port = _closed_port()
    url = f"postgresql://postgres:Sup3rSecretPw@127.0.0.1:{port}/postgres"
    with pytest.raises(ServerError) as caught:
        LocalBackend.connect_admin(url)
    message = str(caught.value)
    assert "Sup3rSecretPw" not in message
    assert f"postgres:***@127.0.0.1:{port}" in message
    assert "--neon-local-url" in message


def test_a_refused_statement_is_a_server_error(
    local_backend: LocalBackend, unique_name: Names
) -> None:
    with pytest.raises(ServerError, match="does not exist"):
        local_backend.create_branch(
            unique_name("orphan"),
            NeonBranch("no_such_database", None, "postgresql://x", "127.0.0.1"),
        )


def test_backend_state_round_trips_and_repr_masks_the_password(
    local_backend: LocalBackend, admin_url: str
) -> None:
    rebuilt = LocalBackend.from_state(json.loads(json.dumps(local_backend.to_state())))
    try:
        assert rebuilt.to_state() == local_backend.to_state()
        assert query(rebuilt.admin_url, "SELECT 1") == [(1,)]
    finally:
        rebuilt.close()
    password = psycopg.conninfo.conninfo_to_dict(admin_url)["password"]
    assert password not in repr(local_backend)


def test_replace_database_swaps_the_database_and_keeps_the_rest() -> None:
    url = replace_database("postgresql://u:pw@127.0.0.1:5432/postgres?sslmode=disable", "a b")
    assert url == "postgresql://u:pw@127.0.0.1:5432/a%20b?sslmode=disable"
    url = replace_database("postgresql://u:pw@[::1]:5432/postgres", "db", user="ro", password="x/y")
    assert url == "postgresql://ro:x%2Fy@[::1]:5432/db"


def test_replace_database_keeps_percent_encoded_credentials() -> None:
    url = replace_database("postgresql://u%40corp:p%40ss@127.0.0.1:5432/postgres", "other")
    assert url == "postgresql://u%40corp:p%40ss@127.0.0.1:5432/other"


def test_branches_work_with_an_admin_password_that_needs_quoting(
    limited_role: Callable[[str], str], unique_name: Names
) -> None:
    """A generated password with '@', '/' or ':' is percent-encoded in the admin URL."""
    url = limited_role("CREATEDB NOCREATEROLE", password="p@ss/w:rd%1")
    assert "p%40ss%2Fw%3Ard%251" in url
    backend = LocalBackend(url, run_id="quoting", owner_pid=os.getpid())
    try:
        branch = backend.create_branch(unique_name("quoted"), None)
        try:
            assert query(branch.connection_string, "SELECT current_database()") == [
                (branch.branch_id,)
            ]
        finally:
            backend.delete_branch(branch)
    finally:
        backend.close()
