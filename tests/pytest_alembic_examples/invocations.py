"""How pytest-alembic's own test suite runs each of its example projects.

Taken from pytest-alembic's ``tests/test_runner.py`` (``run_pytest``): the
arguments each example is run with, and the outcome counts that test asserts
(pytest-alembic's expectation, on its own CI's PostgreSQL). ``examples/
test_default_env_script`` has no test there; it is run by the checks leg only.
"""

from __future__ import annotations

DEFAULT_ARGS = ("--test-alembic", "--alembic-tests-path", "conftest.py", "-vv", "-s")
WITHOUT_TEST_ALEMBIC = ("-vv", "conftest.py")

# example -> (arguments, counts pytest-alembic's test_runner.py asserts)
OWN_INVOCATIONS: dict[str, tuple[tuple[str, ...], dict[str, int]]] = {
    "test_no_data": (DEFAULT_ARGS, {"passed": 4}),
    "test_empty_history": (DEFAULT_ARGS, {"passed": 5}),
    "test_alternative_script_location": (DEFAULT_ARGS, {"passed": 4}),
    "test_manual_alembic_config": (DEFAULT_ARGS, {"passed": 4}),
    "test_default_script_location": (DEFAULT_ARGS, {"passed": 4}),
    "test_basic_revision_upgrade_data": (DEFAULT_ARGS, {"passed": 4}),
    "test_complex_revision_upgrade_data": (DEFAULT_ARGS, {"passed": 4}),
    "test_multiple_schemata": (WITHOUT_TEST_ALEMBIC, {"passed": 8}),
    "test_schema_revision_data": (DEFAULT_ARGS, {"passed": 3}),
    "test_branched_history": (DEFAULT_ARGS, {"passed": 4}),
    "test_branched_history_with_mergepoint": (DEFAULT_ARGS, {"passed": 5}),
    "test_ambiguous_downgrade_history": (DEFAULT_ARGS, {"passed": 4}),
    "test_migrate_up_to": (DEFAULT_ARGS, {"passed": 5}),
    "test_migrate_up_before": (DEFAULT_ARGS, {"passed": 5}),
    "test_migrate_down_before": (DEFAULT_ARGS, {"passed": 5}),
    "test_process_revision_directives": (DEFAULT_ARGS, {"passed": 3, "failed": 1}),
    "test_experimental_all_models_register": (WITHOUT_TEST_ALEMBIC, {"passed": 1}),
    "test_experimental_all_models_register_metadata": (WITHOUT_TEST_ALEMBIC, {"passed": 1}),
    "test_experimental_all_models_register_failure": (WITHOUT_TEST_ALEMBIC, {"failed": 1}),
    "test_experimental_all_models_register_no_metadata": (WITHOUT_TEST_ALEMBIC, {"failed": 1}),
    "test_experimental_all_models_register_automatic": (DEFAULT_ARGS, {"passed": 5}),
    "test_consistency_doesnt_roundtrip": (DEFAULT_ARGS, {"passed": 3, "failed": 1}),
    "test_downgrade_leaves_no_trace_success": (DEFAULT_ARGS, {"passed": 5}),
    "test_downgrade_leaves_no_trace_failure": (DEFAULT_ARGS, {"failed": 1}),
    "test_minimum_downgrade_revision": (DEFAULT_ARGS, {"passed": 5}),
    "test_unimplemented_downgrade_warning": (DEFAULT_ARGS, {"passed": 5}),
    "test_failing_downgrade": (DEFAULT_ARGS, {"passed": 3, "failed": 2}),
    "test_async_sqlalchemy": (DEFAULT_ARGS, {"passed": 4}),
    "test_async_sqlalchemy_native": (DEFAULT_ARGS, {"passed": 6}),
    "test_experimental_all_models_register_async": (WITHOUT_TEST_ALEMBIC, {"passed": 1}),
    "test_experimental_all_models_register_offline": (WITHOUT_TEST_ALEMBIC, {"passed": 1}),
    "test_experimental_all_models_register_namespace_package": (DEFAULT_ARGS, {"passed": 5}),
    "test_generate_revision": (DEFAULT_ARGS, {"passed": 3}),
    "test_skip_revision": (DEFAULT_ARGS, {"passed": 4}),
    "test_pytest_alembic_tests_path": (("-vv", "--test-alembic", "tests_"), {"passed": 4}),
    "test_version_table_schema": (DEFAULT_ARGS, {"passed": 5}),
    "test_branched_history_before_upgrade_data": (DEFAULT_ARGS, {"passed": 4}),
}
CHECKS_ONLY = ("test_default_env_script",)
ALL_EXAMPLES = tuple(sorted((*OWN_INVOCATIONS, *CHECKS_ONLY)))

DEFAULT_CHECKS = (
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
)


def checks_args(example: str) -> tuple[str, ...]:
    """pytest-alembic's own built-in tests for an example, bound where its fixtures are."""
    if example == "test_pytest_alembic_tests_path":
        return ("--test-alembic",)  # its pytest.ini names the tests path
    return ("--test-alembic", "--alembic-tests-path", "conftest.py")
