"""The Flask shape: an app factory, Flask-SQLAlchemy's ``db`` on the app's models.

``SQLALCHEMY_DATABASE_URI`` comes from ``DATABASE_URL`` when the app is made —
under pytest, often in a session fixture during the first test; its engine then
follows each test's branch.
"""

from __future__ import annotations

import os

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import func, select

from example_app.db import to_sqlalchemy_url
from example_app.models import Base, Customer

db = SQLAlchemy(model_class=Base)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = to_sqlalchemy_url(os.environ["DATABASE_URL"])
    db.init_app(app)

    @app.get("/customers/count")
    def count_customers():
        return jsonify(count=db.session.scalar(select(func.count()).select_from(Customer)))

    @app.post("/customers")
    def register_customer():
        payload = request.get_json()
        customer = Customer(email=payload["email"], name=payload["name"])
        db.session.add(customer)
        db.session.commit()
        return jsonify(id=customer.id), 201

    return app
