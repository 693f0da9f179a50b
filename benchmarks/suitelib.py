"""What the generated tests do; copied next to them as ``suitelib.py``.

Every test first checks that it starts from the migrated, seeded state (the
fingerprint of ``app.FINGERPRINT_SQL``, computed once from a pristine copy by
the runner) and records which parts differ: "schema", "data" or "sequences".
``BENCH_ASSERT`` decides what fails the test: ``all``, ``data`` (schema and
data; sequences that advanced inside a rolled-back transaction are counted but
allowed: the savepoint peer) or ``none`` (the no-isolation baseline computes the
fingerprint, so it pays the same cost, but checks nothing).

``db`` is a SQLAlchemy ``Connection`` or ``Session``: both have ``execute``
and ``commit``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
MODE = os.environ.get("BENCH_ASSERT", "all")

CHECKS: dict[str, list[str]] = {}  # test name -> parts that differed at its start
_FINGERPRINT: list = []  # (query, expected state), read on first use


def check_pristine(db) -> None:
    if not _FINGERPRINT:
        query = sa.text((HERE / "fingerprint.sql").read_text())
        _FINGERPRINT.append((query, json.loads((HERE / "expected.json").read_text())))
    query, expected = _FINGERPRINT[0]
    state = db.execute(query).scalar_one()
    differs = [part for part in ("schema", "data", "sequences") if state[part] != expected[part]]
    name = os.environ["PYTEST_CURRENT_TEST"].split("::")[-1].split(" ")[0]
    CHECKS[name] = differs
    if MODE == "none" or not differs:
        return
    if MODE == "data" and differs == ["sequences"]:
        return
    pytest.fail(f"test did not start from the migrated state: {', '.join(differs)} differ")


def _one(db, statement: str, **params):
    return db.execute(sa.text(statement), params).scalar_one()


# -- read-only tests ---------------------------------------------------------------------

READS = [
    """SELECT c.id, c.name, sum(ol.quantity * ol.unit_price_cents) AS revenue
       FROM customers c JOIN orders o ON o.customer_id = c.id
       JOIN order_lines ol ON ol.order_id = o.id
       GROUP BY c.id ORDER BY revenue DESC LIMIT 10""",
    """SELECT p.sku, v.sku, sum(i.quantity - i.reserved) AS available
       FROM inventory i JOIN product_variants v ON v.id = i.variant_id
       JOIN products p ON p.id = v.product_id
       GROUP BY p.sku, v.sku HAVING sum(i.quantity - i.reserved) < 60 ORDER BY available""",
    """SELECT kind, count(*) FROM events WHERE payload @> '{"source": "api"}'
       GROUP BY kind ORDER BY kind""",
    """SELECT t.priority, count(DISTINCT t.id), count(tc.id)
       FROM tickets t LEFT JOIN ticket_comments tc ON tc.ticket_id = t.id
       GROUP BY t.priority ORDER BY t.priority""",
    """SELECT p.name, array_agg(DISTINCT tg.name), avg(r.rating), min(pr.amount_cents)
       FROM products p LEFT JOIN product_tags pt ON pt.product_id = p.id
       LEFT JOIN tags tg ON tg.id = pt.tag_id LEFT JOIN reviews r ON r.product_id = p.id
       LEFT JOIN product_variants v ON v.product_id = p.id
       LEFT JOIN prices pr ON pr.variant_id = v.id
       WHERE p.id = :n % 40 + 1 GROUP BY p.id""",
    """SELECT i.number, i.total_cents, sum(il.amount_cents), count(s.id)
       FROM invoices i JOIN invoice_lines il ON il.invoice_id = i.id
       LEFT JOIN shipments s ON s.order_id = i.order_id
       GROUP BY i.id ORDER BY i.number LIMIT 20""",
]


def read(db, n: int) -> None:
    rows = db.execute(sa.text(READS[n % len(READS)]), {"n": n}).all()
    assert rows


# -- small writes that commit -----------------------------------------------------------


def place_order(db, n: int) -> None:
    address = _one(
        db,
        "INSERT INTO addresses (organization_id, line1, city, country, postcode) "
        "VALUES (1, :line, 'Berlin', 'DE', '10115') RETURNING id",
        line=f"{n} Test Street",
    )
    customer = _one(
        db,
        "INSERT INTO customers (organization_id, email, name, billing_address_id, "
        "shipping_address_id) VALUES (1, :email, 'Test', :a, :a) RETURNING id",
        email=f"test{n}@example.com",
        a=address,
    )
    order = _one(
        db,
        "INSERT INTO orders (organization_id, customer_id, created_by_id, shipping_address_id, "
        "status, placed_at) VALUES (1, :c, 1, :a, 'placed', now()) RETURNING id",
        c=customer,
        a=address,
    )
    db.execute(
        sa.text(
            "INSERT INTO order_lines (order_id, variant_id, quantity, unit_price_cents) "
            "VALUES (:o, 1, 2, 1999), (:o, 2, 1, 4999)"
        ),
        {"o": order},
    )
    db.execute(
        sa.text(
            "INSERT INTO payments (order_id, amount_cents, method, paid_at, raw) "
            "VALUES (:o, 8997, 'card', now(), '{\"ok\": true}')"
        ),
        {"o": order},
    )
    db.commit()
    assert _one(db, "SELECT count(*) FROM order_lines WHERE order_id = :o", o=order) == 2


def reprice(db, n: int) -> None:
    db.execute(
        sa.text("UPDATE prices SET amount_cents = amount_cents + 100 WHERE variant_id = :v"),
        {"v": n % 80 + 1},
    )
    db.execute(
        sa.text(
            "INSERT INTO audit_log (organization_id, user_id, action, entity, entity_id, changes) "
            "VALUES (1, 1, 'update', 'price', :v, '{\"delta\": 100}')"
        ),
        {"v": n % 80 + 1},
    )
    db.commit()


def open_ticket(db, n: int) -> None:
    ticket = _one(
        db,
        "INSERT INTO tickets (organization_id, customer_id, priority, subject) "
        "VALUES (1, :c, 'high', 'Broken') RETURNING id",
        c=n % 40 + 1,
    )
    db.execute(
        sa.text("INSERT INTO ticket_comments (ticket_id, author_id, body) VALUES (:t, 2, 'On it')"),
        {"t": ticket},
    )
    db.execute(sa.text("UPDATE tickets SET status = 'open' WHERE id = :t"), {"t": ticket})
    db.commit()


def moderate(db, n: int) -> None:
    db.execute(sa.text("DELETE FROM reviews WHERE id = :r"), {"r": n % 30 + 1})
    db.execute(
        sa.text(
            "INSERT INTO events (organization_id, kind, payload) "
            "VALUES (1, 'review.deleted', jsonb_build_object('review', CAST(:r AS int)))"
        ),
        {"r": n % 30 + 1},
    )
    db.commit()


def _kept_order(n: int) -> int:
    """An order that heavy_delete keeps (ids 3k+1 and 3k+2), so the baseline never fails."""
    return (n % 40) // 2 * 3 + 1 + n % 2


def ship(db, n: int) -> None:
    order = _kept_order(n)
    db.execute(sa.text("UPDATE orders SET status = 'shipped' WHERE id = :o"), {"o": order})
    shipment = _one(
        db,
        "INSERT INTO shipments (order_id, warehouse_id, carrier, shipped_at) "
        "VALUES (:o, 1, 'dhl', now()) RETURNING id",
        o=order,
    )
    db.execute(
        sa.text(
            "INSERT INTO shipment_items (shipment_id, order_line_id, quantity) "
            "SELECT :s, id, quantity FROM order_lines WHERE order_id = :o"
        ),
        {"s": shipment, "o": order},
    )
    db.commit()


def invoice(db, n: int) -> None:
    order = _kept_order(n)
    created = _one(
        db,
        "INSERT INTO invoices (order_id, customer_id, total_cents) "
        "SELECT id, customer_id, 0 FROM orders WHERE id = :o RETURNING id",
        o=order,
    )
    db.execute(
        sa.text(
            "INSERT INTO invoice_lines (invoice_id, order_line_id, amount_cents) "
            "SELECT :i, id, quantity * unit_price_cents FROM order_lines WHERE order_id = :o"
        ),
        {"i": created, "o": order},
    )
    db.commit()


WRITES = [place_order, reprice, open_ticket, moderate, ship, invoice]


def write(db, n: int) -> None:
    WRITES[n % len(WRITES)](db, n)


# -- heavy writes and DDL -----------------------------------------------------------------


def heavy_update(db, n: int) -> None:
    db.execute(sa.text("UPDATE order_lines SET quantity = quantity + 1"))
    db.execute(
        sa.text("UPDATE products SET attributes = attributes || jsonb_build_object('touched', :n)"),
        {"n": n},
    )
    db.execute(sa.text("UPDATE inventory SET reserved = reserved + 1"))
    db.commit()


def heavy_delete(db, n: int) -> None:
    # Cascades to lines, payments, refunds, shipments, invoices and redemptions.
    db.execute(sa.text("DELETE FROM orders WHERE id % 3 = 0"))
    db.execute(sa.text("DELETE FROM audit_log WHERE id % 2 = 0"))
    db.commit()


def create_table(db, n: int) -> None:
    db.execute(
        sa.text(
            f"CREATE TABLE scratch_{n} (id bigserial PRIMARY KEY, "
            "order_id bigint REFERENCES orders(id) ON DELETE CASCADE, data jsonb)"
        )
    )
    db.execute(sa.text(f"INSERT INTO scratch_{n} (order_id, data) SELECT id, notes FROM orders"))
    db.execute(sa.text(f"CREATE INDEX ix_scratch_{n}_order ON scratch_{n} (order_id)"))
    db.commit()


def add_column(db, n: int) -> None:
    db.execute(sa.text(f"ALTER TABLE customers ADD COLUMN loyalty_{n} integer NOT NULL DEFAULT 0"))
    db.execute(sa.text(f"UPDATE customers SET loyalty_{n} = id % 7"))
    db.execute(sa.text(f"CREATE INDEX ix_customers_loyalty_{n} ON customers (loyalty_{n})"))
    db.commit()


def commit_elsewhere(db, url: str, n: int) -> None:
    """Code under test that commits on a connection of its own (a job, a module-level engine):
    no transaction of the test's session can roll this back."""
    with psycopg.connect(url, autocommit=True) as other:
        other.execute(f"CREATE TABLE outside_{n} (id bigserial PRIMARY KEY, note text)")
        other.execute(f"INSERT INTO outside_{n} (note) VALUES ('x')")
        other.execute(
            "INSERT INTO events (organization_id, kind, payload) VALUES (1, 'outside', '{}')"
        )
        other.execute(f"ALTER TYPE ticket_priority ADD VALUE 'p{n}'")
    assert _one(db, "SELECT count(*) FROM events WHERE kind = 'outside'") >= 1


HEAVY = ["heavy_update", "create_table", "heavy_delete", "add_column", "commit_elsewhere"]
DDL = {"create_table", "add_column", "commit_elsewhere"}  # TRUNCATE + reseed cannot undo these
OUTSIDE = {"commit_elsewhere"}  # a rolled-back transaction cannot undo these
