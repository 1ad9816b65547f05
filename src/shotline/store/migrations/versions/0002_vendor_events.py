"""Inbound vendor webhook deliveries already seen, so a redelivery is recognised.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vendor_events",
        sa.Column("provider", sa.String(40), primary_key=True),
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("job_id", sa.String(200), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
    )
