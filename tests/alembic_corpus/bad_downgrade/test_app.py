from models import Post, Tag


def test_post_title():
    assert Post(title="hello").title == "hello"
    assert Tag(label="x").label == "x"
