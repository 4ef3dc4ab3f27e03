"""Warm-up ramps: the day number and that day's cap (pure)."""

from __future__ import annotations

import math
from datetime import date, time, timedelta

from ..config.model import Warmup

HORIZON_DAYS = 400
MISSED_COUNT_LIMIT = 1000
UNLIMITED = 10**15  # stands for "no limit" in integer capacity arithmetic

_MIDNIGHT = time(0, 0)
_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)


# ---------------------------------------------------------------- warm-up


def warmup_day(first_day: date, today: date) -> int:
    return max(1, (today - first_day).days + 1)


def warmup_cap(warmup: Warmup, day: int) -> int:
    """``min(until, floor(start × growth^(day−1)))`` without overflowing on late days."""
    exponent = max(day, 1) - 1
    if math.log(warmup.start) + exponent * math.log(warmup.growth) >= math.log(warmup.until):
        return warmup.until
    # round() first so 10 × 1.1 is 11, not the 10.999… float arithmetic can give.
    return min(warmup.until, math.floor(round(warmup.start * warmup.growth**exponent, 6)))


def warmup_full_day(warmup: Warmup) -> int:
    day = 1 + max(0, math.ceil(math.log(warmup.until / warmup.start) / math.log(warmup.growth)))
    while day > 1 and warmup_cap(warmup, day - 1) >= warmup.until:
        day -= 1
    while warmup_cap(warmup, day) < warmup.until:
        day += 1
    return day
