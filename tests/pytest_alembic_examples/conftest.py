"""pytest-alembic's example projects (``examples/``, when put here) are run by
``tests/e2e/test_pytest_alembic_examples.py`` in scratch copies; never collect them in place."""

collect_ignore_glob = ["examples/*"]
