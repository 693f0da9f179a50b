from models import Account


def test_accounts_table():
    assert Account.__tablename__ == "accounts"
