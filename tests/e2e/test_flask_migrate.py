"""A Flask-SQLAlchemy + Flask-Migrate project, laid out as ``flask db init`` lays it out.

``migrations/alembic.ini`` (no ``script_location``: Flask-Migrate sets it) and
Flask-Migrate's own ``env.py``, which ignores the injected connection and
migrates through the app's engine inside an app context. What the user writes:
the ``app``/``client`` fixtures, and ``neon_migration_context`` entering the
app context. The app's engine, built from the sandbox ``DATABASE_URL``, follows
the migration branch during the upgrade and each test's branch afterwards.

Needs issue 11's ``migrations/alembic.ini`` discovery, ``script_location``
default and ``neon_migration_context``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import flask_migrate

if TYPE_CHECKING:
    from conftest import NeonProject

TEMPLATES = Path(flask_migrate.__file__).parent / "templates" / "flask"

APP = """\
import os

from flask import Flask, jsonify
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
migrate = Migrate()


class Note(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    body = db.Column(db.Text, nullable=False)


def create_app():
    app = Flask(__name__)
    url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    db.init_app(app)
    migrate.init_app(app, db)

    @app.post("/notes")
    def add_note():
        db.session.add(Note(body="hello"))
        db.session.commit()
        return jsonify(ok=True), 201

    @app.get("/notes/count")
    def count_notes():
        return jsonify(count=db.session.query(Note).count())

    return app
"""

REVISION = '''\
"""notes"""
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("note", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("body", sa.Text, nullable=False))
    op.execute("INSERT INTO note (body) VALUES ('seed')")


def downgrade():
    op.drop_table("note")
'''

CONFTEST = """\
import pytest

from app import create_app


@pytest.fixture(scope="session")
def app():
    return create_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def neon_migration_context():
    # Flask-Migrate's env.py needs an app context. An app of its own: a context of the
    # tests' app left open for the session would keep db.session open across tests.
    with create_app().app_context():
        yield
"""

TESTS = """\
import pytest


@pytest.mark.neon
def test_1_add(client):
    assert client.post("/notes").status_code == 201
    assert client.get("/notes/count").json == {"count": 2}


@pytest.mark.neon
def test_2_gone(client):
    assert client.get("/notes/count").json == {"count": 1}
"""


def test_flask_migrate_layout_with_no_glue(neon_project: NeonProject) -> None:
    migrations = neon_project.path / "migrations"
    (migrations / "versions").mkdir(parents=True)
    shutil.copyfile(TEMPLATES / "env.py", migrations / "env.py")
    shutil.copyfile(TEMPLATES / "script.py.mako", migrations / "script.py.mako")
    shutil.copyfile(TEMPLATES / "alembic.ini.mako", migrations / "alembic.ini")
    (migrations / "versions" / "a1_notes.py").write_text(REVISION)
    neon_project.pytester.makepyfile(app=APP, test_notes=TESTS)
    neon_project.pytester.makeconftest(CONFTEST)

    result = neon_project.run()

    result.assert_outcomes(passed=2)
    output = neon_project.output(result)
    assert "migrations/alembic.ini" in output  # the report names the file it used
    neon_project.assert_nothing_left()
