"""Cron lines (SPEC §2 ``schedule.cron``): parsed and checked once, for validation and for the
planner's edition arithmetic (plan/cron.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

HORIZON_DAYS = 400
MISSED_COUNT_LIMIT = 1000
UNLIMITED = 10**15  # stands for "no limit" in integer capacity arithmetic

_MIDNIGHT = time(0, 0)
_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)


# ---------------------------------------------------------------- cron

_CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
_CRON_HINT = "the five fields are minute hour day-of-month month day-of-week, like '0 9 * * tue'"
# Crontab numbers weekdays from Sunday (0 and 7); APScheduler 3 from Monday. Weekdays are
# therefore handed to APScheduler by name so "1-5" means Monday to Friday as in crontab.
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_ITEM = re.compile(r"(\*|[0-9a-z]+)(?:-([0-9a-z]+))?(?:/([0-9]+))?")
_APS_CLEANUPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"the last value \((\d+)\) is higher than the maximum value \((\d+)\)"),
     r"\1 is above \2, the largest allowed"),
    (re.compile(r"the first value \((\d+)\) is lower than the minimum value \((\d+)\)"),
     r"\1 is below \2, the smallest allowed"),
    (re.compile(r"the step value \((\d+)\) is higher than the total range of the expression "
                r"\((\d+)\)"), r"the step \1 is larger than the range it steps through (\2)"),
    (re.compile(r"Increment must be higher than 0"), "a step of 0 never advances"),
    (re.compile(r"The minimum value in a range must not be higher than the maximum"),
     "the range runs backwards (write the smaller value first)"),
    (re.compile(r'Unrecognized expression "[^"]*" for field "\w+"'),
     "it is not a number, range (1-5), list (1,15) or step (*/10)"),
    (re.compile(r'Invalid month name "([^"]*)"'), r"'\1' is not a month (use 1-12 or jan-dec)"),
    (re.compile(r'Invalid weekday name "([^"]*)"'), r"'\1' is not a weekday (use sun-sat)"),
)  # fmt: skip


def _cron_day(word: str, *, end: bool) -> int:
    if word.isdigit():
        value = int(word)
        if value > 7:
            raise ValueError(f"{value} is above 7, the largest weekday (0 and 7 are Sunday)")
        return value
    if word not in _CRON_DAYS:
        raise ValueError(f"'{word}' is not a weekday (use 0-7 or sun-sat)")
    # "fri-sun" reads naturally; crontab's 7 makes Sunday the end of such a range.
    return 7 if end and word == "sun" else _CRON_DAYS.index(word)


def _cron_weekdays(expr: str) -> str:
    """A crontab day-of-week field as the APScheduler field of the same days."""
    days: set[int] = set()
    for item in expr.lower().split(","):
        m = _CRON_ITEM.fullmatch(item)
        if m is None or (m.group(1) == "*" and m.group(2)):
            raise ValueError("it is not a weekday, range (1-5), list (1,3) or step (*/2)")
        first, last, step = m.groups()
        lo = 0 if first == "*" else _cron_day(first, end=False)
        hi = _cron_day(last, end=True) if last else 7 if first == "*" or step else lo
        stride = int(step) if step else 1
        if stride == 0:
            raise ValueError("a step of 0 never advances")
        if lo > hi:
            raise ValueError("the range runs backwards (write the smaller day first)")
        days.update(d % 7 for d in range(lo, hi + 1, stride))
    if len(days) == 7:
        return "*"
    return ",".join(_CRON_DAYS[d] for d in (1, 2, 3, 4, 5, 6, 0) if d in days)


def _clean_aps(message: str) -> str:
    message = re.sub(r"^Error validating expression '[^']*': ", "", message)
    for pattern, replacement in _APS_CLEANUPS:
        if pattern.search(message):
            return pattern.sub(replacement, message)
    return message


def _field_error(fields: list[str], index: int, reason: str, expr: str) -> ValueError:
    return ValueError(
        f"bad cron line {expr!r}: {_CRON_FIELDS[index]} field '{fields[index]}': {reason} "
        f"— {_CRON_HINT}"
    )


def cron_triggers(expr: str, zone: ZoneInfo) -> tuple[CronTrigger, ...]:
    """The APScheduler triggers of a crontab line (two when it fires on day OR weekday)."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron line {expr!r} has {len(fields)} fields, not 5 — {_CRON_HINT}")
    minute, hour, dom, month, dow = fields
    try:
        weekdays = _cron_weekdays(dow)
    except ValueError as exc:
        raise _field_error(fields, 4, str(exc), expr) from None
    # As in crontab, a restricted day-of-month and day-of-week fire on either, not both.
    if not dom.startswith("*") and not dow.startswith("*"):
        lines = [f"{minute} {hour} {dom} {month} *", f"{minute} {hour} * {month} {weekdays}"]
    else:
        lines = [f"{minute} {hour} {dom} {month} {weekdays}"]
    try:
        return tuple(CronTrigger.from_crontab(line, timezone=zone) for line in lines)
    except ValueError as exc:
        message = str(exc)
    for i, value in enumerate(fields[:4]):
        probe = ["0", "0", "*", "*", "*"]
        probe[i] = value
        try:
            CronTrigger.from_crontab(" ".join(probe), timezone=zone)
        except ValueError as exc:
            raise _field_error(fields, i, _clean_aps(str(exc)), expr) from None
    raise ValueError(f"bad cron line {expr!r}: {_clean_aps(message)} — {_CRON_HINT}")


def validate_cron(expr: str) -> str | None:
    """None for a usable crontab line, else what is wrong with it in an operator's words."""
    try:
        triggers = cron_triggers(expr, ZoneInfo("UTC"))
    except ValueError as exc:
        return str(exc)
    # 2000 is a leap year, so "29 feb" counts as firing; "30 feb" never does.
    reference = datetime(2000, 1, 1, tzinfo=UTC)
    if all(t.get_next_fire_time(None, reference) is None for t in triggers):
        return f"cron line {expr!r} never fires: no date has that day of month in that month"
    return None
