"""`campaignctl why`'s wording, from the API's story (pure: no daemon)."""

from __future__ import annotations

from typing import Any

from campaignd.ctl.remote import why_lines

MSG: dict[str, Any] = {
    "id": 7, "edition": 0, "step": 1, "template": "hello", "status": "sent", "attempts": 1,
    "service": "sink", "last_code": 250, "last_enhanced": "2.0.0", "last_error": None,
    "message_id": "<m1@acme.example>", "sent_at": "2027-01-15T08:00:01+00:00",
    "updated_at": "2027-01-15T08:00:01+00:00", "next_attempt_at": None, "excluded": None,
    "source": "lists/a.csv:2", "email": "Ann@example.com",
    "created_at": "2027-01-15T08:00:00+00:00",
    "events": [{"kind": "opened", "at": "2027-01-15T09:00:00+00:00", "source": "pixel",
                "code": None, "enhanced": None, "detail": None, "service": None}],
}  # fmt: skip


def story(**kw: Any) -> dict[str, Any]:
    return {"campaign": "news", "address": "ann@example.com", "key": "ann@example.com",
            "recipient": None, "suppression": None, "messages": [], **kw}  # fmt: skip


def test_each_step_with_reply_and_events() -> None:
    nudge = {**MSG, "id": 8, "step": 2, "status": "queued", "attempts": 0, "service": None,
             "last_code": None, "last_enhanced": None, "message_id": None, "sent_at": None,
             "next_attempt_at": "2027-01-18T08:00:00+00:00", "events": []}  # fmt: skip
    rc = {"source": "lists/a.csv:2", "enrolled_at": "2027-01-15T08:00:00+00:00",
          "removed_at": None}  # fmt: skip
    lines = why_lines(story(recipient=rc, messages=[MSG, nudge]))
    assert lines == [
        "ann@example.com in campaign news:",
        "  list row lists/a.csv:2, recorded 2027-01-15T08:00:00+00:00",
        "  step 1 (template hello): sent at 2027-01-15T08:00:01+00:00, via sink, attempts 1"
        " — 250 2.0.0 [<m1@acme.example>]",
        "      opened 2027-01-15T09:00:00+00:00 (source pixel)",
        "  step 2 (template hello): queued due 2027-01-18T08:00:00+00:00",
    ]


def test_an_exclusion_and_a_suppression() -> None:
    dup = {**MSG, "status": "skipped", "excluded": "duplicate", "source": "lists/a.csv:5",
           "email": "ANN@example.com", "last_error": "duplicate of lists/a.csv:2"}  # fmt: skip
    sup = {"key": "ann@example.com", "reason": "hard bounce", "source": "sink",
           "campaign_id": "spring", "created_at": "2027-01-01T00:00:00+00:00"}  # fmt: skip
    lines = why_lines(story(messages=[dup], suppression=sup))
    assert lines[1] == (
        "  step 1: skipped at enrollment 2027-01-15T08:00:00+00:00 — row lists/a.csv:5 "
        "'ANN@example.com': duplicate of lists/a.csv:2"
    )
    assert lines[2] == (
        "  on the suppression list since 2027-01-01T00:00:00+00:00: hard bounce (sink, "
        "campaign spring) — nothing more is sent to this address"
    )


def test_nothing_recorded_says_where_to_look() -> None:
    (_, line) = why_lines(story())
    assert "nothing recorded" in line and "campaignctl plan" in line
