"""The schema is versioned by Alembic; every step is frozen DDL.

A database made by the first release, with rows in it, is brought to today's schema on
SQLite and on Postgres: the rows survive, and the result is exactly what the models
describe (Alembic's own comparison finds no difference). A database from before Alembic
(the ``schema_migrations`` table) is recognised and taken over.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from shotline.store.db import HEAD, MIGRATIONS, Database, meta


def _config(conn: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'shotline.db'}"


def _first_release(url: str) -> sa.Engine:
    """A database as the first release left it, with a finished render and its money."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0001")
        conn.execute(sa.text(
            "INSERT INTO renders (id, key, status, model, brief, plan, estimate_usd, cost_usd, "
            "created_at, updated_at) VALUES ('r_1', 'sha256:k', 'awaiting_review', 'local/sim', "
            "'Shot 1: a kite.', '{\"shots\": []}', 400000, 400000, 1.0, 2.0)"))
        conn.execute(sa.text(
            "INSERT INTO render_shots (render_id, idx, key, state, cached, cost_usd) "
            "VALUES ('r_1', 0, 'sha256:s', 'done', false, 400000)"))
        conn.execute(sa.text(
            "INSERT INTO ledger (render_id, shot_key, provider, model, provider_job_id, "
            "seconds_billed, audio, unit_price, amount, outcome, created_at) VALUES ('r_1', "
            "'sha256:s', 'local', 'sim', 'job-1', 4, false, 100000, 400000, 'succeeded', 1.5)"))
    return engine


def test_head_is_the_newest_script() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD]


def test_first_release_upgrades_to_the_models_and_keeps_its_rows(url: str) -> None:
    engine = _first_release(url)
    db = Database(url)  # opening migrates
    with db.read() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        assert compare_metadata(MigrationContext.configure(conn), meta) == []
        render = conn.execute(sa.text("SELECT status, auto_approve, tenant_id FROM renders")).one()
        assert tuple(render) == ("awaiting_review", False, None)
        assert conn.execute(sa.text("SELECT amount FROM ledger")).scalar() == 400000
        assert conn.execute(sa.text("SELECT progress FROM render_shots")).scalar() is None
    db.close()
    engine.dispose()


def test_a_new_database_is_what_the_steps_make(url: str) -> None:
    """New databases are made from the models; the steps must arrive at the same place."""
    db = Database(url)
    with db.read() as conn:
        assert compare_metadata(MigrationContext.configure(conn), meta) == []
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    db.close()


@pytest.mark.parametrize("applied, stamp", [
    (["m001_initial"], "0001"),
    (["m001_initial", "m002_vendor_events"], "0002"),
    (["m001_initial", "m002_vendor_events", "m003_service"], "0003"),
])
def test_a_database_from_before_alembic_is_taken_over(url: str, applied: list[str],
                                                      stamp: str) -> None:
    engine = _first_release(url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), stamp)
        conn.execute(sa.text("DROP TABLE alembic_version"))
        conn.execute(sa.text("CREATE TABLE schema_migrations (name VARCHAR(80) PRIMARY KEY, "
                             "applied_at FLOAT NOT NULL)"))
        for name in applied:
            conn.execute(sa.text("INSERT INTO schema_migrations VALUES (:n, 1.0)"), {"n": name})
    db = Database(url)
    with db.read() as conn:
        assert not sa.inspect(conn).has_table("schema_migrations")
        assert compare_metadata(MigrationContext.configure(conn), meta) == []
        assert conn.execute(sa.text("SELECT count(*) FROM ledger")).scalar() == 1
    db.close()
    engine.dispose()
