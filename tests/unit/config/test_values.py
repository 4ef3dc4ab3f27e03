from datetime import time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaignd.config.values import (
    Rate,
    format_duration,
    parse_duration,
    parse_hours,
    parse_percent,
    parse_rate,
    parse_rates,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("2w", timedelta(weeks=2)),
        ("P3D", timedelta(days=3)),
        ("PT5M", timedelta(minutes=5)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("p2w", timedelta(weeks=2)),
        (90, timedelta(seconds=90)),
    ],
)
def test_durations(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "3 days", "P", "PT", "-5m", "5x", True, None, [1]])
def test_bad_durations_say_how_to_write_one(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(bad)


@given(st.integers(min_value=1, max_value=10**7))
def test_duration_round_trip(seconds: int) -> None:
    td = timedelta(seconds=seconds)
    assert parse_duration(format_duration(td)) == td


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("14/second", Rate(14, 1)),
        ("14/s", Rate(14, 1)),
        ("100/minute", Rate(100, 60)),
        ("100/min", Rate(100, 60)),
        ("5 / hour", Rate(5, 3600)),
        ("50000/day", Rate(50000, 86400)),
        ("7/d", Rate(7, 86400)),
    ],
)
def test_rates(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate
    assert parse_rate(str(rate)) == rate


@pytest.mark.parametrize("bad", ["14", "0/second", "14/fortnight", "x/s", 14])
def test_bad_rates(bad: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(bad)


def test_rate_list_and_single() -> None:
    assert parse_rates("5/s") == (Rate(5, 1),)
    assert parse_rates(["5/s", "100/day"]) == (Rate(5, 1), Rate(100, 86400))
    assert parse_rates(None) == ()


def test_percent_and_hours() -> None:
    assert parse_percent("5%") == pytest.approx(0.05)
    assert parse_percent("0.3%") == pytest.approx(0.003)
    assert parse_percent(0.2) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        parse_percent("150%")
    h = parse_hours("10:00-14:00")
    assert (h.start, h.end) == (time(10), time(14))
    night = parse_hours("22:00-06:30")
    assert night.end < night.start
    assert parse_hours("00:00-24:00").end == time(0)
    for bad in ("10-14", "25:00-26:00", "10:00-10:00", 600):
        with pytest.raises(ValueError):
            parse_hours(bad)
