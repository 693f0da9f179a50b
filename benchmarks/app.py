"""A realistic Alembic application for the benchmark, generated into a scratch directory.

32 tables with BIGSERIAL keys, 59 foreign keys (many ON DELETE CASCADE),
three PostgreSQL enums, JSONB columns, two free-standing sequences, and 15
Alembic revisions: 12 of schema (tables, then indexes and columns added
later) and 3 that seed 1,211 rows. The seed is deterministic (fixed
timestamps, no random()), so every copy of the migrated state, on any server
started from the same PostgreSQL build, has the same fingerprint.

``write_app(directory)`` writes ``alembic.ini`` and ``alembic/`` (env.py
using the injected connection with ``.connect()``, and the revisions).
``FINGERPRINT_SQL`` is the cheap query every generated test runs first.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

TS = "TIMESTAMPTZ '2026-01-01 00:00:00+00'"

ENUMS = {
    "order_status": ("draft", "placed", "paid", "shipped", "cancelled"),
    "user_role": ("owner", "admin", "member", "viewer"),
    "ticket_priority": ("low", "normal", "high", "urgent"),
}

# (revision message, [(table, body)]); every table gets `id BIGSERIAL PRIMARY KEY`.
SCHEMA: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "organizations and users",
        [
            (
                "organizations",
                """name text NOT NULL UNIQUE,
                settings jsonb NOT NULL DEFAULT '{}',
                created_at timestamptz NOT NULL DEFAULT now()""",
            ),
            (
                "users",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                email text NOT NULL UNIQUE,
                name text NOT NULL,
                role user_role NOT NULL DEFAULT 'member',
                profile jsonb,
                created_at timestamptz NOT NULL DEFAULT now()""",
            ),
        ],
    ),
    (
        "teams",
        [
            (
                "teams",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                name text NOT NULL,
                lead_id bigint REFERENCES users ON DELETE SET NULL""",
            ),
            (
                "team_members",
                """team_id bigint NOT NULL REFERENCES teams ON DELETE CASCADE,
                user_id bigint NOT NULL REFERENCES users ON DELETE CASCADE,
                UNIQUE (team_id, user_id)""",
            ),
        ],
    ),
    (
        "customers",
        [
            (
                "addresses",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                line1 text NOT NULL,
                city text NOT NULL,
                country char(2) NOT NULL,
                postcode text""",
            ),
            (
                "customers",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                email text NOT NULL,
                name text NOT NULL,
                billing_address_id bigint REFERENCES addresses,
                shipping_address_id bigint REFERENCES addresses,
                account_manager_id bigint REFERENCES users ON DELETE SET NULL,
                metadata jsonb NOT NULL DEFAULT '{}',
                created_at timestamptz NOT NULL DEFAULT now()""",
            ),
        ],
    ),
    (
        "catalogue",
        [
            (
                "categories",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                parent_id bigint REFERENCES categories ON DELETE CASCADE,
                name text NOT NULL""",
            ),
            (
                "products",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                category_id bigint REFERENCES categories ON DELETE SET NULL,
                sku text NOT NULL UNIQUE,
                name text NOT NULL,
                description text,
                attributes jsonb NOT NULL DEFAULT '{}',
                is_active boolean NOT NULL DEFAULT true""",
            ),
            (
                "product_variants",
                """product_id bigint NOT NULL REFERENCES products ON DELETE CASCADE,
                sku text NOT NULL UNIQUE,
                name text NOT NULL,
                weight_grams integer NOT NULL DEFAULT 0""",
            ),
            (
                "tags",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                name text NOT NULL""",
            ),
            (
                "product_tags",
                """product_id bigint NOT NULL REFERENCES products ON DELETE CASCADE,
                tag_id bigint NOT NULL REFERENCES tags ON DELETE CASCADE,
                UNIQUE (product_id, tag_id)""",
            ),
        ],
    ),
    (
        "pricing and inventory",
        [
            (
                "price_lists",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                name text NOT NULL,
                currency char(3) NOT NULL""",
            ),
            (
                "prices",
                """price_list_id bigint NOT NULL REFERENCES price_lists ON DELETE CASCADE,
                variant_id bigint NOT NULL REFERENCES product_variants ON DELETE CASCADE,
                amount_cents bigint NOT NULL""",
            ),
            (
                "warehouses",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                address_id bigint REFERENCES addresses,
                name text NOT NULL""",
            ),
            (
                "inventory",
                """warehouse_id bigint NOT NULL REFERENCES warehouses ON DELETE CASCADE,
                variant_id bigint NOT NULL REFERENCES product_variants ON DELETE CASCADE,
                quantity integer NOT NULL DEFAULT 0,
                reserved integer NOT NULL DEFAULT 0""",
            ),
        ],
    ),
    (
        "orders",
        [
            (
                "orders",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                customer_id bigint NOT NULL REFERENCES customers ON DELETE CASCADE,
                created_by_id bigint REFERENCES users ON DELETE SET NULL,
                shipping_address_id bigint REFERENCES addresses,
                number bigint NOT NULL DEFAULT nextval('order_numbers') UNIQUE,
                status order_status NOT NULL DEFAULT 'draft',
                placed_at timestamptz,
                notes jsonb""",
            ),
            (
                "order_lines",
                """order_id bigint NOT NULL REFERENCES orders ON DELETE CASCADE,
                variant_id bigint NOT NULL REFERENCES product_variants,
                quantity integer NOT NULL CHECK (quantity > 0),
                unit_price_cents bigint NOT NULL""",
            ),
        ],
    ),
    (
        "payments",
        [
            (
                "payments",
                """order_id bigint NOT NULL REFERENCES orders ON DELETE CASCADE,
                amount_cents bigint NOT NULL,
                method text NOT NULL,
                paid_at timestamptz,
                raw jsonb""",
            ),
            (
                "refunds",
                """payment_id bigint NOT NULL REFERENCES payments ON DELETE CASCADE,
                order_id bigint NOT NULL REFERENCES orders ON DELETE CASCADE,
                amount_cents bigint NOT NULL,
                reason text""",
            ),
        ],
    ),
    (
        "fulfilment",
        [
            (
                "shipments",
                """order_id bigint NOT NULL REFERENCES orders ON DELETE CASCADE,
                warehouse_id bigint REFERENCES warehouses,
                carrier text NOT NULL,
                tracking text,
                shipped_at timestamptz""",
            ),
            (
                "shipment_items",
                """shipment_id bigint NOT NULL REFERENCES shipments ON DELETE CASCADE,
                order_line_id bigint NOT NULL REFERENCES order_lines ON DELETE CASCADE,
                quantity integer NOT NULL""",
            ),
        ],
    ),
    (
        "invoicing",
        [
            (
                "invoices",
                """order_id bigint NOT NULL REFERENCES orders ON DELETE CASCADE,
                customer_id bigint NOT NULL REFERENCES customers ON DELETE CASCADE,
                number bigint NOT NULL DEFAULT nextval('invoice_numbers') UNIQUE,
                issued_at timestamptz NOT NULL DEFAULT now(),
                total_cents bigint NOT NULL DEFAULT 0""",
            ),
            (
                "invoice_lines",
                """invoice_id bigint NOT NULL REFERENCES invoices ON DELETE CASCADE,
                order_line_id bigint REFERENCES order_lines ON DELETE CASCADE,
                amount_cents bigint NOT NULL""",
            ),
        ],
    ),
    (
        "support",
        [
            (
                "tickets",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                customer_id bigint NOT NULL REFERENCES customers ON DELETE CASCADE,
                assignee_id bigint REFERENCES users ON DELETE SET NULL,
                priority ticket_priority NOT NULL DEFAULT 'normal',
                subject text NOT NULL,
                status text NOT NULL DEFAULT 'new'""",
            ),
            (
                "ticket_comments",
                """ticket_id bigint NOT NULL REFERENCES tickets ON DELETE CASCADE,
                author_id bigint REFERENCES users ON DELETE SET NULL,
                body text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()""",
            ),
        ],
    ),
    (
        "marketing, integrations and audit",
        [
            (
                "coupons",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                code text NOT NULL UNIQUE,
                percent_off integer NOT NULL,
                rules jsonb NOT NULL DEFAULT '{}'""",
            ),
            (
                "coupon_redemptions",
                """coupon_id bigint NOT NULL REFERENCES coupons ON DELETE CASCADE,
                order_id bigint NOT NULL REFERENCES orders ON DELETE CASCADE,
                customer_id bigint NOT NULL REFERENCES customers ON DELETE CASCADE""",
            ),
            (
                "reviews",
                """product_id bigint NOT NULL REFERENCES products ON DELETE CASCADE,
                customer_id bigint NOT NULL REFERENCES customers ON DELETE CASCADE,
                rating smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
                body text""",
            ),
            (
                "events",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                kind text NOT NULL,
                payload jsonb NOT NULL,
                occurred_at timestamptz NOT NULL DEFAULT now()""",
            ),
            (
                "webhooks",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                url text NOT NULL,
                secret text NOT NULL,
                active boolean NOT NULL DEFAULT true""",
            ),
            (
                "webhook_deliveries",
                """webhook_id bigint NOT NULL REFERENCES webhooks ON DELETE CASCADE,
                event_id bigint NOT NULL REFERENCES events ON DELETE CASCADE,
                status_code integer,
                response jsonb""",
            ),
            (
                "audit_log",
                """organization_id bigint NOT NULL REFERENCES organizations ON DELETE CASCADE,
                user_id bigint REFERENCES users ON DELETE SET NULL,
                action text NOT NULL,
                entity text NOT NULL,
                entity_id bigint,
                changes jsonb,
                at timestamptz NOT NULL DEFAULT now()""",
            ),
        ],
    ),
]

TABLES = [table for _, tables in SCHEMA for table, _ in tables]

# Run before the tables of the revision with this index (free-standing sequences).
BEFORE = {
    0: [
        f"CREATE TYPE {name} AS ENUM ({', '.join(repr(v) for v in vals)})"
        for name, vals in ENUMS.items()
    ],
    5: ["CREATE SEQUENCE order_numbers START 10000"],
    8: ["CREATE SEQUENCE invoice_numbers START 1000"],
}

# A later revision that changes existing tables, through Alembic's own operations.
ALTERATIONS = """
    op.add_column("products", sa.Column("search_text", sa.Text(), nullable=True))
    op.add_column(
        "customers", sa.Column("tier", sa.Text(), nullable=False, server_default="standard")
    )
    op.create_index("ix_orders_customer_id", "orders", ["customer_id"])
    op.create_index("ix_order_lines_order_id", "order_lines", ["order_id"])
    op.create_index("ix_users_organization_id", "users", ["organization_id"])
    op.create_index("ix_tickets_customer_id", "tickets", ["customer_id"])
    op.create_index("ix_events_kind_time", "events", ["kind", "occurred_at"])
    op.execute("CREATE INDEX ix_events_payload ON events USING gin (payload jsonb_path_ops)")
    op.create_check_constraint("ck_prices_positive", "prices", "amount_cents >= 0")
"""

SEEDS: list[tuple[str, list[str]]] = [
    (
        "seed organizations, people and customers",
        [
            f"""INSERT INTO organizations (name, settings, created_at)
            SELECT 'Org ' || g,
                   jsonb_build_object('plan', (ARRAY['free','team','enterprise'])[1 + g % 3],
                                      'seats', g * 10),
                   {TS} + g * INTERVAL '1 day'
            FROM generate_series(1, 3) g""",
            f"""INSERT INTO users (organization_id, email, name, role, profile, created_at)
            SELECT 1 + g % 3, 'user' || g || '@example.com', 'User ' || g,
                   (ARRAY['owner','admin','member','viewer']::user_role[])[1 + g % 4],
                   jsonb_build_object('locale', (ARRAY['en','de','fr'])[1 + g % 3], 'n', g),
                   {TS} + g * INTERVAL '1 hour'
            FROM generate_series(1, 30) g""",
            """INSERT INTO teams (organization_id, name, lead_id)
            SELECT 1 + g % 3, 'Team ' || g, g FROM generate_series(1, 6) g""",
            """INSERT INTO team_members (team_id, user_id)
            SELECT 1 + g % 6, g FROM generate_series(1, 30) g""",
            """INSERT INTO addresses (organization_id, line1, city, country, postcode)
            SELECT 1 + g % 3, g || ' Main Street',
                   (ARRAY['Berlin','Paris','Lisbon','Oslo'])[1 + g % 4],
                   (ARRAY['DE','FR','PT','NO'])[1 + g % 4], lpad(g::text, 5, '0')
            FROM generate_series(1, 40) g""",
            f"""INSERT INTO customers (organization_id, email, name, billing_address_id,
                   shipping_address_id, account_manager_id, metadata, created_at)
            SELECT 1 + g % 3, 'customer' || g || '@example.com', 'Customer ' || g, g,
                   1 + (g * 7) % 40, 1 + g % 30,
                   jsonb_build_object('segment', (ARRAY['smb','mid','ent'])[1 + g % 3],
                                      'score', g % 11),
                   {TS} + g * INTERVAL '2 hours'
            FROM generate_series(1, 40) g""",
        ],
    ),
    (
        "seed catalogue, prices and stock",
        [
            """INSERT INTO categories (organization_id, parent_id, name)
            SELECT 1 + g % 3, CASE WHEN g <= 3 THEN NULL ELSE 1 + g % 3 END, 'Category ' || g
            FROM generate_series(1, 10) g""",
            """INSERT INTO products (organization_id, category_id, sku, name, description,
                   attributes, is_active)
            SELECT 1 + g % 3, 1 + g % 10, 'SKU-' || lpad(g::text, 4, '0'), 'Product ' || g,
                   'Description of product ' || g,
                   jsonb_build_object('colour', (ARRAY['red','green','blue'])[1 + g % 3],
                                      'size', (ARRAY['S','M','L','XL'])[1 + g % 4]),
                   g % 7 <> 0
            FROM generate_series(1, 40) g""",
            """INSERT INTO product_variants (product_id, sku, name, weight_grams)
            SELECT 1 + (g - 1) / 2,
                   'SKU-' || lpad((1 + (g - 1) / 2)::text, 4, '0') || '-' || (g % 2),
                   'Variant ' || g, 100 + g * 5
            FROM generate_series(1, 80) g""",
            """INSERT INTO tags (organization_id, name)
            SELECT 1 + g % 3, 'tag-' || g FROM generate_series(1, 12) g""",
            """INSERT INTO product_tags (product_id, tag_id)
            SELECT 1 + g % {products}, 1 + (g / {products} + g) % 12
            FROM generate_series(1, 60) g""",
            """INSERT INTO price_lists (organization_id, name, currency)
            SELECT g, 'List ' || g, (ARRAY['EUR','USD','NOK'])[g] FROM generate_series(1, 3) g""",
            """INSERT INTO prices (price_list_id, variant_id, amount_cents)
            SELECT 1 + g % 3, g, 500 + (g * 37) % 5000 FROM generate_series(1, 80) g""",
            """INSERT INTO warehouses (organization_id, address_id, name)
            SELECT g, g, 'Warehouse ' || g FROM generate_series(1, 3) g""",
            """INSERT INTO inventory (warehouse_id, variant_id, quantity, reserved)
            SELECT 1 + g % 3, g, (g * 13) % 120, g % 5 FROM generate_series(1, 80) g""",
            """INSERT INTO coupons (organization_id, code, percent_off, rules)
            SELECT 1 + g % 3, 'SAVE' || (g * 5), g * 5, jsonb_build_object('min_cents', g * 1000)
            FROM generate_series(1, 6) g""",
        ],
    ),
    (
        "seed orders, fulfilment, support and history",
        [
            f"""INSERT INTO orders (organization_id, customer_id, created_by_id,
                   shipping_address_id, status, placed_at, notes)
            SELECT 1 + g % 3, 1 + g % 40, 1 + g % 30, 1 + g % 40,
                   (ARRAY['draft','placed','paid','shipped','cancelled']::order_status[])
                   [1 + g % 5],
                   {TS} + g * INTERVAL '3 hours',
                   CASE WHEN g % 4 = 0 THEN jsonb_build_object('gift', true, 'note', 'n' || g) END
            FROM generate_series(1, 60) g""",
            """INSERT INTO order_lines (order_id, variant_id, quantity, unit_price_cents)
            SELECT 1 + (g - 1) / 2, 1 + (g * 3) % 80, 1 + g % 4, 500 + (g * 53) % 4000
            FROM generate_series(1, 120) g""",
            f"""INSERT INTO payments (order_id, amount_cents, method, paid_at, raw)
            SELECT g, 1000 + g * 77, (ARRAY['card','sepa','invoice'])[1 + g % 3],
                   {TS} + g * INTERVAL '4 hours',
                   jsonb_build_object('psp_id', 'psp_' || g, 'ok', true)
            FROM generate_series(1, 50) g""",
            """INSERT INTO refunds (payment_id, order_id, amount_cents, reason)
            SELECT g * 3, g * 3, 500, 'damaged' FROM generate_series(1, 5) g""",
            f"""INSERT INTO shipments (order_id, warehouse_id, carrier, tracking, shipped_at)
            SELECT g, 1 + g % 3, (ARRAY['dhl','ups','posten'])[1 + g % 3], 'TRK' || g,
                   {TS} + g * INTERVAL '5 hours'
            FROM generate_series(1, 45) g""",
            """INSERT INTO shipment_items (shipment_id, order_line_id, quantity)
            SELECT 1 + (g - 1) % 45, g, 1 FROM generate_series(1, 80) g""",
            f"""INSERT INTO invoices (order_id, customer_id, issued_at, total_cents)
            SELECT g, 1 + g % 40, {TS} + g * INTERVAL '6 hours', 1000 + g * 91
            FROM generate_series(1, 45) g""",
            """INSERT INTO invoice_lines (invoice_id, order_line_id, amount_cents)
            SELECT 1 + (g - 1) % 45, g, 100 + g FROM generate_series(1, 80) g""",
            """INSERT INTO tickets (organization_id, customer_id, assignee_id, priority, subject,
                   status)
            SELECT 1 + g % 3, 1 + g % 40, 1 + g % 30,
                   (ARRAY['low','normal','high','urgent']::ticket_priority[])[1 + g % 4],
                   'Ticket ' || g, (ARRAY['new','open','closed'])[1 + g % 3]
            FROM generate_series(1, 20) g""",
            f"""INSERT INTO ticket_comments (ticket_id, author_id, body, created_at)
            SELECT 1 + g % 20, 1 + g % 30, 'Comment ' || g, {TS} + g * INTERVAL '1 minute'
            FROM generate_series(1, 40) g""",
            """INSERT INTO coupon_redemptions (coupon_id, order_id, customer_id)
            SELECT 1 + g % 6, g, 1 + g % 40 FROM generate_series(1, 10) g""",
            """INSERT INTO reviews (product_id, customer_id, rating, body)
            SELECT 1 + g % 40, 1 + g % 40, 1 + g % 5, 'Review ' || g
            FROM generate_series(1, 30) g""",
            f"""INSERT INTO events (organization_id, kind, payload, occurred_at)
            SELECT 1 + g % 3, (ARRAY['order.placed','order.paid','ticket.opened'])[1 + g % 3],
                   jsonb_build_object('source', (ARRAY['api','web'])[1 + g % 2], 'seq', g),
                   {TS} + g * INTERVAL '7 minutes'
            FROM generate_series(1, 30) g""",
            """INSERT INTO webhooks (organization_id, url, secret)
            SELECT g, 'https://hooks.example.com/' || g, 'secret-' || g
            FROM generate_series(1, 3) g""",
            """INSERT INTO webhook_deliveries (webhook_id, event_id, status_code, response)
            SELECT 1 + g % 3, g, (ARRAY[200, 200, 500])[1 + g % 3], jsonb_build_object('ms', g * 3)
            FROM generate_series(1, 30) g""",
            f"""INSERT INTO audit_log (organization_id, user_id, action, entity, entity_id,
                   changes, at)
            SELECT 1 + g % 3, 1 + g % 30, (ARRAY['create','update','delete'])[1 + g % 3],
                   'order', g, jsonb_build_object('field', 'status', 'to', 'paid'),
                   {TS} + g * INTERVAL '9 minutes'
            FROM generate_series(1, 40) g""",
        ],
    ),
]

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/alembic
sqlalchemy.url = postgresql+psycopg://localhost/placeholder

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = WARNING
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

ENV_PY = '''\
"""Alembic environment of the benchmark app: uses the injected connection when given."""

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = None


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection", None)
    if connectable is None:
        url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
        connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
'''

REVISION = '''\
"""{message}

Revision ID: {revision}
Revises: {down}
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}

def downgrade() -> None:
{downgrade}
'''


def _statements(sqls: list[str]) -> str:
    """``op.execute`` calls, the SQL laid out as a person would write it."""
    calls = []
    for statement in sqls:
        first, _, rest = statement.strip().partition("\n")
        statement = (first + "\n" + textwrap.dedent(rest)).strip()
        if "\n" not in statement:
            calls.append(f"    op.execute({statement!r})\n")
        else:
            body = textwrap.indent(statement, " " * 8)
            calls.append(f'    op.execute(\n        """\n{body}\n        """\n    )\n')
    return "".join(calls)


# Reference tables keep their size at every scale; the others grow with it.
FIXED_SIZE = {
    "organizations",
    "teams",
    "categories",
    "tags",
    "price_lists",
    "warehouses",
    "coupons",
    "webhooks",
}


def _target(statement: str) -> str:
    return statement.split("INSERT INTO ", 1)[1].split()[0]


def scaled_seeds(scale: int) -> list[tuple[str, list[str]]]:
    """SEEDS with every growing table's row count times ``scale`` (1: as written)."""
    seeds = []
    for message, sqls in SEEDS:
        scaled = []
        for statement in sqls:
            head, rows = statement.rsplit("generate_series(1, ", 1)
            count, tail = rows.split(")", 1)
            factor = 1 if _target(statement) in FIXED_SIZE else scale
            statement = f"{head}generate_series(1, {int(count) * factor}){tail}"
            scaled.append(statement.replace("{products}", str(40 * scale)))
        seeds.append((message, scaled))
    return seeds


def _revisions(scale: int = 1) -> list[tuple[str, str, str]]:
    """(message, upgrade body, downgrade body) of each revision, in order."""
    revisions = []
    for index, (message, tables) in enumerate(SCHEMA):
        upgrade = list(BEFORE.get(index, []))
        for table, body in tables:
            columns = textwrap.indent(textwrap.dedent("                " + body.strip()), "    ")
            upgrade.append(f"CREATE TABLE {table} (\n    id BIGSERIAL PRIMARY KEY,\n{columns}\n)")
        downgrade = [f"DROP TABLE {table} CASCADE" for table, _ in reversed(tables)]
        if index == 0:
            downgrade += [f"DROP TYPE {name}" for name in ENUMS]
        if index in (5, 8):
            downgrade.append(BEFORE[index][0].replace("CREATE", "DROP").split(" START")[0])
        revisions.append((message, _statements(upgrade), _statements(downgrade)))
    revisions.append(
        (
            "indexes, a check constraint and two columns",
            ALTERATIONS.strip("\n") + "\n",
            '    op.drop_column("products", "search_text")\n'
            '    op.drop_column("customers", "tier")\n',
        )
    )
    for message, sqls in scaled_seeds(scale):
        tables = [_target(s) for s in sqls]
        downgrade = [f"DELETE FROM {table}" for table in reversed(tables)]
        revisions.append((message, _statements(sqls), _statements(downgrade)))
    return revisions


def write_app(directory: Path, scale: int = 1) -> Path:
    """Write the app's Alembic project into ``directory``; returns the alembic.ini path.

    ``scale`` multiplies the seed rows of every table but the reference ones.
    """
    versions = directory / "alembic" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (directory / "alembic.ini").write_text(ALEMBIC_INI)
    (directory / "alembic" / "env.py").write_text(ENV_PY)
    down = None
    for number, (message, upgrade, downgrade) in enumerate(_revisions(scale), start=1):
        revision = f"{number:04d}"
        slug = message.replace(",", "").replace(" ", "_")
        (versions / f"{revision}_{slug}.py").write_text(
            REVISION.format(
                message=message.capitalize(),
                revision=revision,
                down=down,
                upgrade=upgrade,
                downgrade=downgrade,
            )
        )
        down = revision
    return directory / "alembic.ini"


def revision_count() -> int:
    return len(_revisions())


def foreign_key_count() -> int:
    return sum(body.count("REFERENCES") for _, tables in SCHEMA for _, body in tables)


def seed_row_count(scale: int = 1) -> int:
    total = 0
    for _, sqls in scaled_seeds(scale):
        for statement in sqls:
            total += int(statement.rsplit("generate_series(1, ", 1)[1].split(")")[0])
    return total


# -- the fingerprint of the migrated state --------------------------------------------------

# The row as text, not hash_record_extended(x, 0) (twice as fast): that hashes enum
# values by their OIDs, which differ between two databases migrated on one server.
_TABLE_PART = (
    "'{t}', (SELECT json_build_array(count(*), coalesce(sum(id), 0), "
    "coalesce(sum(hashtext(x::text)::bigint), 0)) FROM {t} x)"
)

# Schema: every column (name, type, nullability) of every table, every index,
# constraint and sequence name, and every enum label, in one md5.
_SCHEMA_PART = """(SELECT md5(string_agg(item, ',' ORDER BY item)) FROM (
  SELECT 'col:' || c.relname || '.' || a.attname || ':' || format_type(a.atttypid, a.atttypmod)
         || ':' || a.attnotnull AS item
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
    AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL SELECT 'idx:' || indexname FROM pg_indexes WHERE schemaname = 'public'
  UNION ALL SELECT 'con:' || conname FROM pg_constraint
            WHERE connamespace = 'public'::regnamespace
  UNION ALL SELECT 'seq:' || relname FROM pg_class
            WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace
  UNION ALL SELECT 'enum:' || t.typname || '.' || e.enumlabel
            FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
) items)"""

_SEQUENCES_PART = (
    "(SELECT json_object_agg(sequencename, last_value) FROM pg_sequences "
    "WHERE schemaname = 'public')"
)

# One round trip: {"schema": md5, "data": {table: [count, sum(id), sum(hash(row))]},
# "sequences": {name: last_value}}.
FINGERPRINT_SQL = (
    "SELECT json_build_object('schema', "
    + _SCHEMA_PART
    + ", 'data', json_build_object("
    + ", ".join(_TABLE_PART.format(t=t) for t in TABLES)
    + "), 'sequences', "
    + _SEQUENCES_PART
    + ")"
)
