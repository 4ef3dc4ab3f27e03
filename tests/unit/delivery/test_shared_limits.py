"""The limiter's side of limits shared through PostgreSQL (issue 13, item 5): the pace wants a
permit takes in the database, and quotas and the warm-up cap counted from views of every
daemon's acceptances. Pure: views are handed in, the clock is a number."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from campaignd.config.values import parse_rate
from campaignd.delivery.limits import RECHECK, Limiter, PaceWant, SharedUse, decide
from campaignd.plan.pace import pace_interval
from tests.unit.delivery.test_limits import make_config, send

T = datetime(2026, 12, 4, 12, tzinfo=UTC).timestamp()


def test_pace_wants_name_every_pace_with_its_interval_and_burst() -> None:
    cfg = make_config(
        {"s": {"rate": ["10/second", "1000/day"], "domains": {"x.org": {"rate": "2/second"}}}},
        {"c": {"rate": {"limit": "5/second", "burst": 3}}},
    )
    lim = Limiter(cfg)
    wants = lim.pace_wants("s", "X.org", "c", T)
    assert wants == [
        PaceWant("service:s", pace_interval(parse_rate("10/second"))),
        PaceWant("domain:s/x.org", pace_interval(parse_rate("2/second"))),
        PaceWant("campaign:c", pace_interval(parse_rate("5/second")), burst=3),
    ]
    # An unshaped domain and an unpaced campaign need no row.
    assert [w.key for w in lim.pace_wants("s", "y.org", "other", T)] == ["service:s"]


def test_pace_wants_carry_the_slowed_pace() -> None:
    lim = Limiter(make_config({"s": {"rate": "10/second"}}, {"c": {}}))
    lim.throttled("s", "y.org", T, started=T, reason="421")
    wants = {w.key: w for w in lim.pace_wants("s", "y.org", "c", T + 1)}
    normal = pace_interval(parse_rate("10/second"))
    assert wants["service:s"].interval == pytest.approx(2 * normal)
    assert wants["service:s"].burst == 1
    # The unshaped domain is slowed too, so it gets a shared pace of its own while slowed.
    assert wants["domain:s/y.org"].interval == pytest.approx(2 * normal)
    # The wants feed the shared decision: two permits 0.1 s apart at half pace → the second
    # waits until the first's slowed interval has passed.
    at, rows = decide(list(wants.values()), {}, T + 1)
    assert at == T + 1
    at, _ = decide(list(wants.values()), rows, T + 1.1)
    assert at == pytest.approx(T + 1 + 2 * normal)


def test_a_shared_view_counts_every_daemons_acceptances_for_the_warmup_cap() -> None:
    cfg = make_config({"s": {"warmup": {"start": 10, "until": 1000}}}, {"c": {}})
    lim = Limiter(cfg)
    lim.sharing = True
    today = lim.today(T)
    # Another daemon accepted 8 today; we accept one after the view was read.
    lim.share("service:s", SharedUse(T, {}, 8, today))
    assert lim.shared_room("service:s", T) == 2
    send(lim, T + 0.1)
    assert lim.shared_room("service:s", T + 0.1) == 1
    assert lim.check("s", "x.org", "c", T + 0.2) == T + 0.2
    lim.record("s", "x.org", "c", T + 0.2)  # in flight: holds the last place
    assert lim.check("s", "x.org", "c", T + 0.3) == pytest.approx(T + 0.3 + RECHECK)
    lim.settle("s", "x.org", "c", T + 0.4, accepted=True)
    assert lim.check("s", "x.org", "c", T + 0.5) > T + 3600  # full until local midnight
    assert lim.snapshot(T + 0.5)["services"]["s"]["sent_today"] == 10
    # Our two count on top of a view until their outcomes are committed before it was read;
    # then the view holds them and they count once.
    lim.share("service:s", SharedUse(T + 1, {}, 8, today))
    assert lim.shared_room("service:s", T + 1) == 0
    lim.committed("s", "c", T + 0.1, T + 0.2)
    lim.committed("s", "c", T + 0.4, T + 1.5)
    lim.share("service:s", SharedUse(T + 1, {}, 9, today))  # read before the 2nd committed
    assert lim.shared_room("service:s", T + 1) == 0
    lim.share("service:s", SharedUse(T + 2, {}, 10, today))
    assert lim.shared_room("service:s", T + 2) == 0
    assert lim.snapshot(T + 2)["services"]["s"]["sent_today"] == 10
    # Tomorrow the view's count of today is no longer today's.
    assert lim.shared_room("service:s", T + 86400) == 15  # day 2: 10 × 1.5, none sent yet


def test_a_shared_view_holds_quotas_and_says_when_they_free() -> None:
    lim = Limiter(make_config({"s": {"rate": ["100/second", "5/minute"]}}, {"c": {}}))
    lim.sharing = True
    assert lim.shared_needs("s", "c") == {"service:s": (60,)}
    # Five accepted by the other daemon in the last minute: the oldest at T − 50.
    oldest = [T - 50, T - 40, T - 30, T - 20, T - 10]
    lim.share("service:s", SharedUse(T, {60: (5, oldest)}))
    assert lim.check("s", "x.org", "c", T) == pytest.approx(T + 10)  # T − 50 leaves
    assert lim.check("s", "x.org", "c", T + 10) == T + 10
    lim.record("s", "x.org", "c", T + 10)  # in flight: the next waits for T − 40 to leave
    assert lim.check("s", "x.org", "c", T + 10.5) == pytest.approx(T + 20)


def test_campaign_quotas_are_shared_and_unknown_senders_need_nothing() -> None:
    lim = Limiter(make_config({"s": {}}, {"c": {"rate": ["10/second", "3/hour"]}}))
    lim.sharing = True
    assert lim.shared_needs("s", "c") == {"campaign:c": (3600,)}
    assert lim.shared_needs("s", "gone") == {}
    lim.share("campaign:c", SharedUse(T, {3600: (3, [T - 100, T - 50, T - 10])}))
    assert lim.check("s", "x.org", "c", T) == pytest.approx(T + 3500)
    assert lim.shared_room("campaign:c", T) == 0


def test_a_permit_due_within_the_horizon_is_booked_for_its_slot() -> None:
    wants = [PaceWant("service:s", 0.1)]
    _, rows = decide(wants, {}, T)
    # Asked 0.03 s early: without a horizon, ask again at T + 0.1; with one, booked for it.
    at, _ = decide(wants, rows, T + 0.07)
    assert at == pytest.approx(T + 0.1)
    at, booked = decide(wants, rows, T + 0.07, 0.25)
    assert at == pytest.approx(T + 0.1)
    # The schedule holds: the next slot is one interval after the booked one, not after now.
    assert booked["service:s"][0] == pytest.approx(T + 0.2)
    # Asked late (nobody was waiting): the pace starts over from now.
    _, late = decide(wants, rows, T + 0.5, 0.25)
    assert late["service:s"][0] == pytest.approx(T + 0.6)


def test_acceptances_are_kept_only_for_senders_whose_shared_view_is_read() -> None:
    # A sender without quotas or a warm-up never gets a view that would prune what it keeps:
    # keeping its acceptances made memory and the per-outcome scan grow with every message
    # on PostgreSQL (a daemon's CPU for 20,000 messages went from ~20 s to ~55 s).
    lim = Limiter(make_config({"s": {}, "q": {"rate": ["10/second", "1000/hour"]}}, {"c": {}}))
    lim.sharing = True
    for i in range(50):
        for sid in ("s", "q"):
            lim.record(sid, "x.org", "c", T + i)
            lim.settle(sid, "x.org", "c", T + i, accepted=True)
            lim.committed(sid, "c", T + i, T + i)
    assert lim._service("s").limit.own == []
    kept = lim._service("q").limit.own
    assert len(kept) == 50 and all(done is not None for _, done in kept)
    # Its view prunes what the database already holds.
    lim.share("service:q", SharedUse(T + 60, {3600: (50, [T])}))
    assert lim._service("q").limit.own == []
