import sqlalchemy as sa
from models import Customer, Order


def test_models_are_related():
    assert Order.__table__.c.customer_id.references(Customer.__table__.c.id)


def test_display_name_is_backfilled(alembic_runner, alembic_engine):
    """The data migration 0003, tested the pytest-alembic way on an empty database."""
    alembic_runner.migrate_up_before("0003")
    alembic_runner.insert_into("customers", {"email": "Grace.Hopper@example.com"})
    alembic_runner.migrate_up_one()
    assert isinstance(alembic_engine, sa.Engine)  # as pytest-alembic documents it
    with alembic_engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT email, display_name, is_active FROM customers ORDER BY id")
        ).all()
    assert [tuple(row) for row in rows] == [
        ("house@example.com", "house", True),
        ("ADA@example.com", "ada", True),
        ("Grace.Hopper@example.com", "grace.hopper", True),
    ]
