"""The schema of the first release: renders, shots, calls, clips, outputs, money.

Frozen DDL: this step creates exactly what the first release created, whatever the
models in ``shotline.store.db`` look like today. Money columns are whole micro-dollars.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MONEY = sa.BigInteger


def upgrade() -> None:
    op.create_table(
        "renders",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("brief", sa.Text, nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("output", sa.Text),
        sa.Column("seconds", sa.Float),
        sa.Column("estimate_usd", MONEY, nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_renders_key", "renders", ["key"])
    op.create_table(
        "render_shots",
        sa.Column("render_id", sa.String(40), sa.ForeignKey("renders.id"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("cached", sa.Boolean, nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_render_shots_key", "render_shots", ["key"])
    op.create_table(
        "calls",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("job", sa.JSON),
        sa.Column("owner", sa.String(80)),
        sa.Column("heartbeat", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "clips",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=False),
    )
    op.create_table(
        "outputs",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("render_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("render_id", sa.String(40)),
        sa.Column("shot_key", sa.String(80), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("provider_job_id", sa.String(200), nullable=False),
        sa.Column("seconds_billed", sa.Integer, nullable=False),
        sa.Column("audio", sa.Boolean, nullable=False),
        sa.Column("unit_price", MONEY, nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("provider", "provider_job_id", name="ledger_one_row_per_job"),
    )
    op.create_index("ix_ledger_created_at", "ledger", ["created_at"])
    op.create_table(
        "reservations",
        sa.Column("render_id", sa.String(40), primary_key=True),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_reservations_created_at", "reservations", ["created_at"])
    op.create_table(
        "savings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("render_id", sa.String(40), nullable=False),
        sa.Column("shot_key", sa.String(80), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
