from models import Widget


def test_widget_name():
    assert Widget(name="gear").name == "gear"
