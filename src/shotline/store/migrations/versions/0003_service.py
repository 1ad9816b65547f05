"""The service: tenants, API keys, idempotency, render events, media tokens, webhooks.

Adds the columns the service keeps on renders and shots (a NULL tenant is a render made
from the CLI or the library), and the tables of the HTTP service and its outbox.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MONEY = sa.BigInteger


def upgrade() -> None:
    # Plain ADD COLUMN: SQLite does it in place, and copying the table (batch mode) would
    # trip over the shots' foreign key to it.
    op.add_column("renders", sa.Column("tenant_id", sa.String(40)))
    op.add_column("renders", sa.Column("options", sa.JSON))
    op.add_column("renders", sa.Column("webhook_url", sa.Text))
    op.add_column("renders", sa.Column("auto_approve", sa.Boolean, nullable=False,
                                       server_default=sa.false()))
    op.add_column("renders", sa.Column("max_usd", MONEY))
    op.add_column("renders", sa.Column("lease_owner", sa.String(80)))
    op.add_column("renders", sa.Column("lease_until", sa.Float))
    op.add_column("renders", sa.Column("review_note", sa.Text))
    op.create_index("ix_renders_tenant_id", "renders", ["tenant_id"])
    op.add_column("render_shots", sa.Column("progress", sa.Float))

    op.create_table(
        "tenants",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("webhook_secret", sa.String(100), nullable=False),
        sa.Column("daily_budget_usd", MONEY),
        sa.Column("monthly_budget_usd", MONEY),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(40), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(80), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("body", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "render_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("render_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_render_events_render_id", "render_events", ["render_id"])
    op.create_table(
        "media",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(40)),
        sa.Column("render_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_media_tenant_id", "media", ["tenant_id"])
    op.create_index("ix_media_render_id", "media", ["render_id"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("disabled_at", sa.Float),
        sa.Column("disabled_reason", sa.Text),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40)),
        sa.Column("render_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_webhook_events_tenant_id", "webhook_events", ["tenant_id"])
    op.create_index("ix_webhook_events_render_id", "webhook_events", ["render_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(40), sa.ForeignKey("webhook_events.id"), nullable=False),
        sa.Column("endpoint_id", sa.String(40)),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("event_id", "url", name="one_delivery_per_event_and_url"),
    )
    op.create_index("ix_webhook_deliveries_next_attempt_at", "webhook_deliveries",
                    ["next_attempt_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.Integer, sa.ForeignKey("webhook_deliveries.id"),
                  nullable=False),
        sa.Column("attempted_at", sa.Float, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("seconds", sa.Float, nullable=False),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])
