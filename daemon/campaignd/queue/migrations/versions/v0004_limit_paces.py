"""Shared paces: one row per pace key with its GCRA theoretical arrival time, so every daemon
on one PostgreSQL database takes its permits from the same pace (issue 13).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "limit_paces",
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("tat", sa.Double, nullable=False),
        sa.Column("interval", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_limit_paces"),
    )


def downgrade() -> None:
    op.drop_table("limit_paces")
