from models import Author, Tag


def test_models_are_mapped():
    assert {Author.__tablename__, Tag.__tablename__} == {"authors", "tags"}
