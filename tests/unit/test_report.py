"""The report's lines about what a run left behind and what its start swept."""

from __future__ import annotations

from pytest_neon_alembic.report import Report, removal_hint


def test_the_report_names_what_was_left_and_how_to_remove_it() -> None:
    report = Report(
        backend="neon (project p-1)",
        created=3,
        left=["pytest-x-migration (br-a)", "read-only endpoint ep-b of br-a"],
        removal=removal_hint({"kind": "neon", "neon": {"project_id": "p-1"}}),
        swept=["pytest-y-dirty (br-c)"],
        sweep_failed=["pytest-z-migration (br-d): Neon could not delete br-d: 500"],
    )
    lines = report.lines()
    assert lines[2] == "branches: 3 created, 0 deleted"
    assert lines[3].startswith(
        "left behind (could not be deleted): pytest-x-migration (br-a), read-only endpoint "
        "ep-b of br-a. The next run on this machine that uses Neon deletes them"
    )
    assert "`pytest --neon-cleanup`" in lines[3] and "--project-id p-1" in lines[3]
    assert lines[4] == "stale branches of earlier runs: 1 deleted (pytest-y-dirty (br-c))"
    assert lines[5].startswith("stale branches of earlier runs not deleted: pytest-z-migration")
    assert len(Report(created=2, deleted=2).lines()) == 4  # nothing left: no such lines


def test_removal_hints_by_backend() -> None:
    assert "embedded server" in removal_hint({"kind": "local", "server": {"pid": 1}})
    assert "DROP DATABASE" in removal_hint({"kind": "local", "server": None})
