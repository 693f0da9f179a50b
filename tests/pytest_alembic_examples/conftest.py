"""pytest-alembic's example projects (``examples/``, when put here) are run by
``tests/pytest_alembic_examples/conformance.py`` in scratch copies; never collect them in place."""

collect_ignore_glob = ["examples/*"]
