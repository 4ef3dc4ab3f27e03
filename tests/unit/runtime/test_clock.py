"""The clock: what is due as a pure function of (campaign, previous, now) with a fake clock, and
the APScheduler alarms that wake the conductor."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from campaignd.config.model import Campaign, Window
from campaignd.plan.cron import CATCH_UP_GRACE, edition_due
from campaignd.plan.due import Previous, due
from campaignd.plan.simulate import ServiceCapacity, simulate
from campaignd.plan.windows import next_window_open, window_zone
from campaignd.runtime.clock import Clock

UTC_Z = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NY = ZoneInfo("America/New_York")
WEEKLY = "0 9 * * tue"


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def campaign(**kw: Any) -> Campaign:
    data: dict[str, Any] = {"audience": "lists/a.csv", "services": "s", "template": "t"}
    data.update(kw)
    return Campaign.model_validate(data)


# ---------------------------------------------------------------- start


def test_start_in_the_future_waits_and_wakes_at_it() -> None:
    now = utc(2026, 12, 1, 8)
    start = utc(2026, 12, 1, 9, 30)
    d = due(campaign(start=start), Previous(first_seen=now), now, UTC_Z)
    assert not d.started and d.edition is None
    assert d.wake_at == start
    # one microsecond later it has come
    later = due(campaign(start=start), Previous(first_seen=now), start, UTC_Z)
    assert later.started and later.wake_at is None


def test_start_in_the_past_or_absent_means_now() -> None:
    now = utc(2026, 12, 1, 8)
    for c in (campaign(start=utc(2025, 1, 1)), campaign()):
        d = due(c, Previous(first_seen=now), now, UTC_Z)
        assert d.started and d.edition is None and d.wake_at is None


def test_start_without_offset_is_read_in_the_daemon_zone() -> None:
    c = campaign(start=datetime(2026, 12, 1, 10, 0))  # naive: 10:00 Berlin = 09:00 UTC
    before = due(c, Previous(first_seen=utc(2026, 12, 1)), utc(2026, 12, 1, 8, 59), BERLIN)
    assert not before.started and before.wake_at == utc(2026, 12, 1, 9)
    assert due(c, Previous(first_seen=utc(2026, 12, 1)), utc(2026, 12, 1, 9), BERLIN).started


# ---------------------------------------------------------------- editions


def test_first_edition_is_the_first_firing_after_the_campaign_was_loaded() -> None:
    c = campaign(schedule={"cron": WEEKLY})
    seen = utc(2026, 12, 1, 9, 30)  # Tuesday, just after a firing: that one is not ours
    d = due(c, Previous(first_seen=seen), seen, UTC_Z)
    assert d.started and d.edition is None
    assert d.wake_at == utc(2026, 12, 8, 9)
    at_fire = due(c, Previous(first_seen=seen), utc(2026, 12, 8, 9), UTC_Z)
    assert at_fire.edition is not None
    assert at_fire.edition.fired_at == utc(2026, 12, 8, 9)
    assert not at_fire.edition.caught_up and at_fire.edition.missed == 0
    assert at_fire.wake_at == utc(2026, 12, 15, 9)  # the alarm moves on to the next one


def test_an_edition_already_sent_is_not_due_again() -> None:
    c = campaign(schedule={"cron": WEEKLY})
    prev = Previous(first_seen=utc(2026, 11, 1), last_fired=utc(2026, 12, 8, 9))
    d = due(c, prev, utc(2026, 12, 8, 9, 0, 2), UTC_Z)
    assert d.edition is None and d.wake_at == utc(2026, 12, 15, 9)


def test_downtime_over_three_firings_is_caught_up_once() -> None:
    c = campaign(schedule={"cron": WEEKLY})
    prev = Previous(first_seen=utc(2026, 11, 1), last_fired=utc(2026, 12, 1, 9))
    back = utc(2026, 12, 23, 14)  # Wednesday, three Tuesdays later
    d = due(c, prev, back, UTC_Z)
    assert d.edition is not None
    assert d.edition.fired_at == utc(2026, 12, 22, 9)  # sent for the latest firing
    assert d.edition.firings == 3 and d.edition.missed == 2
    assert d.edition.caught_up
    assert d.wake_at == utc(2026, 12, 29, 9)


def test_one_firing_missed_is_a_late_catch_up_not_a_miss() -> None:
    prev = utc(2026, 12, 1, 9)
    late = edition_due(WEEKLY, UTC_Z, last_fired=prev, since=prev, now=utc(2026, 12, 8, 12))
    assert late is not None and late.firings == 1 and late.missed == 0 and late.caught_up
    on_time = edition_due(
        WEEKLY, UTC_Z, last_fired=prev, since=prev, now=utc(2026, 12, 8, 9) + CATCH_UP_GRACE
    )
    assert on_time is not None and not on_time.caught_up


def test_start_holds_a_recurring_campaign_back_and_its_firing_counts() -> None:
    c = campaign(schedule={"cron": WEEKLY}, start=utc(2026, 12, 8, 9))
    seen = utc(2026, 11, 20)
    waiting = due(c, Previous(first_seen=seen), utc(2026, 12, 1, 10), UTC_Z)
    assert not waiting.started and waiting.edition is None  # Dec 1 is before the start
    d = due(c, Previous(first_seen=seen), utc(2026, 12, 8, 9), UTC_Z)
    assert d.edition is not None and d.edition.fired_at == utc(2026, 12, 8, 9)


def test_cron_editions_follow_the_zone_across_dst() -> None:
    c = campaign(schedule={"cron": "0 9 * * *"})
    seen = utc(2026, 3, 27)
    # 09:00 Berlin is 08:00 UTC before the change (Mar 29) and 07:00 UTC after it
    d = due(c, Previous(first_seen=seen), utc(2026, 3, 28, 8, 0), BERLIN)
    assert d.edition is not None and d.edition.fired_at == utc(2026, 3, 28, 8)
    after = Previous(first_seen=seen, last_fired=utc(2026, 3, 28, 8))
    nxt = due(c, after, utc(2026, 3, 28, 8, 1), BERLIN)
    assert nxt.edition is None and nxt.wake_at == utc(2026, 3, 29, 7)
    # New York falls back on Nov 1: 09:00 local is 14:00 UTC from then on
    ny = due(c, Previous(first_seen=utc(2026, 10, 31, 14)), utc(2026, 11, 1, 13, 30), NY)
    assert ny.edition is None and ny.wake_at == utc(2026, 11, 1, 14)


def test_a_cron_line_that_never_fires_again_has_no_alarm() -> None:
    c = campaign(schedule={"cron": "0 9 30 2 *"})  # February 30th
    d = due(c, Previous(first_seen=utc(2026, 1, 1)), utc(2026, 6, 1), UTC_Z)
    assert d.started and d.edition is None and d.wake_at is None


# ---------------------------------------------------------------- planner and daemon agree


def test_planner_sends_each_zone_when_the_daemon_would_open_its_window() -> None:
    window = Window.model_validate(
        {"days": ["mon"], "hours": "09:00-10:00", "timezone": "recipient"}
    )
    start = utc(2026, 3, 27, 12)  # a Friday; the US changed clocks, Europe changes on Sunday
    plan = simulate(
        {"Europe/Berlin": 1, "America/New_York": 1},
        start=start,
        window=window,
        campaign_rates=(),
        services=[ServiceCapacity("s", (), None, None)],
        plan_zone=UTC_Z,
    )
    opens = [
        next_window_open(window, start, window_zone(window, z))
        for z in ("Europe/Berlin", "America/New_York")
    ]
    assert opens == [utc(2026, 3, 30, 7), utc(2026, 3, 30, 13)]  # DST in both zones
    assert [d.date for d in plan.days] == [utc(2026, 3, 30).date()]
    assert plan.finish is not None and plan.finish == max(opens)


# ---------------------------------------------------------------- the alarms


async def test_an_alarm_rings_once_at_its_time() -> None:
    rung: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    clock = Clock(lambda key: rung.put_nowait((key, time.time())))
    clock.start()
    try:
        at = time.time() + 0.15
        clock.plan({"news": at, "other": None})
        assert clock.planned == {"news": at}
        key, when = await asyncio.wait_for(rung.get(), 5)
        assert key == "news" and when >= at - 0.01
        assert clock.planned == {}
        clock.plan({"news": at})  # the same instant again is a new alarm, rung at once
        assert (await asyncio.wait_for(rung.get(), 5))[0] == "news"
    finally:
        clock.shutdown()


async def test_replanning_moves_and_removes_alarms() -> None:
    rung: asyncio.Queue[str] = asyncio.Queue()
    clock = Clock(rung.put_nowait)
    clock.start()
    try:
        clock.plan({"a": time.time() + 30, "b": time.time() + 30})
        clock.plan({"a": time.time() + 0.05})  # b is no longer planned; a moved closer
        assert set(clock.planned) == {"a"}
        assert await asyncio.wait_for(rung.get(), 5) == "a"
        past = time.time() - 60  # an alarm in the past rings at once (coalesced, not lost)
        clock.plan({"late": past})
        assert await asyncio.wait_for(rung.get(), 5) == "late"
        await asyncio.sleep(0)
        assert rung.empty()
    finally:
        clock.shutdown()


@pytest.mark.parametrize("later", [timedelta(days=1), timedelta(weeks=5)])
def test_edition_due_counts_but_sends_one(later: timedelta) -> None:
    last = utc(2026, 12, 1, 9)
    d = edition_due("0 9 * * *", UTC_Z, last_fired=last, since=last, now=last + later)
    assert d is not None
    assert d.firings == later.days and d.fired_at == last + later
