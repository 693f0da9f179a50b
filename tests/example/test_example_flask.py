"""The Flask app through its test client: the ``app`` and ``client`` fixtures a Flask
user writes anyway, and nothing else.

The app is made once, in a session fixture, while ``DATABASE_URL`` holds the
sandbox; Flask-SQLAlchemy's engine follows each test's branch all the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app.flask_app import create_app


@pytest.fixture(scope="session")
def app() -> Iterator[Flask]:
    app = create_app()
    app.config["TESTING"] = True
    yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.mark.neon
def test_register_1_commits(client: FlaskClient) -> None:
    response = client.post("/customers", json={"email": "linus@example.com", "name": "Linus"})
    assert response.status_code == 201
    assert client.get("/customers/count").json == {"count": 2}


@pytest.mark.neon
def test_register_2_is_gone(client: FlaskClient) -> None:
    assert client.get("/customers/count").json == {"count": 1}


@pytest.mark.neon("readonly")
def test_register_on_the_readonly_branch_is_refused(client: FlaskClient) -> None:
    with pytest.raises(Exception, match=r"read-only|permission denied"):
        client.post("/customers", json={"email": "ro@example.com", "name": "RO"})
