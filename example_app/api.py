"""The HTTP API (FastAPI): a ``get_db`` dependency, services that commit."""

from __future__ import annotations

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from example_app import services
from example_app.db import get_db
from example_app.models import Product

app = FastAPI(title="example_app")


class CustomerIn(BaseModel):
    email: str
    name: str


class OrderIn(BaseModel):
    customer_email: str
    items: list[tuple[str, int]]


@app.get("/products")
def list_products(db: Session = Depends(get_db)) -> list[dict]:  # noqa: B008 - FastAPI's way
    products = db.scalars(select(Product).where(Product.is_active).order_by(Product.sku))
    return [{"sku": p.sku, "name": p.name, "price_cents": p.price_cents} for p in products]


@app.post("/customers", status_code=201)
def register_customer(customer: CustomerIn) -> dict:
    created = services.register_customer(customer.email, customer.name)
    return {"id": created.id, "email": created.email}


@app.post("/orders", status_code=201)
def place_order(order: OrderIn) -> dict:
    try:
        placed = services.place_order(order.customer_email, order.items)
    except services.ServiceError as error:
        raise HTTPException(status_code=422, detail=str(error)) from error
    return {"id": placed.id, "invoice_number": placed.invoice_number, "total": placed.total_cents}


@app.get("/orders/count")
def count_orders() -> dict:
    return {"count": services.count_orders()}
