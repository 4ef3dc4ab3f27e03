"""Pre-send checks of delivery/conditions.py: unless at send time, removed steps and recipients,
templates changed since a message was queued, windows held for the summary."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from campaignd.config.model import Campaign, Config
from campaignd.delivery.conditions import (
    REMOVED_REASON,
    WINDOW_RECHECK,
    Conditions,
    Verdict,
    decide,
    park_until,
    step_removed_reason,
    unless_reason,
)
from campaignd.queue.store import Claimed
from campaignd.render.templates import choose_template

DRIP = {
    "audience": "lists/a.csv",
    "services": "s",
    "steps": [
        {"template": "intro"},
        {"after": "2s", "template": "follow", "unless": ["clicked", "replied"]},
        {"after": "2s", "template": ["last-a", "last-b"], "unless": "unsubscribed"},
    ],
}


def campaign(**changes: Any) -> Campaign:
    return Campaign.model_validate({**DRIP, **changes})


def claimed(i: int, step: int, template: str, *, cid: str = "drip", edition: int = 0) -> Claimed:
    return Claimed(
        id=i,
        campaign_id=cid,
        edition=edition,
        step=step,
        template=template,
        attempts=1,
        first_attempt_at=None,
        recipient=f"u{i}@example.com",
        email=f"u{i}@example.com",
        smtp_address=f"u{i}@example.com",
        domain="example.com",
        fields={},
        timezone=None,
    )


# ---------------------------------------------------------------- decide


def test_a_message_that_passes_every_check_goes_as_claimed() -> None:
    c = campaign()
    assert decide("drip", c, step=1, template="intro", recipient="a@x.org") is None
    # opened is not among step 2's conditions
    assert decide("drip", c, step=2, template="follow", recipient="a", engaged={"opened"}) is None


def test_unless_names_what_matched() -> None:
    c = campaign()
    v = decide("drip", c, step=2, template="follow", recipient="a", engaged={"replied", "opened"})
    assert v == Verdict(skip=unless_reason(["replied"]))
    assert v is not None and v.skip == "unless: replied — the recipient replied earlier"
    both = decide(
        "drip", c, step=2, template="follow", recipient="a", engaged={"clicked", "replied"}
    )
    assert (
        both is not None
        and both.skip == "unless: clicked, replied — the recipient clicked and replied earlier"
    )
    # a condition of another step does not apply here
    assert (
        decide("drip", c, step=2, template="follow", recipient="a", engaged={"unsubscribed"})
        is None
    )
    assert decide("drip", c, step=3, template="last-a", recipient="a", engaged={"unsubscribed"})


def test_a_removed_step_is_skipped_never_sent() -> None:
    shorter = campaign(steps=DRIP["steps"][:2])
    v = decide("drip", shorter, step=3, template="last-a", recipient="a")
    assert v == Verdict(skip=step_removed_reason(3))
    assert "step 3 is no longer in the campaign file" in (v.skip or "")


def test_a_removed_recipient_is_skipped() -> None:
    v = decide("drip", campaign(), step=1, template="intro", recipient="a", removed=True)
    assert v == Verdict(skip=REMOVED_REASON)


def test_a_template_changed_since_queueing_is_replaced_stably() -> None:
    c = campaign(steps=[{"template": "intro-v2"}, *DRIP["steps"][1:]])
    v = decide("drip", c, step=1, template="intro", recipient="a@x.org")
    assert v == Verdict(template="intro-v2")
    # one variant of an A/B step removed: the row gets the variant the file still has
    ab = campaign(steps=[*DRIP["steps"][:2], {"after": "2s", "template": ["last-b"]}])
    assert decide("drip", ab, step=3, template="last-a", recipient="k") == Verdict(
        template="last-b"
    )
    # several left: the same stable choice enrollment would make, whoever is asked
    three = campaign(steps=[*DRIP["steps"][:2], {"after": "2s", "template": ["c1", "c2", "c3"]}])
    picks = {decide("drip", three, step=3, template="gone", recipient=f"r{i}") for i in range(30)}
    assert {p.template for p in picks if p} == {"c1", "c2", "c3"}
    for i in range(5):
        expected = choose_template("drip", f"r{i}", ("c1", "c2", "c3"))
        assert decide("drip", three, step=3, template="gone", recipient=f"r{i}") == Verdict(
            template=expected
        )


# ---------------------------------------------------------------- evaluate


class FakeStore:
    def __init__(self, events: dict[str, set[str]]) -> None:
        self.events = events  # kind → recipients ("contacted": reached by another campaign)
        self.calls: list[tuple[str, int, tuple[str, ...], tuple[str, ...]]] = []
        self.contacted_calls: list[tuple[tuple[str, ...], float, str | None]] = []

    async def engaged(
        self, campaign_id: str, edition: int, keys: Sequence[str], kinds: Collection[str]
    ) -> set[str]:
        self.calls.append((campaign_id, edition, tuple(keys), tuple(kinds)))
        return {k for k in keys if any(k in self.events.get(kind, set()) for kind in kinds)}

    async def contacted_since(
        self, keys: Sequence[str], since: float, *, exclude_campaign: str | None = None
    ) -> set[str]:
        self.contacted_calls.append((tuple(keys), since, exclude_campaign))
        return {k for k in keys if k in self.events.get("contacted", set())}


async def test_evaluate_asks_only_about_steps_with_conditions() -> None:
    config = Config(root=Path("/nowhere"), campaigns={"drip": campaign()})
    store = FakeStore({"clicked": {"u2@example.com"}, "unsubscribed": {"u3@example.com"}})
    conditions = Conditions()
    conditions.set_removed("drip", {"u4@example.com"})
    batch = [
        claimed(1, 1, "intro"),
        claimed(2, 2, "follow"),
        claimed(3, 3, "last-a"),
        claimed(4, 1, "intro"),
        claimed(5, 2, "follow"),
        claimed(6, 1, "intro", cid="unknown"),
    ]
    verdicts = await conditions.evaluate(store, config, batch)
    assert verdicts == {
        2: Verdict(skip=unless_reason(["clicked"])),
        3: Verdict(skip=unless_reason(["unsubscribed"])),
        4: Verdict(skip=REMOVED_REASON),
    }
    asked = {(kinds, keys) for _, _, keys, kinds in store.calls}
    assert asked == {
        (("clicked",), ("u2@example.com", "u5@example.com")),
        (("replied",), ("u2@example.com", "u5@example.com")),
        (("unsubscribed",), ("u3@example.com",)),
    }


async def test_evaluate_looks_within_the_message_edition() -> None:
    config = Config(root=Path("/nowhere"), campaigns={"drip": campaign()})
    store = FakeStore({"clicked": {"u1@example.com"}})
    verdicts = await Conditions().evaluate(
        store, config, [claimed(1, 2, "follow", edition=4), claimed(2, 1, "intro", edition=5)]
    )
    assert verdicts == {1: Verdict(skip=unless_reason(["clicked"]))}
    assert {(c[0], c[1]) for c in store.calls} == {("drip", 4)}


async def test_contact_by_another_campaign_since_enrollment_skips_the_first_step_only() -> None:
    drip = campaign(filters={"exclude_contacted_within": "30d"})
    config = Config(root=Path("/nowhere"), campaigns={"drip": drip})
    store = FakeStore({"contacted": {"u1@example.com", "u2@example.com"}})
    now = 1_800_000_000.0
    verdicts = await Conditions().evaluate(
        store,
        config,
        [claimed(1, 1, "intro"), claimed(2, 2, "follow"), claimed(3, 1, "intro")],
        now=now,
    )
    assert verdicts == {
        1: Verdict(
            skip="contacted by another campaign within 30d (filters.exclude_contacted_within)"
        )
    }
    # asked once, for the first-step recipients, excluding this campaign's own messages
    assert store.contacted_calls == [
        (("u1@example.com", "u3@example.com"), now - 30 * 86400, "drip")
    ]


async def test_without_the_filter_nobody_asks_about_other_campaigns() -> None:
    config = Config(root=Path("/nowhere"), campaigns={"drip": campaign()})
    store = FakeStore({"contacted": {"u1@example.com"}})
    assert await Conditions().evaluate(store, config, [claimed(1, 1, "intro")]) == {}
    assert store.contacted_calls == []


# ---------------------------------------------------------------- windows


def test_held_messages_report_the_earliest_opening_still_ahead() -> None:
    c = Conditions()
    assert c.next_window("drip", 100.0) is None
    c.note_held("drip", 500.0, now=100.0)
    c.note_held("drip", 300.0, now=100.0)
    c.note_held("drip", 900.0, now=100.0)
    assert c.next_window("drip", 100.0) == 300.0
    assert c.next_window("drip", 300.0) is None  # that opening has come
    c.note_held("drip", 900.0, now=350.0)  # a stale value is replaced, even by a later one
    assert c.next_window("drip", 350.0) == 900.0


def test_a_parked_message_is_looked_at_again_within_the_recheck() -> None:
    assert park_until(1000.0, now=900.0) == 1000.0
    assert park_until(10_000_000.0, now=900.0) == 900.0 + WINDOW_RECHECK
