"""Alembic environment that uses the injected object as a Connection, committing itself."""

from alembic import context
from models import Base
from sqlalchemy import create_engine

config = context.config
target_metadata = Base.metadata

connection = config.attributes.get("connection")
if connection is None:
    connection = create_engine(config.get_main_option("sqlalchemy.url")).connect()
context.configure(connection=connection, target_metadata=target_metadata)
with context.begin_transaction():
    context.run_migrations()
connection.commit()
