"""The FastAPI app through ``TestClient``: no glue, only the client fixture a user writes anyway.

``example_app.db`` builds its engine at import from ``DATABASE_URL``; during
each test that engine talks to the branch the test asked for. The marker says
which: ``@pytest.mark.neon`` is the isolated branch, reset after a test that
wrote.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from example_app.api import app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.mark.neon("readonly")
def test_catalogue(client: TestClient) -> None:
    response = client.get("/products")
    assert response.status_code == 200
    assert [p["sku"] for p in response.json()] == ["GADGET-002", "GIZMO-003", "WIDGET-001"]


@pytest.mark.neon
def test_order_1_place_an_order(client: TestClient) -> None:
    response = client.post(
        "/orders", json={"customer_email": "ada@example.com", "items": [["WIDGET-001", 2]]}
    )
    assert response.status_code == 201, response.text
    assert response.json()["invoice_number"] == 1000
    assert client.get("/orders/count").json() == {"count": 1}


@pytest.mark.neon
def test_order_2_the_order_is_gone(client: TestClient) -> None:
    assert client.get("/orders/count").json() == {"count": 0}
    response = client.post(
        "/orders", json={"customer_email": "ada@example.com", "items": [["GIZMO-003", 1]]}
    )
    assert response.json()["invoice_number"] == 1000  # the sequence was reset too


@pytest.mark.neon(reset="transaction")
def test_transaction_strategy_keeps_nothing(client: TestClient) -> None:
    """The app's own sessions commit into the test's outer transaction: no reset needed."""
    assert (
        client.post("/customers", json={"email": "x@example.com", "name": "X"}).status_code == 201
    )
    assert client.get("/orders/count").json() == {"count": 0}


@pytest.mark.neon
def test_unknown_product_is_refused(client: TestClient) -> None:
    response = client.post(
        "/orders", json={"customer_email": "ada@example.com", "items": [["NOPE-000", 1]]}
    )
    assert response.status_code == 422
