"""The Alembic projects here are copied into pytester directories by
``tests/e2e/test_alembic_checks.py`` and run there; never collect them in place."""

collect_ignore_glob = ["*"]
