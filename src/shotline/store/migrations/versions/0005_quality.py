"""The quality gate's findings: flags on each shot and on the output.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("renders", sa.Column("quality", sa.JSON))
    op.add_column("render_shots", sa.Column("quality", sa.JSON))
