"""pytest-alembic's built-in tests: which ones run, how they are called, how they fail.

The tests are pytest-alembic's own functions, called with an ``alembic_runner``
built from the project's ``alembic_config`` and ``alembic_engine`` (or the
plugin's: the project's Alembic configuration and a fresh, empty branch). Which
ones run follows pytest-alembic's own settings. Nothing here knows about pytest
items; they are in ``check_items.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from .migrations import START_HINT, failing_revision, is_undefined_object

# --neon-alembic-checks runs the cheap check first; pytest-alembic sorts by name.
DEFAULT_ORDER = (
    "test_single_head_revision",
    "test_upgrade",
    "test_model_definitions_match_ddl",
    "test_up_down_consistency",
)

TARGET_METADATA_HINT = (
    "The model definitions match DDL check compares your models with the migrated "
    "schema, so env.py must give Alembic your models' MetaData: in env.py set "
    "`target_metadata = Base.metadata` (your declarative base) and pass it to "
    "context.configure(connection=connection, target_metadata=target_metadata)."
)
WOULD_BE_UPGRADE = "The upgrade which would have been generated would look like"
SUMMARY_FROM = 10  # a would-be upgrade with at least this many operations gets a summary


class Selection:
    """pytest-alembic's include/exclude settings, read from a pytest config."""

    def __init__(self, getini: Callable[[str], Any], exclude_option: str | None) -> None:
        self.getini = getini
        self.exclude_option = exclude_option

    def _ini(self, name: str) -> str:
        try:
            return self.getini(name) or ""
        except ValueError:  # pytest-alembic's plugin is disabled (-p no:pytest_alembic)
            return ""

    def tests(self, *, neon_order: bool) -> list:
        """The selected tests (pytest-alembic's ``PytestAlembicTest``), as pytest-alembic
        selects them: ``pytest_alembic_include`` (default: the four default tests),
        ``pytest_alembic_include_experimental``, then ``pytest_alembic_exclude`` /
        ``--alembic-exclude``. An unknown name raises ValueError, as in pytest-alembic."""
        from pytest_alembic.plugin.plugin import OptionResolver, parse_test_names

        resolver = (
            OptionResolver.collect_test_definitions(default=True, experimental=True)
            .include(*parse_test_names(self._ini("pytest_alembic_include")))
            .include_experimental(
                *parse_test_names(self._ini("pytest_alembic_include_experimental"))
            )
            .exclude(*parse_test_names(self.exclude_option or self._ini("pytest_alembic_exclude")))
        )
        tests = resolver.sorted_tests()
        if neon_order:
            rank = {name: index for index, name in enumerate(DEFAULT_ORDER)}
            tests.sort(key=lambda test: (rank.get(test.raw_name, len(rank)), test.raw_name))
        return tests


def run_check(function: Callable[[Any], None], alembic_runner: Any) -> None:
    """Call one of pytest-alembic's tests; failures keep pytest-alembic's message.

    An AlembicTestFailure passes through (a long model/DDL diff gets a summary
    first). Any other error — a migration raised, or the check could not run —
    becomes an AlembicTestFailure naming the failing revision, with a hint
    where one helps.
    """
    from pytest_alembic.plugin.error import AlembicTestFailure

    try:
        function(alembic_runner)
        return
    except AlembicTestFailure as failure:
        raise summarised(failure) from None
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        script = alembic_runner.command_executor.script
        revision = failing_revision(error, script)
        if revision is not None:
            message = (
                f"Migration {revision.revision} ({revision.doc or 'no message'}, "
                f"{revision.path}) failed: {message}"
            )
        if "does not provide a MetaData object" in str(error):
            message = f"{message}\n{TARGET_METADATA_HINT}"
        elif is_undefined_object(error):
            message = f"{message}\n{START_HINT}"
        # Outside the except block: the report shows this message, not a chain of tracebacks.
    raise AlembicTestFailure(message)


def summarised(failure):
    """A model/DDL failure whose would-be upgrade is long: the same, with counts by kind first."""
    from pytest_alembic.plugin.error import AlembicTestFailure

    context = list(failure.context or [])
    for title, body in context:
        if title == WOULD_BE_UPGRADE:
            summary = summarise_upgrade(body)
            if summary:
                context.insert(0, ("Differences by kind", summary))
                return AlembicTestFailure(failure.args[0], context)
    return failure


_OPERATION = re.compile(r"^\s*(?:op|batch_op)\.(\w+)\(")
# alter_column keyword -> what changed
_ALTERED = (
    ("type_=", "column type changed"),
    ("nullable=", "nullability changed"),
    ("server_default=", "server default changed"),
    ("comment=", "comment changed"),
    ("new_column_name=", "column renamed"),
)
_KINDS = {
    "create_table": "table missing from the migrations (create_table)",
    "drop_table": "table only in the migrations (drop_table)",
    "add_column": "column missing from the migrations (add_column)",
    "drop_column": "column only in the migrations (drop_column)",
    "create_index": "index missing (create_index)",
    "drop_index": "index only in the migrations (drop_index)",
    "create_foreign_key": "foreign key missing (create_foreign_key)",
    "create_unique_constraint": "unique constraint missing (create_unique_constraint)",
    "drop_constraint": "constraint only in the migrations (drop_constraint)",
}


def summarise_upgrade(rendered: str) -> str | None:
    """Counts by kind of the operations in a rendered would-be upgrade, or None if it is short.

    An ``alter_column`` counts once for each thing it changes (type, nullability, ...).
    """
    operations: list[tuple[str, list[str]]] = []
    for line in rendered.splitlines():
        match = _OPERATION.match(line)
        if match:
            operations.append((match.group(1), [line]))
        elif operations:
            operations[-1][1].append(line)
    if len(operations) < SUMMARY_FROM:
        return None
    kinds: Counter[str] = Counter()
    for name, lines in operations:
        if name == "alter_column":
            text = "\n".join(lines)
            # `nullable=`, not `existing_nullable=` (what stays as it is).
            changed = [label for keyword, label in _ALTERED if re.search(rf"\b{keyword}", text)]
            kinds.update(changed or ["column altered (alter_column)"])
        else:
            kinds[_KINDS.get(name, name)] += 1
    rows = [f"{count:>4}  {kind}" for kind, count in kinds.most_common()]
    return f"{len(operations)} operations (the full upgrade follows):\n" + "\n".join(rows)
