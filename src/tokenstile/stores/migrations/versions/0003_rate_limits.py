"""Fixed-window rate-limit counters shared by every process.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(320), primary_key=True),
        sa.Column("window_ends", sa.Double, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_index("ix_rate_limits_window_ends", "rate_limits", ["window_ends"])


def downgrade() -> None:
    op.drop_table("rate_limits")
