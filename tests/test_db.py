"""Schema migrations: a database made by an earlier version opens and upgrades in place."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from shotline.db import SERVICE_COLUMNS, SERVICE_TABLES, Database, renders


def test_m003_upgrades_a_database_made_before_the_service(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(url)
    with db.write() as conn:  # take the database back to what m001 and m002 made
        for table in reversed(SERVICE_TABLES):
            conn.execute(sa.text(f"DROP TABLE {table.name}"))
        conn.execute(sa.text("DROP INDEX ix_renders_tenant_id"))
        for table, names in SERVICE_COLUMNS.items():
            for name in names:
                conn.execute(sa.text(f"ALTER TABLE {table.name} DROP COLUMN {name}"))
        conn.execute(sa.text("DELETE FROM schema_migrations WHERE name = 'm003_service'"))
        conn.execute(sa.text(
            "INSERT INTO renders (id, key, status, model, brief, plan, estimate_usd, cost_usd, "
            "created_at, updated_at) VALUES ('r_old', 'k', 'awaiting_review', 'local/preview', "
            "'b', '{}', 0, 0, 1, 1)"))
    db.close()

    db = Database(url)
    with db.read() as conn:
        have = {c["name"] for c in sa.inspect(conn).get_columns("renders")}
        old = conn.execute(sa.select(renders).where(renders.c.id == "r_old")).one()
        tables = set(sa.inspect(conn).get_table_names())
    db.close()
    assert set(SERVICE_COLUMNS[renders]) <= have
    assert {t.name for t in SERVICE_TABLES} <= tables
    assert old.status == "awaiting_review" and old.tenant_id is None and old.auto_approve is False


def test_m004_adds_the_quality_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(url)
    with db.write() as conn:  # take the database back to what m003 made
        for table in ("renders", "render_shots"):
            conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN quality"))
        conn.execute(sa.text("DELETE FROM schema_migrations WHERE name = 'm004_quality'"))
    db.close()
    db = Database(url)
    with db.read() as conn:
        for table in ("renders", "render_shots"):
            assert "quality" in {c["name"] for c in sa.inspect(conn).get_columns(table)}
    db.close()
