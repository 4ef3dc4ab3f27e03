"""events.apply_feedback on a real database (SQLite and PostgreSQL): matching, effects, once."""

from __future__ import annotations

from datetime import UTC, datetime

from campaignd.feedback import FeedbackEvent, VerpCodec, recognize
from campaignd.feedback.apply import apply_feedback
from campaignd.feedback.event import Kind, make_dedupe_key
from campaignd.queue.store import Outcome, Store
from tests.integration.store.factory import T0, WORKER, seed

from .samples import personalize

VERP = VerpCodec(b"test-key", "bounces+{token}@mail.acme.example")
NOW = datetime.fromtimestamp(T0 + 3600, UTC)


async def send_all(store: Store, n: int = 4) -> dict[str, int]:
    """``n`` recipients of campaign "launch", sent at T0 with Message-ID <m{id}@acme.test>."""
    await seed(store, n=n)
    got = await store.claim(worker=WORKER, now=T0, lease=60, limit=100, campaign_ids=["launch"])
    await store.record(
        [
            Outcome(
                id=c.id, status="sent", service="relay", at=T0, message_id=f"<m{c.id}@acme.test>"
            )
            for c in got
        ]
    )
    return {c.recipient: c.id for c in got}


async def mail(store: Store, raw: bytes) -> list[str]:
    results = []
    for ev in recognize(raw, source="maildir:/test", now=NOW, verp=VERP):
        r = await apply_feedback(store, ev, authenticated=False, now=NOW.timestamp())
        results.append(r.result)
    return results


def hook_event(kind: Kind, *, recipient: str | None, message_id: str | None = None,
               event_id: str = "e1", status: str | None = None, permanent: bool = False,
               detail: str = "") -> FeedbackEvent:  # fmt: skip
    return FeedbackEvent(
        kind=kind, recipient=recipient, message_id=message_id, message_ref=None, detail=detail,
        status=status, permanent=permanent, at=NOW, source="ses",
        dedupe_key=make_dedupe_key("hook", "ses", event_id, kind, recipient),
    )  # fmt: skip


async def test_a_verp_bounce_bounces_the_message_and_suppresses_once(store: Store) -> None:
    sent = await send_all(store)
    mid = sent["user1@example.com"]
    # The mangled report names neither recipient nor Message-ID: only the VERP token does.
    raw = personalize("mangled-verp-bounce.eml", verp=VERP.address(mid))
    assert await mail(store, raw) == ["applied"]
    row = await store.get_message(mid)
    assert row is not None and row.status == "bounced" and row.bounced_at is not None
    assert await store.suppressed(["user1@example.com"]) == {"user1@example.com"}
    counts = (await store.counts("launch")).counts
    assert (counts["bounced"], counts["sent"]) == (1, 3)
    # The same mail again (a rescan, an IMAP re-fetch): nothing changes.
    assert await mail(store, raw) == ["duplicate"]
    assert (await store.counts("launch")).counts == counts
    assert len(await store.list_suppressions()) == 1


async def test_dsn_by_message_id_policy_block_fails_without_suppressing(store: Store) -> None:
    sent = await send_all(store)
    mid = sent["user2@example.com"]
    raw = (
        personalize(
            "postfix-dsn-user-unknown.eml",
            message_id=f"m{mid}@acme.test",
            recipients={"jdoe@agency.example": "user2@example.com"},
            verp="someone-else@mail.acme.example",
        )
        .replace(b"5.1.1", b"5.7.1")
        .replace(b"User unknown in virtual", b"Blocked by spam policy")
    )
    assert await mail(store, raw) == ["applied"]
    row = await store.get_message(mid)
    assert row is not None and (row.status, row.last_enhanced) == ("failed", "5.7.1")
    assert row.bounced_at is None
    assert await store.suppressed(["user2@example.com"]) == set()


async def test_a_4xx_report_is_only_recorded(store: Store) -> None:
    sent = await send_all(store)
    mid = sent["user3@example.com"]
    raw = personalize(
        "postfix-dsn-delayed.eml",
        message_id=f"m{mid}@acme.test",
        recipients={"mark@studio.example": "user3@example.com"},
    )
    assert await mail(store, raw) == ["applied"]
    row = await store.get_message(mid)
    assert row is not None and row.status == "sent"
    assert await store.suppressed(["user3@example.com"]) == set()


