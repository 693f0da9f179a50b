"""pytest-alembic's example projects, run with and without the plugin (see run_examples.py)."""
