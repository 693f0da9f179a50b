from models import User


def test_user_has_a_name():
    assert User(name="ada").name == "ada"