async def test_complaint_reply_and_auto_reply(store: Store) -> None:
    sent = await send_all(store)
    a, b, c = sent["user0@example.com"], sent["user1@example.com"], sent["user2@example.com"]
    arf = personalize("microsoft-arf.eml", message_id=f"m{a}@acme.test", verp="x@y.example")
    reply = personalize("thunderbird-reply.eml", message_id=f"m{b}@acme.test")
    ooo = personalize("outlook-ooo.eml", message_id=f"m{c}@acme.test")
    assert await mail(store, arf) == ["applied"]
    assert await mail(store, reply) == ["applied"]
    assert await mail(store, ooo) == ["counted"]
    counts = (await store.counts("launch")).counts
    assert (counts["complained"], counts["replied"]) == (1, 1)
    assert await store.suppressed(["user0@example.com"]) == {"user0@example.com"}
    assert await store.suppressed(["user1@example.com", "user2@example.com"]) == set()
    # What `unless: [replied]` reads: the reply, not the out-of-office.
    keys = list(sent)
    assert await store.engaged("launch", 0, keys, ["replied"]) == {"user1@example.com"}
    assert (await store.unlinked_event_counts()).get("auto_reply") == 1


async def test_unmatched_mail_is_counted_once_and_suppresses_nothing(store: Store) -> None:
    await send_all(store)
    raw = personalize(
        "postfix-dsn-user-unknown.eml", message_id="not-ours@elsewhere.example",
        verp="bounces@acme.example",
    )  # fmt: skip
    assert await mail(store, raw) == ["unmatched"]
    assert await mail(store, raw) == ["unmatched"]
    assert (await store.unlinked_event_counts()).get("unmatched") == 1
    assert await store.list_suppressions() == []


async def test_signed_events_match_by_recipient_and_may_suppress_unknown_addresses(
    store: Store,
) -> None:
    sent = await send_all(store)
    now = NOW.timestamp()
    # Postmark-style: no Message-ID of ours, only the recipient.
    ev = hook_event("unsubscribed", recipient="User0@example.com", event_id="u1")
    result = await apply_feedback(store, ev, authenticated=True, now=now)
    assert (result.result, result.message) == ("applied", sent["user0@example.com"])
    assert (await store.counts("launch")).counts["unsubscribed"] == 1
    # The same address unauthenticated (a forged mail) would not have been matched at all.
    forged = hook_event("bounced", recipient="user3@example.com", event_id="f1",
                        status="5.1.1", permanent=True)  # fmt: skip
    r = await apply_feedback(store, forged, authenticated=False, now=now)
    assert r.result == "unmatched" and not r.suppressed
    # A signed hard bounce for an address we never sent to is suppressed all the same.
    foreign = hook_event(
        "bounced", recipient="stranger@else.example", event_id="b1", status="5.1.1",
        permanent=True, detail="550 5.1.1 no such user",
    )  # fmt: skip
    r = await apply_feedback(store, foreign, authenticated=True, now=now)
    assert r.result == "unmatched" and r.suppressed
    assert await store.suppressed(["stranger@else.example", "user3@example.com"]) == {
        "stranger@else.example"
    }
    # Opens and clicks stamp their message once.
    user2 = sent["user2@example.com"]
    opened = hook_event("opened", recipient=None, message_id=f"m{user2}@acme.test", event_id="o1")
    assert (await apply_feedback(store, opened, authenticated=True, now=now)).result == "applied"
    assert (await apply_feedback(store, opened, authenticated=True, now=now)).result == "duplicate"
    assert (await store.counts("launch")).counts["opened"] == 1


async def test_guard_counts(store: Store) -> None:
    sent = await send_all(store, n=5)
    ids = list(sent.values())
    raw = personalize("mangled-verp-bounce.eml", verp=VERP.address(ids[0]))
    await mail(store, raw)
    arf = personalize("microsoft-arf.eml", message_id=f"m{ids[1]}@acme.test", verp="x@y.example")
    await mail(store, arf)
    counts = await store.guard_counts("launch")
    assert (counts.sample, counts.bounced, counts.complained) == (5, 1, 1)
