"""Windows, warm-up and cron arithmetic of plan/schedule.py, across DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaignd.config.cron import validate_cron
from campaignd.config.model import Warmup, Window
from campaignd.plan.cron import missed_editions, next_fire, step_due
from campaignd.plan.warmup import warmup_cap, warmup_day
from campaignd.plan.windows import (
    MISSED_COUNT_LIMIT,
    in_window,
    next_window_open,
    window_close,
    window_zone,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
UTC_Z = ZoneInfo("UTC")


def win(**kw: Any) -> Window:
    return Window.model_validate(kw)


def local(
    zone: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, sec: int = 0
) -> datetime:
    return datetime(y, mo, d, h, mi, sec, tzinfo=zone)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, sec: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, sec, tzinfo=UTC)


# ---------------------------------------------------------------- window_zone


def test_window_zone_fixed_and_recipient_fallback() -> None:
    fixed = win(timezone="Europe/Berlin")
    assert window_zone(fixed, "Asia/Tokyo") == BERLIN
    rec = win(timezone="recipient", fallback_timezone="America/New_York")
    assert window_zone(rec, "Asia/Tokyo") == ZoneInfo("Asia/Tokyo")
    for bad in (None, "", "Mars/Base", "../etc/passwd", "x" * 300, "Europe/Berlin\x00"):
        assert window_zone(rec, bad) == NY, bad


# ---------------------------------------------------------------- in_window


def test_same_day_hours_and_days() -> None:
    w = win(days=["tue", "wed", "thu"], hours="10:00-14:00", timezone="Europe/Berlin")
    tue = (2026, 12, 1)
    assert not in_window(w, local(BERLIN, *tue, 9, 59, 59), BERLIN)
    assert in_window(w, local(BERLIN, *tue, 10, 0), BERLIN)
    assert in_window(w, local(BERLIN, *tue, 13, 59, 59), BERLIN)
    assert not in_window(w, local(BERLIN, *tue, 14, 0), BERLIN)  # end is exclusive
    assert not in_window(w, local(BERLIN, 2026, 11, 30, 11, 0), BERLIN)  # a Monday
    # The same instant seen from UTC: 10:30 Berlin is 09:30Z.
    assert in_window(w, utc(2026, 12, 1, 9, 30), BERLIN)
    assert not in_window(w, utc(2026, 12, 1, 13, 30), BERLIN)


def test_past_midnight_range_belongs_to_its_start_day() -> None:
    w = win(days=["fri"], hours="22:00-02:00", timezone="UTC")
    assert in_window(w, utc(2026, 12, 4, 23, 0), UTC_Z)  # Friday night
    assert in_window(w, utc(2026, 12, 5, 1, 0), UTC_Z)  # Saturday 01:00 is Friday's
    assert not in_window(w, utc(2026, 12, 5, 2, 0), UTC_Z)
    assert not in_window(w, utc(2026, 12, 5, 23, 0), UTC_Z)  # Saturday night is not
    assert not in_window(w, utc(2026, 12, 4, 1, 0), UTC_Z)  # Thursday's night is not


def test_all_day_and_no_hours() -> None:
    all_day = win(days=["mon"], hours="00:00-24:00")
    no_hours = win(days=["mon"])
    for w in (all_day, no_hours):
        assert in_window(w, utc(2026, 11, 30, 0, 0), UTC_Z)
        assert in_window(w, utc(2026, 11, 30, 23, 59, 59), UTC_Z)
        assert not in_window(w, utc(2026, 12, 1, 0, 0), UTC_Z)
        assert not in_window(w, utc(2026, 11, 29, 23, 59, 59), UTC_Z)


def test_except_dates_are_closed_in_local_time() -> None:
    w = win(hours="10:00-14:00", timezone="Asia/Tokyo", except_dates=["2026-12-25"])
    tokyo = ZoneInfo("Asia/Tokyo")
    assert not in_window(w, local(tokyo, 2026, 12, 25, 11, 0), tokyo)
    assert in_window(w, local(tokyo, 2026, 12, 26, 11, 0), tokyo)
    # Judged by the Tokyo date of the instant, not the UTC one.
    assert not in_window(w, utc(2026, 12, 25, 2, 0), tokyo)  # 11:00 on the 25th there
    assert in_window(w, utc(2026, 12, 26, 2, 0), tokyo)
    late = win(hours="00:00-24:00", timezone="Asia/Tokyo", except_dates=["2026-12-25"])
    assert not in_window(late, utc(2026, 12, 24, 16, 0), tokyo)  # the 24th in UTC, 25th there


def test_except_date_closes_the_night_that_starts_on_it() -> None:
    w = win(days=["thu", "fri"], hours="22:00-02:00", except_dates=["2026-12-24"])
    assert not in_window(w, utc(2026, 12, 24, 23, 0), UTC_Z)
    assert not in_window(w, utc(2026, 12, 25, 1, 0), UTC_Z)  # still the 24th's night
    assert in_window(w, utc(2026, 12, 25, 23, 0), UTC_Z)


def test_new_york_spring_forward() -> None:
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    w = win(hours="09:00-17:00", timezone="America/New_York")
    assert in_window(w, utc(2026, 3, 8, 13, 0), NY)  # 09:00 EDT
    assert not in_window(w, utc(2026, 3, 8, 12, 59, 59), NY)
    assert in_window(w, utc(2026, 3, 7, 14, 0), NY)  # 09:00 EST the day before
    assert not in_window(w, utc(2026, 3, 7, 13, 59), NY)
    assert next_window_open(w, utc(2026, 3, 8, 5, 0), NY) == utc(2026, 3, 8, 13, 0)
    assert window_close(w, utc(2026, 3, 8, 15, 0), NY) == utc(2026, 3, 8, 21, 0)


def test_spring_forward_start_inside_the_gap_opens_at_the_jump() -> None:
    w = win(hours="02:30-04:00", timezone="America/New_York")
    # 02:30 does not exist on 2026-03-08; the window opens when the clock jumps (07:00Z).
    assert next_window_open(w, utc(2026, 3, 8, 0, 0), NY) == utc(2026, 3, 8, 7, 0)
    assert not in_window(w, utc(2026, 3, 8, 6, 59, 59), NY)
    assert in_window(w, utc(2026, 3, 8, 7, 0), NY)
    assert window_close(w, utc(2026, 3, 8, 7, 30), NY) == utc(2026, 3, 8, 8, 0)  # 04:00 EDT
    # A range wholly inside the skipped hour does not happen that day.
    gone = win(hours="02:10-02:40", timezone="America/New_York")
    assert next_window_open(gone, utc(2026, 3, 8, 0, 0), NY) == utc(2026, 3, 9, 6, 10)


def test_new_york_fall_back_covers_the_repeated_hour() -> None:
    # 2026-11-01: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice.
    w = win(hours="01:00-01:30", timezone="America/New_York")
    assert in_window(w, utc(2026, 11, 1, 5, 10), NY)  # 01:10 EDT
    assert in_window(w, utc(2026, 11, 1, 5, 40), NY)  # 01:40 EDT: between the two 01:30s
    assert in_window(w, utc(2026, 11, 1, 6, 10), NY)  # 01:10 EST
    assert not in_window(w, utc(2026, 11, 1, 6, 30), NY)  # the last 01:30
    assert window_close(w, utc(2026, 11, 1, 5, 10), NY) == utc(2026, 11, 1, 6, 30)
    # A normal day is 30 minutes long.
    assert window_close(w, utc(2026, 11, 2, 6, 0), NY) == utc(2026, 11, 2, 6, 30)


def test_berlin_dst_days() -> None:
    w = win(days=["sun"], hours="08:00-18:00", timezone="Europe/Berlin")
    # 2026-03-29 (CEST starts): 08:00 is 06:00Z; 2026-10-25 (CET again): 07:00Z.
    assert next_window_open(w, utc(2026, 3, 28, 12, 0), BERLIN) == utc(2026, 3, 29, 6, 0)
    assert next_window_open(w, utc(2026, 10, 24, 12, 0), BERLIN) == utc(2026, 10, 25, 7, 0)
    assert window_close(w, utc(2026, 10, 25, 12, 0), BERLIN) == utc(2026, 10, 25, 17, 0)


def test_next_window_open_and_close() -> None:
    w = win(days=["mon", "tue", "wed", "thu", "fri"], hours="09:00-17:00")
    fri_late = utc(2026, 12, 4, 17, 0)
    assert next_window_open(w, fri_late, UTC_Z) == utc(2026, 12, 7, 9, 0)
    inside = utc(2026, 12, 7, 10, 0)
    assert next_window_open(w, inside, UTC_Z) is inside
    assert window_close(w, inside, UTC_Z) == utc(2026, 12, 7, 17, 0)
    assert window_close(w, fri_late, UTC_Z) == fri_late  # closed already
    weekdays = win(days=["mon", "tue", "wed", "thu", "fri"])
    assert window_close(weekdays, inside, UTC_Z) == utc(2026, 12, 12, 0, 0)  # merged days
    assert window_close(win(), inside, UTC_Z) is None  # always open


def test_window_never_opens() -> None:
    assert next_window_open(win(days=[]), utc(2026, 1, 1), UTC_Z) is None
    tuesdays = [date(2026, 1, 6) + timedelta(weeks=i) for i in range(60)]
    w = win(days=["tue"], except_dates=tuesdays)
    assert next_window_open(w, utc(2026, 1, 1), UTC_Z) is None
    assert next_window_open(w, utc(2027, 2, 1), UTC_Z) == utc(2027, 3, 2)


@settings(max_examples=150, deadline=None)
@given(
    minutes=st.integers(0, 60 * 24 * 400),
    zone=st.sampled_from(["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "UTC"]),
    days=st.lists(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1),
    start=st.integers(0, 23),
    length=st.integers(1, 23),
)
def test_next_open_is_open_and_close_is_closed(
    minutes: int, zone: str, days: list[str], start: int, length: int
) -> None:
    z = ZoneInfo(zone)
    hours = f"{start:02d}:00-{(start + length) % 24:02d}:00"
    w = win(days=days, hours=hours, timezone=zone)
    at = utc(2026, 1, 1) + timedelta(minutes=minutes)
    opens = next_window_open(w, at, z)
    assert opens is not None and opens >= at
    assert in_window(w, opens, z)
    if opens > at:  # nothing open in between
        assert not in_window(w, opens - timedelta(seconds=1), z)
        assert not in_window(w, at, z)
    closes = window_close(w, opens, z)
    assert closes is not None and closes > opens
    assert not in_window(w, closes, z)
    assert in_window(w, closes - timedelta(seconds=1), z)


# ---------------------------------------------------------------- warm-up


def test_warmup_day_and_cap() -> None:
    assert warmup_day(date(2026, 11, 20), date(2026, 11, 20)) == 1
    assert warmup_day(date(2026, 11, 20), date(2026, 11, 22)) == 3
    assert warmup_day(date(2026, 11, 20), date(2026, 11, 1)) == 1  # before day 1
    w = Warmup(start=50, growth=1.5, until=50000)
    assert [warmup_cap(w, d) for d in (1, 2, 3, 4)] == [50, 75, 112, 168]
    assert warmup_cap(w, 0) == 50
    assert warmup_cap(w, 100_000) == 50000  # no OverflowError
    assert warmup_cap(Warmup(start=10, growth=1.1, until=100), 2) == 11  # not 10.999…


# ---------------------------------------------------------------- cron


@pytest.mark.parametrize(
    "expr", ["0 9 * * tue", "*/15 8-17 * * mon-fri", "0 0 1 * *", "0 9 29 2 *"]
)
def test_valid_cron(expr: str) -> None:
    assert validate_cron(expr) is None


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("0 9 * *", ["4 fields, not 5", "minute hour day-of-month month day-of-week"]),
        ("61 9 * * *", ["minute field '61'", "61 is above 59"]),
        ("0 25 * * *", ["hour field '25'", "above 23"]),
        ("0 9 * * funday", ["day of week field 'funday'", "not a weekday"]),
        ("0 9 * * 8", ["day of week", "above 7"]),
        ("0 9 * * 5-1", ["runs backwards"]),
        ("0 9 * foo *", ["month field 'foo'", "not a month"]),
        ("*/0 * * * *", ["step of 0"]),
        ("0 9 30 2 *", ["never fires"]),
    ],
)
def test_invalid_cron_says_why(expr: str, words: list[str]) -> None:
    why = validate_cron(expr)
    assert why is not None
    for w in words:
        assert w in why, why
    assert "Error validating" not in why


def test_cron_weekday_numbers_follow_crontab() -> None:
    # Crontab: 0 and 7 are Sunday, 1 is Monday (APScheduler 3 alone would read 1 as Tuesday).
    thu = utc(2026, 12, 3, 12, 0)
    assert next_fire("0 9 * * 1", thu, UTC_Z) == utc(2026, 12, 7, 9, 0)  # Monday
    assert next_fire("0 9 * * 0", thu, UTC_Z) == utc(2026, 12, 6, 9, 0)  # Sunday
    assert next_fire("0 9 * * 7", thu, UTC_Z) == utc(2026, 12, 6, 9, 0)
    assert next_fire("0 9 * * 6-7", thu, UTC_Z) == utc(2026, 12, 5, 9, 0)  # Saturday
    assert next_fire("0 9 * * fri-sun", utc(2026, 12, 5, 10, 0), UTC_Z) == utc(2026, 12, 6, 9, 0)


def test_cron_day_or_weekday_like_crontab() -> None:
    # Both fields restricted: the 15th OR any Monday.
    after = utc(2026, 12, 8, 12, 0)  # Tuesday
    assert next_fire("0 9 15 * mon", after, UTC_Z) == utc(2026, 12, 14, 9, 0)
    assert next_fire("0 9 15 * mon", utc(2026, 12, 14, 12, 0), UTC_Z) == utc(2026, 12, 15, 9, 0)


def test_next_fire_in_zone_and_strictly_after() -> None:
    at = local(BERLIN, 2026, 12, 1, 9, 0)  # a Tuesday 09:00 Berlin
    assert next_fire("0 9 * * tue", at, BERLIN) == utc(2026, 12, 8, 8, 0)
    assert next_fire("0 9 * * tue", at - timedelta(seconds=1), BERLIN) == utc(2026, 12, 1, 8, 0)
    assert next_fire("0 9 30 2 *", at, BERLIN) is None
    with pytest.raises(ValueError, match="minute"):
        next_fire("99 * * * *", at, BERLIN)


def test_next_fire_across_dst() -> None:
    # A time in the skipped hour fires at the jump; the repeated hour fires once.
    spring = [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]
    at = utc(2026, 3, 7, 0, 0)
    for want in spring:
        got = next_fire("30 2 * * *", at, NY)
        assert got == want
        at = want
    fall = [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    at = utc(2026, 10, 31, 0, 0)
    for want in fall:
        got = next_fire("30 1 * * *", at, NY)
        assert got == want
        at = want
    # From inside the repeated hour it moves on instead of answering an earlier time.
    assert next_fire("*/30 * * * *", utc(2026, 11, 1, 6, 0), NY) == utc(2026, 11, 1, 7, 0)


def test_missed_editions() -> None:
    created = utc(2026, 11, 30, 12, 0)  # Monday
    now = utc(2026, 12, 16, 10, 0)  # Wednesday, two weeks later
    assert missed_editions("0 9 * * tue", None, created, now, UTC_Z) == (3, utc(2026, 12, 15, 9))
    last = utc(2026, 12, 15, 9, 0)
    assert missed_editions("0 9 * * tue", last, created, now, UTC_Z) == (0, None)
    # The firing exactly at `now` counts; the one at `since` does not.
    assert missed_editions(
        "0 9 * * tue", None, utc(2026, 12, 1, 9), utc(2026, 12, 8, 9), UTC_Z
    ) == (
        1,
        utc(2026, 12, 8, 9),
    )


def test_missed_editions_count_is_bounded_but_latest_exact() -> None:
    created = utc(2026, 1, 1)
    now = utc(2026, 3, 1, 12, 34, 56)  # ~85,000 minutely firings
    count, latest = missed_editions("* * * * *", None, created, now, UTC_Z)
    assert count == MISSED_COUNT_LIMIT
    assert latest == utc(2026, 3, 1, 12, 34)


def test_step_due() -> None:
    sent = utc(2026, 12, 1, 10, 0)
    assert step_due(sent, timedelta(days=3)) == utc(2026, 12, 4, 10, 0)
