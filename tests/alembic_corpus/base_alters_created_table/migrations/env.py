"""Alembic environment: the stock template's online mode, on the injected connection."""

from alembic import context
from models import target_metadata
from sqlalchemy import create_engine, pool

config = context.config


def run_migrations_online() -> None:
    # pytest-alembic's convention: a caller may hand us the connection to use.
    connectable = config.attributes.get("connection", None)
    if connectable is None:
        connectable = create_engine(
            config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool
        )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
