"""The Limiter: sliding-window rates at every instant, warm-up days, seeding, throttling."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from campaignd.config.model import Campaign, Config, Service, Settings
from campaignd.config.values import Rate
from campaignd.delivery.limits import Limiter, Starts


def make_config(
    services: dict[str, dict[str, Any]] | None = None,
    campaigns: dict[str, dict[str, Any]] | None = None,
    tz: str = "UTC",
) -> Config:
    return Config(
        root=Path("."),
        settings=Settings(timezone=tz),
        services={
            sid: Service.model_validate({"from": "a@acme.example", **spec})
            for sid, spec in (services or {}).items()
        },
        campaigns={
            cid: Campaign.model_validate(
                {"audience": ["lists/x.csv"], "services": ["s"], "template": "t", **spec}
            )
            for cid, spec in (campaigns or {}).items()
        },
    )


def ts(zone: str, y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(zone)).timestamp()


def fill(
    lim: Limiter, n: int, now: float, sid: str = "s", dom: str = "x.org", cid: str = "c"
) -> None:
    for _ in range(n):
        assert lim.check(sid, dom, cid, now) == now
        lim.record(sid, dom, cid, now)


def assert_holds(starts: list[float], rates: list[Rate]) -> None:
    """No count+1 starts within any per_seconds: the (i+count)-th is ≥ per after the i-th."""
    starts = sorted(starts)
    for r in rates:
        for i in range(len(starts) - r.count):
            assert starts[i] + r.per_seconds <= starts[i + r.count], (
                r,
                starts[i : i + r.count + 1],
            )


# ---------------------------------------------------------------- property

rate_st = st.builds(Rate, st.integers(1, 6), st.sampled_from([1, 2, 5, 10, 60]))


@settings(max_examples=100, deadline=None)
@given(
    service_rates=st.lists(rate_st, min_size=1, max_size=3),
    domain_rates=st.lists(rate_st, max_size=2),
    campaign_rates=st.lists(rate_st, max_size=2),
    attempts=st.lists(
        st.tuples(
            st.floats(0, 3, allow_nan=False),
            st.sampled_from(["gmail.com", "GMail.com", "other.org"]),
            st.sampled_from(["c1", "c2"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=150,
    ),
)
def test_no_window_ever_holds_more_than_its_count(
    service_rates: list[Rate],
    domain_rates: list[Rate],
    campaign_rates: list[Rate],
    attempts: list[tuple[float, str, str, bool]],
) -> None:
    # Rate objects go in as they are, so periods like 2 s or 10 s are tried too.
    config = make_config(
        {"s": {"rate": service_rates, "domains": {"gmail.com": {"rate": domain_rates}}}},
        {"c1": {"rate": campaign_rates}, "c2": {}},
    )
    lim = Limiter(config)
    now = 1_767_225_600.123  # fractional, to meet float rounding
    started: list[tuple[float, str, str]] = []

    def earliest(now: float, dom: str, cid: str) -> float:
        """The reference answer, from every start so far (nothing trimmed)."""
        limits = [([t for t, _, _ in started], service_rates)]
        if dom.lower() == "gmail.com":
            limits.append(([t for t, d, _ in started if d == "gmail.com"], domain_rates))
        if cid == "c1":
            limits.append(([t for t, _, c in started if c == "c1"], campaign_rates))
        found = [now]
        for times, rates in limits:
            found += [times[-r.count] + r.per_seconds for r in rates if len(times) >= r.count]
        return max(found)

    for gap, dom, cid, waits in attempts:
        now += gap
        at = lim.check("s", dom, cid, now)
        assert at == earliest(now, dom, cid)  # never early, never needlessly late
        if at > now:
            # Earliest: a moment before it is still refused (time only moves forward here).
            now = max(now, at - 1e-3)
            assert lim.check("s", dom, cid, now) == at
            if not waits:
                continue
            now = at
        assert lim.check("s", dom, cid, now) == now
        lim.record("s", dom, cid, now)
        started.append((now, dom.lower(), cid))
    assert started  # the first attempt always starts
    assert_holds([t for t, _, _ in started], service_rates)
    assert_holds([t for t, d, _ in started if d == "gmail.com"], domain_rates)
    assert_holds([t for t, _, c in started if c == "c1"], campaign_rates)


# ---------------------------------------------------------------- rates


def test_five_per_second_boundary_is_exact() -> None:
    lim = Limiter(make_config({"s": {"rate": "5/second"}}))
    t0 = 100.1
    fill(lim, 5, t0)
    assert lim.check("s", "x.org", "c", t0 + 0.5) == t0 + 1
    assert lim.check("s", "x.org", "c", t0 + 1) == t0 + 1  # exactly a period later: allowed
    lim.record("s", "x.org", "c", t0 + 1)
    assert lim.check("s", "x.org", "c", t0 + 1) == t0 + 1  # the first 5 have aged out
    fill(lim, 4, t0 + 1)
    assert lim.check("s", "x.org", "c", t0 + 1.2) == t0 + 2


def test_every_rate_of_the_list_holds() -> None:
    lim = Limiter(make_config({"s": {"rate": ["2/second", "3/minute"]}}))
    fill(lim, 2, 0.0)
    assert lim.check("s", "d", "c", 0.0) == 1.0
    fill(lim, 1, 1.0)
    assert lim.check("s", "d", "c", 1.0) == 60.0  # the minute rate is spent


def test_unknown_ids_have_no_limits() -> None:
    lim = Limiter(make_config({"s": {"rate": "1/hour"}}, {"c": {"rate": "1/hour"}}))
    fill(lim, 3, 10.0, sid="nope", cid="none")
    assert lim.check("nope", "x.org", "none", 10.0) == 10.0
    assert lim.check("s", "x.org", "none", 10.0) == 10.0  # those went elsewhere


def test_domain_shaping_is_per_domain_and_case_blind() -> None:
    cfg = make_config({"s": {"rate": "100/second", "domains": {"GMail.com": {"rate": "2/minute"}}}})
    lim = Limiter(cfg)
    fill(lim, 1, 0.0, dom="gmail.com")
    fill(lim, 1, 0.0, dom="GMAIL.COM")
    assert lim.check("s", "Gmail.Com", "c", 0.5) == 60.0
    assert lim.check("s", "yahoo.com", "c", 0.5) == 0.5  # unshaped
    fill(lim, 98, 0.5, dom="yahoo.com")
    # The service's 100/second counts every domain: 2 + 98 fill it until the first two age.
    assert lim.check("s", "yahoo.com", "c", 0.5) == 1.0
    assert lim.check("s", "gmail.com", "c", 61.0) == 61.0


def test_campaign_rate_spans_services() -> None:
    lim = Limiter(make_config({"a": {}, "b": {}}, {"c": {"rate": "3/hour"}, "d": {}}))
    fill(lim, 2, 0.0, sid="a")
    fill(lim, 1, 5.0, sid="b")
    assert lim.check("a", "x.org", "c", 6.0) == 3600.0
    assert lim.check("b", "x.org", "c", 6.0) == 3600.0
    assert lim.check("a", "x.org", "d", 6.0) == 6.0  # another campaign, no rate


def test_clock_stepping_back_keeps_order() -> None:
    lim = Limiter(make_config({"s": {"rate": "2/minute"}}))
    lim.record("s", "d", "c", 100.0)
    lim.record("s", "d", "c", 50.0)  # NTP stepped the clock back
    assert lim.check("s", "d", "c", 100.0) == 110.0  # 50 + 60, the 2nd newest start


def test_memory_stays_bounded() -> None:
    day = Starts([Rate(50000, 86400), Rate(14, 1)])
    for i in range(120_000):
        day.add(i * 0.1)
    assert len(day) == 50000
    second = Starts([Rate(5, 1)])
    for i in range(1000):
        second.add(float(i))
    assert len(second) == 5
    assert second.earliest([Rate(5, 1)], 999.0) == 999.0  # trims what fell out of the window
    assert len(second) == 1
    assert len(Starts([], [1.0, 2.0])) == 0  # no rate, no history


# ---------------------------------------------------------------- warm-up


def warm(tz: str = "UTC", since: str | None = None, **extra: Any) -> Config:
    warmup: dict[str, Any] = {"start": 2, "growth": 2, "until": 100}
    if since:
        warmup["since"] = since
    return make_config({"s": {"warmup": warmup, **extra}}, tz=tz)


def test_warmup_cap_until_local_midnight_then_grows() -> None:
    lim = Limiter(warm("Europe/Berlin"))
    evening = ts("Europe/Berlin", 2026, 12, 1, 23, 0)
    fill(lim, 2, evening)  # day 1: cap 2
    midnight = ts("Europe/Berlin", 2026, 12, 2, 0, 0)
    assert lim.check("s", "x.org", "c", evening + 60) == midnight
    fill(lim, 4, midnight)  # day 2: cap 4
    assert lim.check("s", "x.org", "c", midnight + 1) == ts("Europe/Berlin", 2026, 12, 3, 0, 0)
    snap = lim.snapshot(midnight + 1)["services"]["s"]
    assert snap["warmup"] == {"day": 2, "cap": 4, "sent_today": 4}


def test_warmup_day_rollover_across_dst() -> None:
    lim = Limiter(warm("Europe/Berlin", since="2026-03-28"))
    sat = ts("Europe/Berlin", 2026, 3, 28, 20, 0)
    fill(lim, 2, sat)
    # Sunday 2026-03-29 00:00 is still CET (23:00Z); that day has 23 hours.
    assert lim.check("s", "x.org", "c", sat) == datetime(2026, 3, 28, 23, tzinfo=UTC).timestamp()
    sun = datetime(2026, 3, 28, 23, tzinfo=UTC).timestamp()
    fill(lim, 4, sun)
    assert lim.check("s", "x.org", "c", sun) == datetime(2026, 3, 29, 22, tzinfo=UTC).timestamp()


def test_warmup_midnight_skipped_by_dst() -> None:
    # Chile jumps from 2026-09-06 00:00 to 01:00: the new day starts at the jump (04:00Z).
    lim = Limiter(warm("America/Santiago"))
    fill(lim, 2, ts("America/Santiago", 2026, 9, 5, 22, 0))
    at = lim.check("s", "x.org", "c", ts("America/Santiago", 2026, 9, 5, 23, 0))
    assert at == datetime(2026, 9, 6, 4, tzinfo=UTC).timestamp()
    fill(lim, 4, at)  # a new day with a new cap


def test_warmup_day_one_is_the_first_send_without_since() -> None:
    lim = Limiter(warm())
    first = ts("UTC", 2026, 12, 1, 9, 0)
    fill(lim, 2, first)
    later = ts("UTC", 2026, 12, 4, 9, 0)  # day 4: cap 16
    fill(lim, 16, later)
    assert lim.check("s", "x.org", "c", later) == ts("UTC", 2026, 12, 5, 0, 0)


def test_seeding_after_restart_keeps_quotas_and_warmup_day() -> None:
    cfg = warm(rate="3/hour")
    now = ts("UTC", 2026, 12, 10, 12, 0)
    before = [now - 7200, now - 3000, now - 600, now - 300]
    lim = Limiter(cfg)
    lim.seed_service("s", before, date(2026, 12, 8))  # day 3: cap 8
    assert lim.check("s", "x.org", "c", now) == now - 3000 + 3600  # the hour rate
    later = now + 3600
    for t in (later, later + 1800, later + 3400):
        fill(lim, 1, t)
    snap = lim.snapshot(later + 3400)["services"]["s"]
    assert snap["sent_today"] == 7 and snap["warmup"] == {"day": 3, "cap": 8, "sent_today": 7}
    assert snap["rates"] == [{"rate": "3/hour", "used": 3, "cap": 3}]
    # A restart seeded from the database sees exactly the same state.
    restarted = Limiter(cfg)
    restarted.seed_service("s", [*before, later, later + 1800, later + 3400], date(2026, 12, 8))
    assert restarted.snapshot(later + 3400)["services"]["s"] == snap
    for limiter in (lim, restarted):
        assert limiter.check("s", "x.org", "c", later + 3500) == later + 3600
        fill(limiter, 1, later + 3600)  # the 8th of the day
        assert limiter.check("s", "x.org", "c", later + 7200) == ts("UTC", 2026, 12, 11, 0, 0)


def test_seeding_without_first_day_uses_the_oldest_start() -> None:
    lim = Limiter(warm())
    lim.seed_service("s", [ts("UTC", 2026, 12, 1, 23, 0), ts("UTC", 2026, 12, 2, 1, 0)], None)
    snap = lim.snapshot(ts("UTC", 2026, 12, 2, 2, 0))["services"]["s"]
    assert snap["warmup"] == {"day": 2, "cap": 4, "sent_today": 1}


def test_seed_campaign() -> None:
    lim = Limiter(make_config({"s": {}}, {"c": {"rate": "2/day"}}))
    lim.seed_campaign("c", [1000.0, 2000.0])
    assert lim.check("s", "x.org", "c", 3000.0) == 1000.0 + 86400


# ---------------------------------------------------------------- slow_down, update_config


def test_slow_down_only_that_service_and_domain() -> None:
    lim = Limiter(make_config({"s": {}, "t": {}}))
    lim.slow_down("s", "GMail.com", 10.0, 70.0)
    assert lim.check("s", "gmail.com", "c", 11.0) == 70.0
    assert lim.check("s", "yahoo.com", "c", 11.0) == 11.0
    assert lim.check("t", "gmail.com", "c", 11.0) == 11.0
    lim.slow_down("s", "gmail.com", 12.0, 40.0)  # a shorter one does not shorten it
    assert lim.check("s", "gmail.com", "c", 12.0) == 70.0
    assert lim.snapshot(12.0)["services"]["s"]["slowed"] == {
        "gmail.com": datetime.fromtimestamp(70.0, UTC).isoformat()
    }
    assert lim.check("s", "gmail.com", "c", 70.0) == 70.0
    assert lim.snapshot(70.0)["services"]["s"]["slowed"] == {}


def test_update_config_applies_at_once_and_keeps_history() -> None:
    lim = Limiter(make_config({"s": {"rate": "10/minute"}}, {"c": {"rate": "10/minute"}}))
    fill(lim, 3, 0.0, dom="gmail.com")
    lim.update_config(
        make_config(
            {"s": {"rate": "3/minute", "domains": {"gmail.com": {"rate": "1/hour"}}}},
            {"c": {}},
        )
    )
    assert lim.check("s", "yahoo.com", "c", 1.0) == 60.0  # the 3 earlier starts count
    lim.record("s", "gmail.com", "c", 60.0)
    assert lim.check("s", "gmail.com", "c", 61.0) == 3660.0  # new shaping from here on
    lim.update_config(make_config({"s": {}}, {"c": {"rate": "1/day"}}))
    assert lim.check("s", "gmail.com", "c", 61.0) == 61.0  # shaping gone, campaign has none
    lim.record("s", "gmail.com", "c", 61.0)
    assert lim.check("s", "gmail.com", "c", 62.0) == 61.0 + 86400


def test_snapshot_is_json_ready() -> None:
    import json

    cfg = make_config(
        {"s": {"rate": ["5/second", "100/hour"], "domains": {"gmail.com": {"rate": "2/minute"}}}},
        {"c": {"rate": "20/minute"}},
    )
    lim = Limiter(cfg)
    fill(lim, 2, 0.0, dom="gmail.com")
    snap = lim.snapshot(0.5)
    json.dumps(snap)
    s = snap["services"]["s"]
    assert s["rates"] == [
        {"rate": "5/second", "used": 2, "cap": 5},
        {"rate": "100/hour", "used": 2, "cap": 100},
    ]
    assert s["domains"] == {"gmail.com": [{"rate": "2/minute", "used": 2, "cap": 2}]}
    assert s["warmup"] is None and s["sent_today"] == 2 and s["slowed"] == {}
    assert snap["campaigns"] == {"c": {"rates": [{"rate": "20/minute", "used": 2, "cap": 20}]}}
    assert lim.snapshot(1.0)["services"]["s"]["rates"][0]["used"] == 0  # window slid past
