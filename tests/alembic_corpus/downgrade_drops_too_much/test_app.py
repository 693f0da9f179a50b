from models import Invoice


def test_invoice_points_at_an_account():
    assert [fk.column.table.name for fk in Invoice.__table__.foreign_keys] == ["accounts"]
