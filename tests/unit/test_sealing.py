"""Passwords in a run's files: sealed with a key only the run's processes hold."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pytest_neon_alembic.branch import BranchRole, NeonBranch
from pytest_neon_alembic.coordination import RunDirectory
from pytest_neon_alembic.sealing import RunKey, is_sealed, seal_passwords, unseal_passwords

NEON_PASSWORD = "npg_Th1sIsTheRolePassword"
ADMIN_PASSWORD = "embedded-superuser-pw_42%2F"  # percent-encoded characters stay as they were
BRANCH = NeonBranch(
    branch_id="br-quiet-sun-a1b2c3d4",
    project_id="silent-hall-60879203",
    connection_string=f"postgresql://neondb_owner:{NEON_PASSWORD}@ep-x.neon.tech/neondb",
    host="ep-x.neon.tech",
    endpoint_id="ep-x",
    name="pytest-main-deadbeef-dirty",
)
ADMIN_URL = f"postgresql://postgres:{ADMIN_PASSWORD}@127.0.0.1:54321/postgres?sslmode=disable"
BACKEND_STATE = {"kind": "local", "local": {"admin_url": ADMIN_URL}, "server": {"pid": 7}}


def files_text(run: RunDirectory) -> str:
    return "".join(path.read_text() for path in run.path.iterdir() if path.is_file())


def write_run(run: RunDirectory) -> None:
    run.run_once("backend", lambda: BACKEND_STATE)
    run.run_once("dirty", BRANCH.to_dict)
    run.record_created(BranchRole.DIRTY, BRANCH)


def test_the_run_files_hold_no_password_and_the_runs_processes_read_them(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path)
    write_run(run)

    text = files_text(run)
    assert NEON_PASSWORD not in text and ADMIN_PASSWORD not in text
    assert "neondb_owner:pna-sealed." in text and "ep-x.neon.tech" in text  # the rest is plain
    for path in run.path.iterdir():
        if path.is_file() and not path.name.endswith(".lock"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name

    # The owner, and an xdist worker given the key in memory, read them back as written.
    worker = RunDirectory(run.path, RunKey.from_hex(run.key.hex() if run.key else None))
    for reader in (run, worker):
        assert reader.done("backend") == BACKEND_STATE
        assert NeonBranch.from_dict(reader.done("dirty")) == BRANCH
        assert reader.branches()[0].branch == BRANCH
        assert reader.run_once("dirty", lambda: pytest.fail("ran twice")) == BRANCH.to_dict()

    # Once the run's processes are gone, so is the key: the files open to nobody.
    for later in (RunDirectory(run.path), RunDirectory(run.path, RunKey.new())):
        url = later.done("backend")["local"]["admin_url"]
        assert is_sealed(url) and ADMIN_PASSWORD not in url
        assert url.endswith("@127.0.0.1:54321/postgres?sslmode=disable")
        assert is_sealed(later.branches()[0].branch.connection_string)
        assert later.branches()[0].branch.branch_id == BRANCH.branch_id  # what cleanup needs


def test_a_run_that_keeps_its_branches_writes_them_in_clear(tmp_path: Path) -> None:
    """--neon-keep-branches: kept to be inspected, so their connection strings can be read."""
    run = RunDirectory.create(tmp_path, sealed=False)
    write_run(run)
    assert NEON_PASSWORD in files_text(run) and ADMIN_PASSWORD in files_text(run)
    assert RunDirectory(run.path).done("backend") == BACKEND_STATE


def test_run_key_seals_each_time_differently_and_detects_damage() -> None:
    key = RunKey.new()
    first, second = key.seal(NEON_PASSWORD), key.seal(NEON_PASSWORD)
    assert first != second and NEON_PASSWORD not in first
    assert key.unseal(first) == key.unseal(second) == NEON_PASSWORD
    damaged = first[:-2] + ("A" if first[-2] != "A" else "B") + first[-1]
    for token in (damaged, first[:-6]):
        with pytest.raises(ValueError):
            key.unseal(token)
    with pytest.raises(ValueError):
        RunKey.new().unseal(first)
    assert key.hex() not in repr(key) and repr(key) == "RunKey(***)"
    # Only URL passwords are touched, also inside text (an error message quoting a URL).
    value = {"a": [ADMIN_URL, "postgresql://u@h/db", "failed: postgresql://u:pw@h/db (x)", 3]}
    sealed = seal_passwords(value, key)
    assert sealed["a"][1] == value["a"][1] and sealed["a"][3] == 3
    assert is_sealed(sealed["a"][0]) and ":pw@" not in sealed["a"][2]
    assert sealed["a"][2].startswith("failed: postgresql://u:pna-sealed.")
    assert unseal_passwords(sealed, key) == value
