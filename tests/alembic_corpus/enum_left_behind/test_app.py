from models import Priority, Ticket


def test_priority_values():
    assert Ticket.__table__.c.priority.type.enums == [p.name for p in Priority]
