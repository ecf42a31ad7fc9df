"""Sliding-log rate limits: one row per attempt, replacing the fixed-window counters.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_events",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Double, nullable=False),
    )
    op.create_index("ix_rate_events_key_expires_at", "rate_events", ["key", "expires_at"])
    op.create_index("ix_rate_events_expires_at", "rate_events", ["expires_at"])
    # Fixed-window counts cannot become a log; dropping them forgives at most one window.
    op.drop_index("ix_rate_limits_window_ends", table_name="rate_limits")
    op.drop_table("rate_limits")


def downgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(320), primary_key=True),
        sa.Column("window_ends", sa.Double, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_index("ix_rate_limits_window_ends", "rate_limits", ["window_ends"])
    op.drop_table("rate_events")
