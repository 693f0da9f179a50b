"""Alembic environment for the example app.

Online mode first looks for a connection that a caller (pytest-neon-alembic,
pytest-alembic) put in ``config.attributes["connection"]``; only from the
command line does it build its own engine from ``DATABASE_URL``. That small
change to the stock template is all the plugin needs from an env.py.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from example_app.db import to_sqlalchemy_url
from example_app.models import Base

config = context.config

# disable_existing_loggers=False: when migrations run inside pytest, the default
# would silence loggers that pytest and the application already configured.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (``alembic upgrade --sql``).

    No database is contacted, so the URL only selects the dialect; prefer
    ``DATABASE_URL`` because ``sqlalchemy.url`` in alembic.ini is a placeholder.
    """
    url = os.environ.get("DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    context.configure(
        url=to_sqlalchemy_url(url) if url else url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations on the injected connection, or on ``DATABASE_URL`` from the CLI."""
    connectable = config.attributes.get("connection", None)
    if connectable is None:
        connectable = create_engine(
            to_sqlalchemy_url(os.environ["DATABASE_URL"]), poolclass=pool.NullPool
        )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
