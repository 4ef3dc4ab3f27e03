"""events.py's pure part: what each feedback event does to its message and its address."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from campaignd.feedback.apply import plan_event, suppresses_address
from campaignd.feedback.event import FeedbackEvent, Kind
from campaignd.queue.rows import MessageRow

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def event(kind: Kind, status: str | None = None, detail: str = "", **kw: object) -> FeedbackEvent:
    values: dict[str, object] = {
        "kind": kind, "recipient": "ann@example.com", "message_id": "m1@acme.test",
        "message_ref": None, "detail": detail, "status": status,
        "permanent": kind == "bounced", "at": AT, "source": "maildir:/x", "dedupe_key": "k1",
    }  # fmt: skip
    values.update(kw)
    return FeedbackEvent(**values)  # type: ignore[arg-type]


ROW = MessageRow(
    id=7, campaign_id="q4", edition=0, step=1, recipient="ann@example.com",
    email="Ann@example.com", template="t", status="sent", attempts=1, service="relay",
    message_id="<m1@acme.test>", last_error=None, last_code=None, last_enhanced=None,
    next_attempt_at=None, claimed_by=None, claimed_until=None, created_at=0.0, updated_at=0.0,
    first_attempt_at=0.0, sent_at=1.0, opened_at=None, clicked_at=None, replied_at=None,
    unsubscribed_at=None, complained_at=None, bounced_at=None,
)  # fmt: skip


@pytest.mark.parametrize(
    ("ev", "kind", "status", "suppress"),
    [
        (event("bounced", "5.1.1", "user unknown"), "bounced", "bounced", True),
        (event("bounced", "5.1.10", "RecipientNotFound"), "bounced", "bounced", True),
        (event("bounced", "5.7.1", "blocked by policy"), "failed", "failed", False),
        (event("bounced", "5.2.2", "mailbox full"), "failed", "failed", False),
        (
            event("bounced", None, "The recipient name is not recognized"),
            "bounced",
            "bounced",
            True,
        ),
        (event("bounced", None, "rejected as spam"), "failed", "failed", False),
        (event("deferred_bounce", "4.4.1", "timed out"), "deferred_bounce", None, False),
        (event("complained"), "complained", None, True),
        (event("unsubscribed"), "unsubscribed", None, True),
        (event("replied"), "replied", None, False),
        (event("opened"), "opened", None, False),
        (event("delivered"), "delivered", None, False),
    ],
)
def test_effects_on_a_matched_message(ev: FeedbackEvent, kind: str, status: str | None,
                                      suppress: bool) -> None:  # fmt: skip
    planned = plan_event(ev, ROW, authenticated=False)
    assert (planned.kind, planned.status, planned.suppress) == (kind, status, suppress)
    assert (planned.message, planned.campaign_id, planned.recipient) == (7, "q4", "ann@example.com")
    assert planned.dedupe == "k1" and planned.at == AT.timestamp()


def test_a_late_report_never_changes_a_row_the_dispatcher_holds() -> None:
    for held in ("queued", "sending", "suppressed", "skipped"):
        planned = plan_event(event("bounced", "5.1.1"), replace(ROW, status=held),
                             authenticated=False)  # fmt: skip
        assert planned.status is None and planned.suppress


def test_auto_replies_are_counted_off_the_message() -> None:
    planned = plan_event(event("auto_reply", detail="Auto-Submitted: auto-replied"), ROW,
                         authenticated=False)  # fmt: skip
    assert (planned.kind, planned.message, planned.campaign_id) == ("auto_reply", None, "q4")
    assert "message 7" in (planned.detail or "")


@pytest.mark.parametrize("authenticated", [False, True])
def test_unmatched_events_suppress_only_when_signed(authenticated: bool) -> None:
    planned = plan_event(event("bounced", "5.1.1", "no such user"), None,
                         authenticated=authenticated)  # fmt: skip
    assert (planned.kind, planned.message) == ("unmatched", None)
    assert planned.suppress is authenticated
    assert planned.recipient == "ann@example.com"
    assert (planned.detail or "").startswith("bounced: no such user")
    # Nothing to suppress without an address, signed or not.
    anon = plan_event(event("complained", recipient=None), None, authenticated=True)
    assert not anon.suppress


def test_suppresses_address_only_for_permanent_bounces() -> None:
    assert not suppresses_address(event("deferred_bounce", "4.2.2"))
    assert not suppresses_address(event("bounced", "4.1.1", permanent=False))
    assert suppresses_address(event("bounced", "5.1.1"))
