"""The Neon API emulator (tests/neon_emulator), through real HTTP and real PostgreSQL.

Every check goes through what the plugin's Neon backend will use: the real
``neon-api`` 0.3.0 client or ``requests`` against the emulator's loopback port,
and ``psycopg`` connections to the URIs the API hands out. The emulators share
the unit tests' embedded PostgreSQL (``admin_url``), except the ones started
by the public ``neon_emulator`` fixture and by ``python -m tests.neon_emulator``,
which start their own.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from neon_api import NeonAPI
from neon_api.exceptions import NeonAPIError
from psycopg import errors as pg_errors

try:  # tests/ is on sys.path under pytest (its conftest.py has no package)
    from neon_emulator import NeonEmulator, neon_emulator  # neon_emulator: a fixture
except ImportError:  # pragma: no cover - when tests/ is a package
    from tests.neon_emulator import NeonEmulator, neon_emulator  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


class Client:
    """``requests`` against one emulated project, paths relative to the project."""

    def __init__(self, emulator: NeonEmulator, api_key: str | None = None) -> None:
        self.emulator = emulator
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key or emulator.api_key}"
        self.project_url = f"{emulator.base_url}/projects/{emulator.project_id}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.request(method, self.project_url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, json=body, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, json=body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def wait(self, body: dict[str, Any]) -> None:
        """Poll every operation of a response until it is finished."""
        for operation in body.get("operations", []):
            deadline = time.monotonic() + TIMEOUT
            while True:
                answer = self.get(f"/operations/{operation['id']}")
                assert answer.status_code == 200, answer.text
                status = answer.json()["operation"]["status"]
                if status == "finished":
                    break
                assert status in ("scheduling", "running"), status
                assert time.monotonic() < deadline, f"operation {operation} never finished"
                time.sleep(0.01)

    def create_branch(self, name: str | None = None, *, wait: bool = True, **branch: Any) -> dict:
        """A branch with a read_write endpoint; returns the 201 body."""
        if name is not None:
            branch["name"] = name
        answer = self.post("/branches", {"branch": branch, "endpoints": [{"type": "read_write"}]})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        if wait:
            self.wait(body)
        return body

    def uri(self, branch_id: str | None = None, endpoint_id: str | None = None) -> str:
        params = {"database_name": "neondb", "role_name": "neondb_owner"}
        if branch_id:
            params["branch_id"] = branch_id
        if endpoint_id:
            params["endpoint_id"] = endpoint_id
        answer = self.get("/connection_uri", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()["uri"]


def connect(uri: str) -> psycopg.Connection:
    return psycopg.connect(uri, autocommit=True, connect_timeout=5)


def query(uri: str, statement: str) -> list[tuple]:
    with connect(uri) as connection:
        cursor = connection.execute(statement)
        return cursor.fetchall() if cursor.description else []


def in_seconds(seconds: float) -> str:
    moment = datetime.fromtimestamp(math.ceil(time.time() + seconds), timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def assert_error(answer: requests.Response, status: int, text: str = "") -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert isinstance(body["code"], str)
    assert text.lower() in body["message"].lower(), body
    assert body["request_id"]
    return body


@pytest.fixture
def start_emulator(admin_url: str) -> Iterator[Callable[..., NeonEmulator]]:
    """Start emulators on the shared server; all are stopped after the test."""
    started: list[NeonEmulator] = []

    def start(**options: Any) -> NeonEmulator:
        options.setdefault("operation_delay", 0.02)
        emulator = NeonEmulator(admin_url=admin_url, **options).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(start_emulator: Callable[..., NeonEmulator]) -> NeonEmulator:
    return start_emulator()


@pytest.fixture
def client(emulator: NeonEmulator) -> Client:
    return Client(emulator)


# --------------------------------------------------------------------------------------
# neon-api 0.3.0 parses everything it asks for
# --------------------------------------------------------------------------------------


def test_neon_api_parses_every_response(neon_emulator: NeonEmulator) -> None:
    """Every NeonAPI method a branch-per-test plugin uses, against the public fixture."""
    emulator = neon_emulator
    api = NeonAPI(emulator.api_key, base_url=emulator.base_url + "/")
    project_id = emulator.project_id

    assert api.project(project_id).project.id == project_id
    branches = api.branches(project_id).branches
    assert [b.id for b in branches] == [emulator.default_branch_id]
    main = api.branch(project_id, emulator.default_branch_id).branch
    assert (main.name, main.default, main.primary, main.parent_id) == ("main", True, True, None)
    assert main.current_state == "ready"

    created = api.branch_create(
        project_id,
        branch={"name": "pytest-api", "expires_at": in_seconds(600)},
        endpoints=[{"type": "read_write"}],
    )
    branch_id = created.branch.id
    assert branch_id.startswith("br-") and created.branch.parent_id == main.id
    actions = [(op.action.value, op.status.value) for op in created.operations]
    assert actions == [("create_branch", "running"), ("start_compute", "scheduling")]
    endpoint_id = created.operations[1].endpoint_id
    assert endpoint_id and endpoint_id.startswith("ep-")
    for op in created.operations:
        while api.operation(project_id, op.id).operation.status.value != "finished":
            time.sleep(0.01)
    assert api.branch(project_id, branch_id).branch.current_state == "ready"
    endpoint = api.endpoint(project_id, endpoint_id).endpoint
    assert (endpoint.current_state.value, endpoint.host, endpoint.type.value) == (
        "active",
        "127.0.0.1",
        "read_write",
    )
    assert {ep.id for ep in api.endpoints(project_id).endpoints} >= {endpoint_id}

    read_only = api.endpoint_create(
        project_id, endpoint={"branch_id": branch_id, "type": "read_only"}
    )
    assert read_only.endpoint.type.value == "read_only"
    assert read_only.operations[0].endpoint_id == read_only.endpoint.id

    assert [r.name for r in api.roles(project_id, branch_id).roles] == ["neondb_owner"]
    databases = api.databases(project_id, branch_id).databases
    assert [(d.name, d.owner_name) for d in databases] == [("neondb", "neondb_owner")]
    operations = api.operations(project_id).operations
    assert {op.id for op in created.operations} <= {op.id for op in operations}

    uri = api.connection_uri(project_id, database_name="neondb", role_name="neondb_owner").uri
    assert uri.startswith("postgresql://neondb_owner:npg_") and "@127.0.0.1:" in uri
    assert query(uri, "SELECT 1") == [(1,)]

    # neon-api 0.3.0 sends POST to reveal_password; the real API (and the emulator) want GET.
    with pytest.raises(NeonAPIError) as excinfo:
        api.role_password_reveal(project_id, branch_id, "neondb_owner")
    assert json.loads(str(excinfo.value))["message"] == "method not allowed"

    for op in read_only.operations:
        while api.operation(project_id, op.id).operation.status.value != "finished":
            time.sleep(0.01)
    deleted_endpoint = api.endpoint_delete(project_id, read_only.endpoint.id)
    assert deleted_endpoint.operations[0].action.value == "suspend_compute"
    for op in deleted_endpoint.operations:
        while api.operation(project_id, op.id).operation.status.value != "finished":
            time.sleep(0.01)
    deleted = api.branch_delete(project_id, branch_id)
    assert deleted.branch.id == branch_id
    assert [op.action.value for op in deleted.operations] == ["suspend_compute", "delete_timeline"]
    # Already gone: 204 with an empty body, which neon-api cannot parse (it calls r.json()).
    with pytest.raises(requests.exceptions.JSONDecodeError):
        api.branch_delete(project_id, branch_id)
    assert [b["id"] for b in emulator.branches()] == [emulator.default_branch_id]


def test_default_branch(client: Client, emulator: NeonEmulator) -> None:
    branch = client.get(f"/branches/{emulator.default_branch_id}").json()["branch"]
    assert branch["default"] is True and branch["primary"] is True
    assert branch["name"] == "main" and "parent_id" not in branch
    endpoints = client.get(f"/branches/{branch['id']}/endpoints").json()["endpoints"]
    assert [(ep["type"], ep["current_state"]) for ep in endpoints] == [("read_write", "active")]
    assert client.get(f"/branches/{branch['id']}/databases").json()["databases"][0]["name"] == (
        "neondb"
    )
    assert client.get(f"/branches/{branch['id']}/roles").json()["roles"][0]["name"] == (
        "neondb_owner"
    )
    for stamp in (branch["created_at"], branch["updated_at"], branch["state_changed_at"]):
        assert datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------
# Branches are real databases
# --------------------------------------------------------------------------------------


def test_child_copies_parent_and_is_independent(client: Client, emulator: NeonEmulator) -> None:
    main_uri = client.uri()
    query(main_uri, "CREATE TABLE items (id serial PRIMARY KEY, label text)")
    query(main_uri, "INSERT INTO items (label) VALUES ('from main')")

    created = client.create_branch("child")
    child_uri = created["connection_uris"][0]["connection_uri"]
    endpoint_id = created["endpoints"][0]["id"]
    assert child_uri == client.uri(created["branch"]["id"])
    assert child_uri == client.uri(created["branch"]["id"], endpoint_id)
    assert query(child_uri, "SELECT label FROM items") == [("from main",)]

    query(child_uri, "INSERT INTO items (label) VALUES ('from child')")
    query(child_uri, "CREATE TABLE child_only (x int)")
    # A parent's open sessions survive a further copy while no SQL was sent to it
    # since the last copy (see test_copies_cut_sessions_only_after_writes).
    with connect(main_uri) as held:
        sibling = client.create_branch("sibling")
        assert held.execute("SELECT label FROM items").fetchall() == [("from main",)]
        assert held.execute("SELECT to_regclass('child_only')").fetchone() == (None,)
    grandchild = client.create_branch("grandchild", parent_id=created["branch"]["id"])
    assert grandchild["branch"]["parent_id"] == created["branch"]["id"]
    for body, expected in ((sibling, 1), (grandchild, 2)):
        uri = body["connection_uris"][0]["connection_uri"]
        assert query(uri, "SELECT count(*) FROM items") == [(expected,)]


def test_restore_resets_data_cuts_connections_keeps_uri(
    start_emulator: Callable[..., NeonEmulator],
) -> None:
    emulator = start_emulator(operation_delay=0.15)
    client = Client(emulator)
    main_uri = client.uri()
    query(main_uri, "CREATE TABLE items (label text)")
    query(main_uri, "INSERT INTO items VALUES ('seed')")
    created = client.create_branch("isolated", expires_at=in_seconds(600))
    branch_id = created["branch"]["id"]
    assert created["branch"]["ttl_interval_seconds"] in range(599, 602)
    uri = client.uri(branch_id)
    query(uri, "INSERT INTO items VALUES ('dirty')")
    query(uri, "CREATE TABLE extra (x int)")

    held = connect(uri)
    answer = client.post(
        f"/branches/{branch_id}/restore", {"source_branch_id": emulator.default_branch_id}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["branch"]["id"] == branch_id
    assert body["branch"]["last_reset_at"]
    assert [op["action"] for op in body["operations"]] == ["create_timeline", "start_compute"]
    # Until the operations finish, the branch still shows its old data.
    assert query(uri, "SELECT count(*) FROM items") == [(2,)]
    client.wait(body)

    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    assert client.uri(branch_id) == uri  # same host, port and password
    assert query(uri, "SELECT label FROM items") == [("seed",)]
    assert query(uri, "SELECT to_regclass('extra')") == [(None,)]
    branch = client.get(f"/branches/{branch_id}").json()["branch"]
    assert branch["current_state"] == "ready"
    expires = datetime.strptime(branch["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
    reset = datetime.strptime(branch["last_reset_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert expires - reset == timedelta(seconds=branch["ttl_interval_seconds"])
    # The parent was not touched; a second restore copies it again.
    assert query(main_uri, "SELECT count(*) FROM items") == [(1,)]
    client.wait(
        client.post(
            f"/branches/{branch_id}/restore", {"source_branch_id": emulator.default_branch_id}
        ).json()
    )
    assert query(uri, "SELECT count(*) FROM items") == [(1,)]


def test_restore_rules(client: Client, emulator: NeonEmulator) -> None:
    main_id = emulator.default_branch_id
    query(client.uri(), "CREATE TABLE marker (v text)")
    parent = client.create_branch("parent")["branch"]
    child = client.create_branch("child", parent_id=parent["id"])["branch"]
    restore = f"/branches/{parent['id']}/restore"

    assert_error(client.post(restore, {}), 400, "source_branch_id")
    assert_error(client.post(restore, {"source_branch_id": main_id, "bogus": 1}), 400, "bogus")
    assert_error(client.post(restore, {"source_branch_id": "br-none-such-00000000"}), 404)
    assert_error(
        client.post("/branches/br-none-such-00000000/restore", {"source_branch_id": main_id}), 404
    )
    assert_error(
        client.post(restore, {"source_branch_id": main_id, "source_timestamp": in_seconds(-60)}),
        400,
        "not supported by the emulator",
    )
    assert_error(client.post(restore, {"source_branch_id": main_id}), 400, "preserve_under_name")

    answer = client.post(
        restore, {"source_branch_id": main_id, "preserve_under_name": "parent_old"}
    )
    assert answer.status_code == 200, answer.text
    client.wait(answer.json())
    backup = next(b for b in emulator.branches() if b["name"] == "parent_old")
    assert backup["current_state"] == "ready"
    by_id = {b["id"]: b for b in emulator.branches()}
    assert by_id[child["id"]]["parent_id"] == backup["id"]
    assert by_id[parent["id"]]["parent_id"] == backup["id"]

    # Restoring the default branch from another branch is allowed, as on Neon (it has
    # children here, so the old state must be preserved; a root's backup is a root).
    query(client.uri(parent["id"]), "INSERT INTO marker VALUES ('from parent')")
    answer = client.post(
        f"/branches/{main_id}/restore",
        {"source_branch_id": parent["id"], "preserve_under_name": "main_old"},
    )
    assert answer.status_code == 200, answer.text
    client.wait(answer.json())
    assert query(client.uri(), "SELECT v FROM marker") == [("from parent",)]
    by_name = {b["name"]: b for b in emulator.branches()}
    assert "parent_id" not in by_name["main"] and "parent_id" not in by_name["main_old"]
    assert by_name["main"]["default"] and not by_name["main_old"]["default"]
    assert by_name["parent_old"]["parent_id"] == by_name["main_old"]["id"]

    protected = client.create_branch("protected", protected=True)["branch"]
    assert_error(
        client.post(f"/branches/{protected['id']}/restore", {"source_branch_id": main_id}),
        400,
        "protected",
    )


def test_read_only_endpoint_rejects_writes(client: Client, emulator: NeonEmulator) -> None:
    main_id = emulator.default_branch_id
    rw_uri = client.uri()
    query(rw_uri, "CREATE TABLE items (id serial PRIMARY KEY, label text)")
    query(rw_uri, "INSERT INTO items (label) VALUES ('one')")
    answer = client.post("/endpoints", {"endpoint": {"branch_id": main_id, "type": "read_only"}})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    client.wait(body)
    ro_uri = client.uri(main_id, body["endpoint"]["id"])
    assert ro_uri != rw_uri and ro_uri.split("@")[0] == rw_uri.split("@")[0]  # same password

    with connect(ro_uri) as connection:
        assert connection.execute("SELECT label FROM items").fetchall() == [("one",)]
        with pytest.raises(pg_errors.ReadOnlySqlTransaction):
            connection.execute("INSERT INTO items (label) VALUES ('two')")
        connection.execute("SET default_transaction_read_only = off")
        for statement in (
            "INSERT INTO items (label) VALUES ('two')",
            "UPDATE items SET label = 'changed'",
            "DELETE FROM items",
            "CREATE TABLE sneaky (x int)",
            "CREATE TEMP TABLE scratch (x int)",
            "SELECT nextval('items_id_seq')",
            "DROP TABLE items",
        ):
            with pytest.raises(pg_errors.InsufficientPrivilege):
                connection.execute(statement)
        # Same storage as the read_write endpoint: its writes are visible at once.
        query(rw_uri, "INSERT INTO items (label) VALUES ('later')")
        assert connection.execute("SELECT count(*) FROM items").fetchone() == (2,)


def test_copies_cut_sessions_only_after_writes(client: Client, emulator: NeonEmulator) -> None:
    """Children and restores copy a branch through a snapshot taken when it was last
    copied; only re-taking it (the branch was written through its read_write endpoint
    since) cuts the branch's sessions -- an emulator limitation, not Neon's behaviour."""
    main_id = emulator.default_branch_id
    rw_uri = client.uri()
    query(rw_uri, "CREATE TABLE items (label text)")
    body = client.post(
        "/endpoints", {"endpoint": {"branch_id": main_id, "type": "read_only"}}
    ).json()
    client.wait(body)
    ro_uri = client.uri(main_id, body["endpoint"]["id"])
    target = client.create_branch("copy-one")["branch"]["id"]  # snapshot of main taken
    with connect(ro_uri) as connection:
        client.create_branch("copy-two")
        restore = {"source_branch_id": main_id}
        client.wait(client.post(f"/branches/{target}/restore", restore).json())
        assert connection.execute("SELECT count(*) FROM items").fetchone() == (0,)
        query(rw_uri, "INSERT INTO items VALUES ('new')")
        copied = client.create_branch("copy-three")  # must see 'new': snapshot re-taken
        with pytest.raises(psycopg.OperationalError):
            connection.execute("SELECT 1")
    uri = copied["connection_uris"][0]["connection_uri"]
    assert query(uri, "SELECT label FROM items") == [("new",)]


def test_proxy_refuses_unknown_database_role_and_password(client: Client) -> None:
    uri = client.uri()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        connect(uri.replace("/neondb", "/otherdb"))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(uri.replace("neondb_owner:", "postgres:"))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(uri.replace(":npg_", ":wrong_"))
    # sslmode=prefer (libpq's default) is answered "no TLS" and falls back to plain.
    assert query(uri + "?sslmode=prefer", "SELECT 1") == [(1,)]


def test_reset_password_takes_effect_when_operations_finish(
    start_emulator: Callable[..., NeonEmulator],
) -> None:
    emulator = start_emulator(operation_delay=0.2)
    client = Client(emulator)
    main_id = emulator.default_branch_id
    old_uri = client.uri()
    reveal = f"/branches/{main_id}/roles/neondb_owner/reveal_password"
    old_password = client.get(reveal).json()["password"]
    assert f":{old_password}@" in old_uri
    assert_error(client.post(reveal), 405, "method not allowed")
    assert client.post(reveal).headers["Allow"] == "GET"

    answer = client.post(f"/branches/{main_id}/roles/neondb_owner/reset_password")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    new_password = body["role"]["password"]
    assert new_password != old_password
    assert client.get(reveal).json()["password"] == new_password
    assert query(old_uri, "SELECT 1") == [(1,)]  # the old one works until the ops finish
    client.wait(body)
    new_uri = client.uri()
    assert new_uri == old_uri.replace(old_password, new_password)
    assert query(new_uri, "SELECT 1") == [(1,)]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(old_uri)
    assert_error(client.get(f"/branches/{main_id}/roles/nobody/reveal_password"), 404, "role")


# --------------------------------------------------------------------------------------
# Neon's rules and status codes
# --------------------------------------------------------------------------------------


def test_locked_while_operations_run(start_emulator: Callable[..., NeonEmulator]) -> None:
    emulator = start_emulator(operation_delay=0.4)
    client = Client(emulator)
    body = client.create_branch("busy", wait=False)
    branch_id = body["branch"]["id"]
    assert body["branch"]["current_state"] == "init"
    assert body["endpoints"][0]["current_state"] == "init"
    for answer in (
        client.delete(f"/branches/{branch_id}"),
        client.post(
            f"/branches/{branch_id}/restore", {"source_branch_id": emulator.default_branch_id}
        ),
        client.post("/branches", {"branch": {"parent_id": branch_id}}),
        client.post("/endpoints", {"endpoint": {"branch_id": branch_id, "type": "read_only"}}),
        client.post(f"/branches/{branch_id}/roles/neondb_owner/reset_password"),
        client.delete(f"/endpoints/{body['endpoints'][0]['id']}"),
    ):
        assert_error(answer, 423, "another operation is in progress")
    # Reads, and changes that start no operation, are always allowed.
    assert client.get(f"/branches/{branch_id}").status_code == 200
    assert (
        client.patch(f"/branches/{branch_id}", {"branch": {"name": "renamed"}}).status_code == 200
    )
    client.wait(body)
    assert (
        client.get(f"/endpoints/{body['endpoints'][0]['id']}").json()["endpoint"]["current_state"]
        == "active"
    )
    answer = client.delete(f"/branches/{branch_id}")
    assert answer.status_code == 200, answer.text


def test_delete_rules(client: Client, emulator: NeonEmulator) -> None:
    answer = client.delete("/branches/br-none-such-00000000")
    assert (answer.status_code, answer.content) == (204, b"")
    assert answer.headers["X-Neon-Ret-Request-Id"]
    answer = client.delete("/endpoints/ep-none-such-00000000")
    assert (answer.status_code, answer.content) == (204, b"")
    assert_error(client.delete(f"/branches/{emulator.default_branch_id}"), 400, "default branch")
    parent = client.create_branch("parent")
    child = client.create_branch("child", parent_id=parent["branch"]["id"])
    assert_error(client.delete(f"/branches/{parent['branch']['id']}"), 400, "children")

    # Deleting a branch deletes its endpoints; their ports close when the ops finish.
    uri = child["connection_uris"][0]["connection_uri"]
    held = connect(uri)
    body = client.delete(f"/branches/{child['branch']['id']}").json()
    assert client.get(f"/endpoints/{child['endpoints'][0]['id']}").status_code == 404
    assert client.get(f"/branches/{child['branch']['id']}").status_code == 404
    client.wait(body)
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    with pytest.raises(psycopg.OperationalError):
        connect(uri)
    assert client.delete(f"/branches/{child['branch']['id']}").status_code == 204


def test_endpoint_rules(client: Client, emulator: NeonEmulator) -> None:
    main_id = emulator.default_branch_id
    endpoints = "/endpoints"
    assert_error(
        client.post(endpoints, {"endpoint": {"branch_id": main_id, "type": "read_write"}}),
        409,
        "read_write",
    )
    assert_error(client.post(endpoints, {"endpoint": {"branch_id": main_id}}), 400, "type")
    assert_error(
        client.post(
            endpoints, {"endpoint": {"branch_id": "br-none-such-00000000", "type": "read_only"}}
        ),
        404,
    )
    assert_error(
        client.post(
            endpoints,
            {"endpoint": {"branch_id": main_id, "type": "read_only", "settings": {}}},
        ),
        400,
        "settings must not be nil",
    )
    body = client.post(endpoints, {"endpoint": {"branch_id": main_id, "type": "read_only"}}).json()
    client.wait(body)
    endpoint_id = body["endpoint"]["id"]
    uri = client.uri(main_id, endpoint_id)
    answer = client.delete(f"/endpoints/{endpoint_id}")
    assert answer.status_code == 200, answer.text
    client.wait(answer.json())
    assert client.delete(f"/endpoints/{endpoint_id}").status_code == 204
    assert client.get(f"/endpoints/{endpoint_id}").status_code == 404
    with pytest.raises(psycopg.OperationalError):
        connect(uri)


def test_create_branch_validation(client: Client, emulator: NeonEmulator) -> None:
    client.create_branch("taken")
    assert_error(client.post("/branches", {"branch": {"name": "taken"}}), 409, "already exists")
    assert_error(client.post("/branches", {"branch": {}, "extra": 1}), 400, "extra")
    assert_error(client.post("/branches", {"branch": {"nmae": "typo"}}), 400, "nmae")
    assert_error(client.post("/branches", {"branch": {"parent_id": "br-none-such-00000000"}}), 404)
    for expires_at in (
        in_seconds(-10),  # past
        in_seconds(31 * 24 * 3600),  # more than 30 days ahead
        "2030-01-01T00:00:00",  # no time zone
        "tomorrow",
    ):
        assert_error(client.post("/branches", {"branch": {"expires_at": expires_at}}), 400)
    assert_error(
        client.post("/branches", {"endpoints": [{"type": "read_write"}, {"type": "read_write"}]}),
        409,
    )
    expiring = client.create_branch("expiring", expires_at=in_seconds(600))["branch"]
    assert_error(
        client.post("/branches", {"branch": {"parent_id": expiring["id"]}}),
        400,
        "cannot create a branch from a branch with expiration",
    )
    # Offsets other than Z are accepted; fractions are cut to the second.
    moment = datetime.now(timezone(timedelta(hours=2))) + timedelta(minutes=5)
    answer = client.post(
        "/branches", {"branch": {"expires_at": moment.isoformat(timespec="milliseconds")}}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["branch"]["expires_at"].endswith("Z")
    # No endpoints: a branch without compute, and without connection URIs.
    assert "connection_uris" not in answer.json()
    assert answer.json()["endpoints"] == []


def test_update_branch(client: Client, emulator: NeonEmulator) -> None:
    branch_id = client.create_branch("patched")["branch"]["id"]
    path = f"/branches/{branch_id}"
    answer = client.patch(path, {"branch": {"expires_at": in_seconds(300)}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["branch"]["ttl_interval_seconds"] in range(299, 302)
    answer = client.patch(path, {"branch": {"expires_at": None}})
    assert "expires_at" not in answer.json()["branch"]
    assert_error(
        client.patch(
            f"/branches/{emulator.default_branch_id}", {"branch": {"expires_at": in_seconds(60)}}
        ),
        400,
        "default branch",
    )
    client.create_branch("other")
    assert_error(client.patch(path, {"branch": {"name": "other"}}), 409, "already exists")


def test_expired_branch_is_deleted(client: Client, emulator: NeonEmulator) -> None:
    created = client.create_branch("short-lived", expires_at=in_seconds(1))
    branch_id = created["branch"]["id"]
    uri = created["connection_uris"][0]["connection_uri"]
    assert query(uri, "SELECT 1") == [(1,)]
    deadline = time.monotonic() + 5
    while client.get(f"/branches/{branch_id}").status_code != 404:
        assert time.monotonic() < deadline, "the expired branch was not deleted"
        time.sleep(0.05)
    assert [b["id"] for b in emulator.branches()] == [emulator.default_branch_id]
    deadline = time.monotonic() + 5
    while True:  # the endpoint's port closes when the deletion's operations finish
        try:
            connect(uri).close()
        except psycopg.OperationalError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_auth_and_unknown_project(emulator: NeonEmulator) -> None:
    wrong = Client(emulator, api_key="wrong-key")
    body = assert_error(wrong.get(""), 401, "authentication failed")
    assert body["code"] == ""
    answer = requests.get(f"{emulator.base_url}/projects/{emulator.project_id}", timeout=TIMEOUT)
    assert_error(answer, 401)
    answer = requests.get(
        f"{emulator.base_url}/projects/no-such-project",
        headers={"Authorization": f"Bearer {emulator.api_key}", "X-Request-ID": "my-request"},
        timeout=TIMEOUT,
    )
    assert_error(answer, 404, "project not found")
    assert answer.json()["request_id"] == "my-request"
    assert answer.headers["X-Neon-Ret-Request-Id"] == "my-request"
    api = NeonAPI("wrong-key", base_url=emulator.base_url + "/")
    with pytest.raises(NeonAPIError, match="authentication failed"):
        api.branches(emulator.project_id)


def test_list_and_count_branches(client: Client, emulator: NeonEmulator) -> None:
    for name in ("pytest-b", "pytest-a", "pytest-c", "other"):
        client.post("/branches", {"branch": {"name": name}})
    answer = client.get(
        "/branches",
        params={"search": "pytest-", "sort_by": "name", "sort_order": "asc", "limit": 2},
    )
    body = answer.json()
    assert [b["name"] for b in body["branches"]] == ["pytest-a", "pytest-b"]
    cursor = body["pagination"]["next"]
    params = {
        "search": "pytest-",
        "sort_by": "name",
        "sort_order": "asc",
        "limit": 2,
        "cursor": cursor,
    }
    body = client.get("/branches", params=params).json()
    assert [b["name"] for b in body["branches"]] == ["pytest-c"]
    assert "next" not in body["pagination"]
    assert client.get("/branches/count", params={"search": "PYTEST"}).json() == {"count": 3}
    assert client.get("/branches/count").json() == {"count": 5}
    names = [
        b["name"]
        for b in client.get("/branches", params={"sort_by": "created_at"}).json()["branches"]
    ]
    assert names[0] == "other" and names[-1] == "main"  # desc by default
    assert_error(client.get("/branches", params={"limit": 0}), 400, "limit")
    assert_error(client.get("/branches", params={"sort_by": "size"}), 400, "sort_by")


def test_connection_uri_parameters(client: Client, emulator: NeonEmulator) -> None:
    base = {"database_name": "neondb", "role_name": "neondb_owner"}
    direct = client.get("/connection_uri", params=base).json()["uri"]
    for pooled in ("False", "false", "True", "true"):
        answer = client.get("/connection_uri", params={**base, "pooled": pooled})
        assert answer.json()["uri"] == direct
    assert_error(client.get("/connection_uri", params={**base, "pooled": "maybe"}), 400)
    assert_error(client.get("/connection_uri", params={"role_name": "neondb_owner"}), 400)
    assert_error(client.get("/connection_uri", params={**base, "database_name": "x"}), 404)
    other = client.create_branch("other")
    assert_error(
        client.get("/connection_uri", params={**base, "endpoint_id": other["endpoints"][0]["id"]}),
        400,
        "does not belong",
    )


def test_routing_errors(client: Client, emulator: NeonEmulator) -> None:
    assert_error(client.get("/no-such-thing"), 404, "not found")
    answer = client.request("PUT", f"/branches/{emulator.default_branch_id}")
    assert_error(answer, 405)
    assert answer.headers["Allow"] == "DELETE, GET, PATCH"
    assert_error(
        client.post("/branches", data=b"{not json", headers={"Content-Type": "application/json"}),
        400,
        "json",
    )
    assert_error(client.get("/operations/00000000-0000-0000-0000-000000000000"), 404, "operation")


# --------------------------------------------------------------------------------------
# Fault injection and call recording
# --------------------------------------------------------------------------------------


def test_rate_limit(client: Client, emulator: NeonEmulator) -> None:
    emulator.faults.rate_limit(2, retry_after=3)
    for _ in range(2):
        answer = client.get("/branches")
        assert_error(answer, 429, "rate limit")
        assert answer.headers["Retry-After"] == "3"
    assert client.get("/branches").status_code == 200
    api = NeonAPI(emulator.api_key, base_url=emulator.base_url + "/")
    emulator.faults.rate_limit(1)
    with pytest.raises(NeonAPIError, match="rate limit"):
        api.branches(emulator.project_id)


def test_lock_only_hits_mutating_requests(client: Client, emulator: NeonEmulator) -> None:
    emulator.faults.lock(1)
    assert client.get("/branches").status_code == 200  # reads pass, the fault stays armed
    assert emulator.faults.pending == 1
    assert_error(client.post("/branches", {}), 423, "another operation is in progress")
    assert client.post("/branches", {}).status_code == 201


@pytest.mark.parametrize("status", [500, 502, 503])
def test_fail(client: Client, emulator: NeonEmulator, status: int) -> None:
    emulator.faults.fail(1, status=status)
    assert_error(client.get(""), status, "internal server error")
    assert client.get("").status_code == 200


def test_fault_restricted_to_method_and_path(client: Client, emulator: NeonEmulator) -> None:
    branch_id = client.create_branch("target")["branch"]["id"]
    emulator.faults.fail(1, status=503, method="post", path="*/restore")
    assert client.post("/branches", {}).status_code == 201
    assert client.get(f"/branches/{branch_id}").status_code == 200
    restore = client.post(
        f"/branches/{branch_id}/restore", {"source_branch_id": emulator.default_branch_id}
    )
    assert_error(restore, 503)
    prefix = f"/projects/{emulator.project_id}/operations"
    emulator.faults.fail(1, path=prefix)
    assert client.get("/branches").status_code == 200
    assert_error(client.get("/operations"), 500)


def test_hang_makes_clients_time_out(client: Client, emulator: NeonEmulator) -> None:
    emulator.faults.hang(1, seconds=1.0)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.get("/branches", timeout=0.2)
    assert time.monotonic() - started < 0.9
    assert client.get("/branches").status_code == 200
    emulator.faults.hang(1, seconds=0.2)
    started = time.monotonic()
    assert client.get("/branches").status_code == 200  # a slow answer, but an answer
    assert time.monotonic() - started >= 0.2


def test_annotations_are_kept_and_listed(client: Client, emulator: NeonEmulator) -> None:
    """``annotation_value`` at creation; ``annotations`` by branch ID in the list (annotated
    branches only), ``annotation`` in a get; at most 50 string properties."""
    value = {"created-by": "pytest-neon-alembic", "test-run": "deadbeef", "test-pid": "42"}
    answer = client.post("/branches", {"branch": {"name": "annotated"}, "annotation_value": value})
    assert answer.status_code == 201, answer.text
    annotated = answer.json()["branch"]["id"]
    plain = client.create_branch("plain")["branch"]["id"]
    listed = client.get("/branches").json()["annotations"]
    assert set(listed) == {annotated}
    assert listed[annotated]["value"] == value
    assert listed[annotated]["object"]["id"] == annotated
    assert client.get(f"/branches/{annotated}").json()["annotation"]["value"] == value
    assert client.get(f"/branches/{plain}").json()["annotation"]["value"] == {}
    too_many = {f"key{index}": "v" for index in range(51)}
    assert_error(client.post("/branches", {"annotation_value": too_many}), 400, "at most 50")
    assert_error(client.post("/branches", {"annotation_value": {"n": 1}}), 400, "of strings")
    api = NeonAPI(emulator.api_key, base_url=emulator.base_url + "/")  # both answers parse
    assert annotated in {branch.id for branch in api.branches(emulator.project_id).branches}
    assert api.branch(emulator.project_id, annotated).branch.name == "annotated"


def test_hang_stalls_the_request_or_only_its_answer(client: Client, emulator: NeonEmulator) -> None:
    def names() -> list[str]:
        return [branch["name"] for branch in emulator.branches()]

    emulator.faults.hang(1, seconds=1.0, method="POST", stall="answer")
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.post("/branches", {"branch": {"name": "answer-late"}}, timeout=0.3)
    assert "answer-late" in names()  # applied before its answer was held back
    emulator.faults.hang(1, seconds=1.0, method="POST")  # stall="request"
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.post("/branches", {"branch": {"name": "request-late"}}, timeout=0.3)
    assert "request-late" not in names()  # not yet: it waits on its way in
    time.sleep(1.0)
    assert "request-late" in names()
    with pytest.raises(ValueError, match="stall"):
        emulator.faults.hang(stall="forever")


def test_operations_vary_with_jitter_and_branches_can_be_backdated(
    start_emulator: Callable[..., NeonEmulator],
) -> None:
    emulator = start_emulator(operation_delay=0.1, operation_jitter=0.5)
    client = Client(emulator)
    body = client.create_branch("jittery", wait=False)
    durations = [op.finish_at - op.start_at for op in emulator.project.operations[-2:]]
    assert all(0.05 <= duration <= 0.15 for duration in durations), durations
    assert durations[0] != durations[1]
    client.wait(body)

    def created_at() -> float:
        stamp = client.get(f"/branches/{body['branch']['id']}").json()["branch"]["created_at"]
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    before = created_at()
    emulator.backdate(body["branch"]["id"], 7200)
    assert abs(before - 7200 - created_at()) <= 1
    with pytest.raises(ValueError, match="operation_jitter"):
        NeonEmulator(operation_jitter=1.0)


def test_die(client: Client, emulator: NeonEmulator) -> None:
    assert client.get("").status_code == 200  # a keep-alive connection is open now
    uri = client.uri()
    emulator.faults.die()
    with pytest.raises(requests.exceptions.ConnectionError):
        client.get("")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(emulator.base_url + "/projects", timeout=TIMEOUT)
    # Only the API is gone; computes keep running, as when Neon's console is down.
    assert query(uri, "SELECT 1") == [(1,)]
    # The outage ends: the same port answers again, about the same project.
    emulator.faults.revive()
    assert not emulator.faults.dead
    assert client.get("/branches").json()["branches"][0]["id"] == emulator.default_branch_id


def test_calls_are_recorded(emulator: NeonEmulator) -> None:
    api = NeonAPI(emulator.api_key, base_url=emulator.base_url + "/")
    emulator.faults.rate_limit(1)
    with pytest.raises(NeonAPIError):
        api.branches(emulator.project_id)
    api.branches(emulator.project_id)
    api.branch(emulator.project_id, emulator.default_branch_id)
    prefix = f"/projects/{emulator.project_id}"
    assert emulator.calls == [
        ("GET", f"{prefix}/branches"),
        ("GET", f"{prefix}/branches"),
        ("GET", f"{prefix}/branches/{emulator.default_branch_id}"),
    ]


# --------------------------------------------------------------------------------------
# Life cycle
# --------------------------------------------------------------------------------------


def test_stop_drops_everything_it_created(
    admin_url: str, client: Client, emulator: NeonEmulator
) -> None:
    client.create_branch("child")
    prefix = emulator.project.cluster.prefix + "_"
    count = "SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)"
    roles = "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, %s)"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        assert admin.execute(count, (prefix,)).fetchone()[0] >= 2
        assert admin.execute(roles, (prefix,)).fetchone() == (2,)
        emulator.stop()
        emulator.stop()  # idempotent
        assert admin.execute(count, (prefix,)).fetchone() == (0,)
        assert admin.execute(roles, (prefix,)).fetchone() == (0,)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(emulator.base_url + "/projects", timeout=TIMEOUT)


def test_standalone_module() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.neon_emulator", "--api-key", "cli-key"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api/v2"), (
            base_url + (process.stderr.read() if process.poll() is not None else "")
        )
        answer = requests.get(
            f"{base_url}/projects/emulated-project-123456",
            headers={"Authorization": "Bearer cli-key"},
            timeout=TIMEOUT,
        )
        assert answer.status_code == 200, answer.text
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "cli-key" not in out + err
