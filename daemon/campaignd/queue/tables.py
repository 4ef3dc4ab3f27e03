"""The database schema as SQLAlchemy Core tables — the model Alembic's migrations must match.

Times are float seconds since the epoch (UTC) everywhere: cheap to compare, index and hand to the
limiter, identical on SQLite and PostgreSQL. Only ``service_days.day`` is a calendar date.
Changing anything here needs a new revision in ``migrations/versions/`` (a test compares the
migrated database with these tables).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

CAMPAIGN_STATES = ("scheduled", "sending", "waiting", "paused", "stopped", "completed", "failed")
FINAL_STATES = frozenset({"stopped", "completed", "failed"})
"""Campaign states after which nothing is sent; a stopped campaign never leaves ``stopped``."""

MESSAGE_STATUSES = (
    "queued", "sending", "sent", "deferred", "failed", "bounced", "suppressed", "skipped",
    "uncertain",
)  # fmt: skip
DUE_STATUSES = ("queued", "deferred")
"""Waiting for their ``next_attempt_at``; the only rows ``claim`` hands out."""
PENDING_STATUSES = ("queued", "sending", "deferred")
"""Not settled yet: the campaign is not complete while any row is in one of these."""
OUTCOME_STATUSES = frozenset({"sent", "deferred", "failed", "bounced", "skipped", "suppressed"})
"""What a delivery attempt (or the dispatcher's check before it) may record."""
RETRYABLE_STATUSES = frozenset({"failed", "uncertain", "deferred"})
"""What an operator may re-queue; bounced and suppressed addresses stay off."""

EVENT_COLUMNS = {
    "opened": "opened_at",
    "clicked": "clicked_at",
    "replied": "replied_at",
    "unsubscribed": "unsubscribed_at",
    "complained": "complained_at",
    "bounced": "bounced_at",
}
"""Event kinds that leave a first-seen time on their message row (for counters and ``unless``)."""
EXCLUDED_KINDS = ("invalid", "duplicate", "filtered", "suppressed")
"""Why enrollment did not enroll a list row (``messages.excluded``); the row's status is
``suppressed`` for the suppression list, ``skipped`` otherwise."""

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Time = sa.Double
# SQLite only auto-assigns ids to a column declared exactly INTEGER PRIMARY KEY.
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _one_of(column: str, values: tuple[str, ...], name: str) -> sa.CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({quoted})", name=name)


campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),  # why paused or failed, for the operator
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("started_at", Time),
    sa.Column("finished_at", Time),
    sa.Column("last_edition", sa.Integer),
    sa.Column("last_fired_at", Time),
    _one_of("state", CAMPAIGN_STATES, "state"),
)

editions = sa.Table(
    "editions",
    metadata,
    sa.Column("campaign_id", sa.Text, sa.ForeignKey("campaigns.id"), primary_key=True),
    sa.Column("edition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("fired_at", Time, nullable=False),
    sa.Column("caught_up", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", Time, nullable=False),
)

recipients = sa.Table(
    "recipients",
    metadata,
    sa.Column("campaign_id", sa.Text, sa.ForeignKey("campaigns.id"), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),  # lower-cased address: the dedupe key
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("smtp_address", sa.Text, nullable=False),
    sa.Column("domain", sa.Text, nullable=False),
    sa.Column("fields", sa.Text, nullable=False),  # JSON object of the row's columns
    sa.Column("timezone", sa.Text),
    sa.Column("source", sa.Text, nullable=False),  # file:line the row came from
    sa.Column("enrolled_at", Time, nullable=False),
    sa.Column("removed_at", Time),
)


def _only(condition: str) -> dict[str, Any]:
    """A partial index on both databases: the rows still waiting (most of a fresh queue) are
    not in it, and the queries that use it imply the condition."""
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("campaign_id", sa.Text, nullable=False),
    sa.Column("edition", sa.Integer, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("template", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", Time),
    sa.Column("claimed_by", sa.Text),
    sa.Column("claimed_until", Time),
    sa.Column("service", sa.Text),
    sa.Column("message_id", sa.Text),  # RFC 5322 Message-ID of the sent message
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
    # Set on the step-1 rows enrollment records for list rows it did not enroll: invalid,
    # duplicate, filtered or suppressed (their status is skipped or suppressed, never sent).
    sa.Column("excluded", sa.Text),
    # One message per (campaign, edition, step, recipient). The recipient comes second so this
    # index also serves the foreign key below (deleting recipients stays linear on PostgreSQL).
    sa.UniqueConstraint("campaign_id", "recipient", "edition", "step"),
    sa.ForeignKeyConstraint(
        ["campaign_id", "recipient"], ["recipients.campaign_id", "recipients.key"]
    ),
    _one_of("status", MESSAGE_STATUSES, "status"),
    sa.CheckConstraint("step >= 1", name="step"),
    # claim: due rows in time order
    sa.Index(None, "status", "next_attempt_at"),
    # counts, pending, retry
    sa.Index(None, "campaign_id", "status"),
    # keyset pagination and streaming
    sa.Index(None, "campaign_id", "id"),
    # limiter rebuild (``service = ? AND sent_at > ?``); only sent rows (migration 0005)
    sa.Index(None, "service", "sent_at", **_only("sent_at IS NOT NULL")),
    # exclude_contacted_within
    sa.Index(None, "recipient", "sent_at"),
    # replies: In-Reply-To / References → message; only rows that have one (0005)
    sa.Index(None, "message_id", **_only("message_id IS NOT NULL")),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("message", RowId, sa.ForeignKey("messages.id", ondelete="SET NULL")),
    sa.Column("campaign_id", sa.Text),
    sa.Column("recipient", sa.Text),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("code", sa.Integer),
    sa.Column("enhanced", sa.Text),
    sa.Column("service", sa.Text),
    sa.Column("source", sa.Text, nullable=False),
    # the same webhook or mail applied twice is one row
    sa.Column("dedupe", sa.Text, unique=True),
    sa.Column("at", Time, nullable=False),
    sa.Index(None, "campaign_id", "id"),
    sa.Index(None, "message"),
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),  # lower-cased address
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("campaign_id", sa.Text),  # no foreign key: outlives the campaign
    sa.Column("created_at", Time, nullable=False),
)

service_days = sa.Table(
    "service_days",
    metadata,
    sa.Column("service", sa.Text, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("sent", sa.Integer, nullable=False),
)
"""Messages each service sent per calendar day (in the store's day zone); survives deleting a
campaign, so warm-up day 1 and today's cap are never reset by cleaning up."""

daemons = sa.Table(
    "daemons",
    metadata,
    sa.Column("worker", sa.Text, primary_key=True),  # host:pid, as in messages.claimed_by
    sa.Column("started_at", Time, nullable=False),
    sa.Column("heartbeat_at", Time, nullable=False),
)
"""One row per running daemon, refreshed every few seconds: a row gone stale means its daemon
died, and whichever daemon notices first settles the messages it held."""

limit_paces = sa.Table(
    "limit_paces",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),  # "service:relay", "domain:relay/x.org", …
    sa.Column("tat", Time, nullable=False),  # GCRA theoretical arrival time (epoch s)
    sa.Column("interval", Time, nullable=False),  # the pace's interval when last taken
)
"""PostgreSQL: one row per pace every daemon on the database shares (queue/paces.py). SQLite
has the table too but keeps paces in process (one daemon)."""
