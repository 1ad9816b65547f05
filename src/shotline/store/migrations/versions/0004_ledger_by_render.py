"""Index the ledger by render: every budget check sums what a render has billed.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ledger_render_id", "ledger", ["render_id"])
