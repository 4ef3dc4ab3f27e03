"""Accounting: ``messages.excluded`` marks the rows enrollment records for list rows it did
not enroll (invalid, duplicate, filtered, suppressed), so every row has a visible state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable without a default: on both SQLite and PostgreSQL an instant change, however
    # many messages exist (no table rewrite).
    op.add_column("messages", sa.Column("excluded", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("excluded")
