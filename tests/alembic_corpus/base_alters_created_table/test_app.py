import sqlalchemy as sa


def test_migrated_state(neon_engine_readonly):
    """create_all() made the tables, the branch is stamped at head: the models' schema."""
    with neon_engine_readonly.connect() as connection:
        columns = {c["name"] for c in sa.inspect(connection).get_columns("users")}
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    assert columns == {"id", "email", "nickname"}
    assert [tuple(row) for row in version] == [("a001",)]
