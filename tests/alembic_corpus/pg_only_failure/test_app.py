from models import StockLine


def test_quantity_is_an_integer():
    assert StockLine.__table__.c.quantity.type.python_type is int
