"""Partial indexes: ``messages (service, sent_at)`` and ``messages (message_id)`` hold only the
rows that have the value. A queued or in-flight row has neither, so enrolling a million rows no
longer writes two million index entries that say "nothing yet", and marking a row in flight
(its service set before it is sent) no longer moves it inside the first index. The queries
that use them (``service = ? AND sent_at > ?``, ``message_id = ?``/``IN``) imply the condition,
so both SQLite and PostgreSQL keep using them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SERVICE = "ix_messages_service_sent_at"
MESSAGE_ID = "ix_messages_message_id"


def _where(condition: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.drop_index(SERVICE, table_name="messages")
    op.create_index(SERVICE, "messages", ["service", "sent_at"], **_where("sent_at IS NOT NULL"))
    op.drop_index(MESSAGE_ID, table_name="messages")
    op.create_index(MESSAGE_ID, "messages", ["message_id"], **_where("message_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index(SERVICE, table_name="messages")
    op.create_index(SERVICE, "messages", ["service", "sent_at"])
    op.drop_index(MESSAGE_ID, table_name="messages")
    op.create_index(MESSAGE_ID, "messages", ["message_id"])
