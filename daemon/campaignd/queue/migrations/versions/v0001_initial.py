"""The initial schema: campaigns, editions, recipients, messages, events, suppressions,
service_days.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Written out in full rather than imported from ``tables.py``: a revision is a snapshot of the
schema at its time, and must not change when the tables do.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Time = sa.Double
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CAMPAIGN_STATES = "'scheduled', 'sending', 'waiting', 'paused', 'stopped', 'completed', 'failed'"
MESSAGE_STATUSES = (
    "'queued', 'sending', 'sent', 'deferred', 'failed', 'bounced', 'suppressed', 'skipped', "
    "'uncertain'"
)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.Column("started_at", Time),
        sa.Column("finished_at", Time),
        sa.Column("last_edition", sa.Integer),
        sa.Column("last_fired_at", Time),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
        sa.CheckConstraint(f"state IN ({CAMPAIGN_STATES})", name="ck_campaigns_state"),
    )
    op.create_table(
        "editions",
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("edition", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("fired_at", Time, nullable=False),
        sa.Column("caught_up", sa.Boolean, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "edition", name="pk_editions"),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_editions_campaign_id_campaigns"
        ),
    )
    op.create_table(
        "recipients",
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("smtp_address", sa.Text, nullable=False),
        sa.Column("domain", sa.Text, nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("enrolled_at", Time, nullable=False),
        sa.Column("removed_at", Time),
        sa.PrimaryKeyConstraint("campaign_id", "key", name="pk_recipients"),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_recipients_campaign_id_campaigns"
        ),
    )
    op.create_table(
        "messages",
        sa.Column("id", RowId, nullable=False, autoincrement=True),
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("edition", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", Time),
        sa.Column("claimed_by", sa.Text),
        sa.Column("claimed_until", Time),
        sa.Column("service", sa.Text),
        sa.Column("message_id", sa.Text),
        sa.Column("last_error", sa.Text),
        sa.Column("last_code", sa.Integer),
        sa.Column("last_enhanced", sa.Text),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.Column("first_attempt_at", Time),
        sa.Column("sent_at", Time),
        sa.Column("opened_at", Time),
        sa.Column("clicked_at", Time),
        sa.Column("replied_at", Time),
        sa.Column("unsubscribed_at", Time),
        sa.Column("complained_at", Time),
        sa.Column("bounced_at", Time),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint(
            "campaign_id",
            "recipient",
            "edition",
            "step",
            name="uq_messages_campaign_id_recipient_edition_step",
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id", "recipient"],
            ["recipients.campaign_id", "recipients.key"],
            name="fk_messages_campaign_id_recipient_recipients",
        ),
        sa.CheckConstraint(f"status IN ({MESSAGE_STATUSES})", name="ck_messages_status"),
        sa.CheckConstraint("step >= 1", name="ck_messages_step"),
    )
    for columns in (
        ("status", "next_attempt_at"),
        ("campaign_id", "status"),
        ("campaign_id", "id"),
        ("service", "sent_at"),
        ("recipient", "sent_at"),
        ("message_id",),
    ):
        op.create_index(f"ix_messages_{'_'.join(columns)}", "messages", list(columns))
    op.create_table(
        "events",
        sa.Column("id", RowId, nullable=False, autoincrement=True),
        sa.Column("message", RowId),
        sa.Column("campaign_id", sa.Text),
        sa.Column("recipient", sa.Text),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("code", sa.Integer),
        sa.Column("enhanced", sa.Text),
        sa.Column("service", sa.Text),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("dedupe", sa.Text),
        sa.Column("at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("dedupe", name="uq_events_dedupe"),
        sa.ForeignKeyConstraint(
            ["message"], ["messages.id"], name="fk_events_message_messages", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_events_campaign_id_id", "events", ["campaign_id", "id"])
    op.create_index("ix_events_message", "events", ["message"])
    op.create_table(
        "suppressions",
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("campaign_id", sa.Text),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_suppressions"),
    )
    op.create_table(
        "service_days",
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("sent", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("service", "day", name="pk_service_days"),
    )


def downgrade() -> None:
    for table in (
        "service_days",
        "suppressions",
        "events",
        "messages",
        "recipients",
        "editions",
        "campaigns",
    ):
        op.drop_table(table)
