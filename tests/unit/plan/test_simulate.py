"""The planner: messages per day and the finish under rates, warm-up, windows and steps."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from campaignd.config.model import Warmup, Window
from campaignd.config.values import parse_rates
from campaignd.plan.simulate import PlanDay, ServiceCapacity, simulate
from campaignd.plan.windows import HORIZON_DAYS

BERLIN = ZoneInfo("Europe/Berlin")
UTC_Z = ZoneInfo("UTC")
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def svc(
    name: str = "relay",
    rate: str | list[str] | None = None,
    warmup: Warmup | None = None,
    since: date | None = None,
) -> ServiceCapacity:
    return ServiceCapacity(name, parse_rates(rate), warmup, since)


def days(*pairs: tuple[str, int]) -> list[PlanDay]:
    return [PlanDay(date.fromisoformat(d), n) for d, n in pairs]


def test_window_days_and_finish_from_a_friday_afternoon() -> None:
    window = Window(days=WEEKDAYS, hours="09:00-17:00", timezone="Europe/Berlin")
    result = simulate(
        {"Europe/Berlin": 1000},
        start=datetime(2026, 12, 4, 16, 0, tzinfo=BERLIN),  # a Friday
        window=window,
        campaign_rates=parse_rates("100/hour"),
        services=[svc(rate="14/second")],
        plan_zone=BERLIN,
    )
    assert result.days == days(("2026-12-04", 100), ("2026-12-07", 800), ("2026-12-08", 100))
    # Tuesday's 100 go at the campaign's pace, one every 36 s from 09:00 (SPEC §2: a rate
    # is a pace, not a burst per window), so the last leaves at 09:59:25.
    assert result.finish == datetime(2026, 12, 8, 9, 59, 25, tzinfo=BERLIN)
    assert result.unschedulable == 0 and result.notes == []


def test_services_add_up() -> None:
    window = Window(days=WEEKDAYS, hours="09:00-17:00")
    result = simulate(
        {"UTC": 1000},
        start=datetime(2026, 12, 4, 16, 0, tzinfo=UTC),
        window=window,
        campaign_rates=(),
        services=[svc("a", "100/hour"), svc("b", "100/hour")],
        plan_zone=UTC_Z,
    )
    assert result.days == days(("2026-12-04", 200), ("2026-12-07", 800))
    # 200/hour in all, evenly: Monday's 800 take four hours from 09:00.
    assert result.finish == datetime(2026, 12, 7, 12, 59, 25, tzinfo=UTC)


def test_daily_rate_with_a_short_window_sends_its_day_at_once() -> None:
    result = simulate(
        {"UTC": 120_000},
        start=datetime(2026, 12, 7, 9, 0, tzinfo=UTC),
        window=Window(hours="09:00-17:00"),
        campaign_rates=(),
        services=[svc(rate=["14/second", "50000/day"])],
        plan_zone=UTC_Z,
    )
    assert result.days == days(("2026-12-07", 50000), ("2026-12-08", 50000), ("2026-12-09", 20000))
    assert result.finish == datetime(2026, 12, 9, 9, 24, 3, tzinfo=UTC)  # 20000 at 14/s


def test_warmup_growth_limits_each_day() -> None:
    warmup = Warmup(start=100, growth=2, until=1000)
    start = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    result = simulate(
        {"UTC": 1000},
        start=start,
        window=None,
        campaign_rates=(),
        services=[svc(warmup=warmup)],
        plan_zone=UTC_Z,
    )
    assert [d.messages for d in result.days] == [100, 200, 400, 300]
    assert result.days[0].date == date(2026, 12, 7)
    assert any("warm-up limits relay to 100 messages on day 1" in n for n in result.notes)
    assert any("allows 1000 a day from day 5 (2026-12-11)" in n for n in result.notes)
    # Day 1 two days ago: today is day 3.
    later = simulate(
        {"UTC": 1000},
        start=start,
        window=None,
        campaign_rates=(),
        services=[svc(warmup=warmup, since=date(2026, 12, 5))],
        plan_zone=UTC_Z,
    )
    assert [d.messages for d in later.days] == [400, 600]
    assert any("to 400 messages on day 3" in n for n in later.notes)


def test_recipient_zones_share_capacity_and_unknown_zone_falls_back() -> None:
    window = Window(
        days=WEEKDAYS,
        hours="09:00-17:00",
        timezone="recipient",
        fallback_timezone="America/New_York",
    )
    result = simulate(
        {"Asia/Tokyo": 100, "America/New_York": 60, "Mars/Base": 40},
        start=datetime(2026, 12, 7, 0, 0, tzinfo=UTC),  # Monday
        window=window,
        campaign_rates=parse_rates("100/hour"),
        services=[svc()],
        plan_zone=UTC_Z,
    )
    assert result.days == days(("2026-12-07", 200))
    # Tokyo opens 00:00Z, New York 14:00Z: New York's 100 go at 100/hour from then.
    assert result.finish == datetime(2026, 12, 7, 14, 59, 25, tzinfo=UTC)
    assert any("'Mars/Base'" in n and "America/New_York" in n for n in result.notes)


def test_zones_split_a_tight_day_and_finish_in_the_later_zone() -> None:
    window = Window(hours="09:00-10:00", timezone="recipient")
    result = simulate(
        {"Asia/Tokyo": 300, "Europe/Berlin": 300},
        start=datetime(2026, 12, 7, 0, 0, tzinfo=UTC),
        window=window,
        campaign_rates=parse_rates("100/hour"),
        services=[svc()],
        plan_zone=UTC_Z,
    )
    # Each zone is open one hour a day, so 100 each a day: three days.
    assert [d.messages for d in result.days] == [200] * 3
    assert result.finish == datetime(
        2026, 12, 9, 8, 59, 25, tzinfo=UTC
    )  # Berlin's hour at 100/hour


def test_days_follow_dst_in_the_plan_zone() -> None:
    ny = ZoneInfo("America/New_York")
    result = simulate(
        {"UTC": 48_000},
        start=datetime(2026, 3, 7, 12, 0, tzinfo=ny),
        window=None,
        campaign_rates=(),
        services=[svc(rate="1000/hour")],
        plan_zone=ny,
    )
    # Sunday 2026-03-08 has 23 hours in New York.
    assert result.days == days(("2026-03-07", 12000), ("2026-03-08", 23000), ("2026-03-09", 13000))


def test_later_steps_follow_their_previous_step() -> None:
    start = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    result = simulate(
        {"UTC": 100},
        start=start,
        window=None,
        campaign_rates=(),
        services=[svc()],
        plan_zone=UTC_Z,
        later_steps=[(timedelta(days=3), 100), (timedelta(days=7), 100)],
    )
    assert result.days == days(("2026-12-07", 100), ("2026-12-10", 100), ("2026-12-17", 100))
    assert result.finish == datetime(2026, 12, 17, 10, 0, tzinfo=UTC)
    same_day = simulate(
        {"UTC": 100},
        start=start,
        window=None,
        campaign_rates=(),
        services=[svc()],
        plan_zone=UTC_Z,
        later_steps=[(timedelta(hours=2), 100)],
    )
    assert same_day.days == days(("2026-12-07", 200))
    assert same_day.finish == datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_later_steps_share_the_capacity() -> None:
    result = simulate(
        {"UTC": 1000},
        start=datetime(2026, 12, 7, 10, 0, tzinfo=UTC),
        window=None,
        campaign_rates=parse_rates("500/day"),
        services=[svc()],
        plan_zone=UTC_Z,
        later_steps=[(timedelta(days=1), 1000)],
    )
    # 500/day is one every 172.8 s: the first day, from 10:00, has room for 292.
    assert [d.messages for d in result.days] == [292, 500, 500, 500, 208]
    assert result.unschedulable == 0


def test_window_that_never_opens_is_unschedulable() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    tuesdays = [date(2026, 1, 6) + timedelta(weeks=i) for i in range(60)]
    for window, why in (
        (Window(days=[]), "days list is empty"),
        (Window(days=["tue"], except_dates=tuesdays), "except_dates"),
    ):
        result = simulate(
            {"UTC": 700},
            start=start,
            window=window,
            campaign_rates=(),
            services=[svc()],
            plan_zone=UTC_Z,
            later_steps=[(timedelta(days=3), 700)],
        )
        assert result.days == [] and result.finish is None
        assert result.unschedulable == 1400
        assert any("never opens" in n and why in n for n in result.notes), result.notes


def test_no_service_is_unschedulable() -> None:
    result = simulate(
        {"UTC": 5},
        start=datetime(2026, 1, 1, tzinfo=UTC),
        window=None,
        campaign_rates=(),
        services=[],
        plan_zone=UTC_Z,
    )
    assert result.unschedulable == 5 and result.days == [] and "no service" in result.notes[0]


def test_beyond_the_horizon_is_unschedulable() -> None:
    result = simulate(
        {"UTC": 1_000_000},
        start=datetime(2026, 1, 1, tzinfo=UTC),
        window=None,
        campaign_rates=parse_rates("1/day"),
        services=[svc()],
        plan_zone=UTC_Z,
    )
    assert len(result.days) == HORIZON_DAYS and all(d.messages == 1 for d in result.days)
    assert result.unschedulable == 1_000_000 - HORIZON_DAYS
    assert result.finish == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=HORIZON_DAYS - 1)
    assert any(f"within {HORIZON_DAYS} days" in n for n in result.notes)


def test_a_million_messages_over_many_zones_is_fast() -> None:
    zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"] * 6
    by_zone = {z: 0 for z in zones}
    for i, z in enumerate(zones):
        by_zone[z] += 33_334 + i
    window = Window(days=["tue", "wed", "thu"], hours="10:00-14:00", timezone="recipient")
    t0 = time.perf_counter()
    result = simulate(
        by_zone,
        start=datetime(2026, 12, 1, tzinfo=UTC),
        window=window,
        campaign_rates=(),
        services=[svc(rate=["14/second", "50000/day"])],
        plan_zone=UTC_Z,
        later_steps=[(timedelta(days=3), sum(by_zone.values()))],
    )
    elapsed = time.perf_counter() - t0
    assert sum(d.messages for d in result.days) == 2 * sum(by_zone.values())
    assert all(d.messages <= 50000 for d in result.days)
    assert result.unschedulable == 0 and result.finish is not None
    assert elapsed < 2.0
