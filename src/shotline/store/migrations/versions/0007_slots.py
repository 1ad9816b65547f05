"""Per-provider concurrency slots, leased, shared by every worker.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slots",
        sa.Column("holder", sa.String(80), primary_key=True),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("lease_until", sa.Float, nullable=False),
    )
    op.create_index("ix_slots_provider", "slots", ["provider"])
