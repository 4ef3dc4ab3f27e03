"""Pure time arithmetic shared by ``campaignctl plan`` and the daemon: send windows, warm-up,
cron schedules, drip steps and the day-by-day planner.

Both sides call these same functions so the plan an operator reads is the schedule the daemon
keeps. Nothing here reads a clock or a file: every instant is an argument.

A window's open *period* belongs to the local day it starts on and runs from the first moment
the local clock shows the start time to the last moment it shows the end time. On a
spring-forward day a start or end inside the skipped hour moves to the instant the clock jumps;
on a fall-back day the period covers the repeated hour. Working in periods of real instants
(not wall-clock comparisons) keeps ``in_window``, ``next_window_open`` and ``window_close``
consistent with one another.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from ..config.model import WEEKDAYS, Warmup, Window
from ..config.values import Rate

HORIZON_DAYS = 400
MISSED_COUNT_LIMIT = 1000
UNLIMITED = 10**15  # stands for "no limit" in integer capacity arithmetic

_MIDNIGHT = time(0, 0)
_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)


# ---------------------------------------------------------------- windows


@lru_cache(maxsize=1024)
def _zone_or_none(name: str) -> ZoneInfo | None:
    # Cached because a bad recipient zone would otherwise hit the filesystem per message.
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def window_zone(window: Window, recipient_tz: str | None) -> ZoneInfo:
    """The zone a window is read in; a recipient without a valid IANA zone gets the fallback."""
    if window.timezone != "recipient":
        return ZoneInfo(window.timezone)
    zone = _zone_or_none(recipient_tz) if recipient_tz else None
    return zone if zone is not None else ZoneInfo(window.fallback_timezone)


def _exists(naive: datetime, ts: float, zone: ZoneInfo) -> bool:
    return datetime.fromtimestamp(ts, zone).replace(tzinfo=None) == naive


def _local_ts(day: date, at: time, zone: ZoneInfo, *, latest: bool) -> float:
    """The instant ``zone``'s clock shows ``day at``: its earliest or latest occurrence.

    A time skipped by a spring-forward jump maps to the instant of the jump.
    """
    naive = datetime.combine(day, at)
    ts = naive.replace(tzinfo=zone, fold=1 if latest else 0).timestamp()
    if _exists(naive, ts, zone):
        return ts
    # In a gap fold=0 reads the time with the old offset (past the jump), fold=1 with the
    # new one (before it); the jump lies between, on a whole second.
    lo = math.floor(naive.replace(tzinfo=zone, fold=1).timestamp())
    hi = math.ceil(naive.replace(tzinfo=zone, fold=0).timestamp())
    offset_after = datetime.fromtimestamp(hi, zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == offset_after:
            hi = mid
        else:
            lo = mid
    return float(hi)


def _open_day(window: Window, day: date) -> bool:
    return WEEKDAYS[day.weekday()] in window.days and day not in window.except_dates


def _period(window: Window, zone: ZoneInfo, day: date) -> tuple[float, float] | None:
    """The open period that starts on local ``day`` as (open, close) timestamps, if any."""
    if not _open_day(window, day):
        return None
    hours = window.hours
    if hours is None:
        start, end, end_day = _MIDNIGHT, _MIDNIGHT, day + _DAY
    else:
        start, end = hours.start, hours.end
        end_day = day if end > start else day + _DAY
    opens = _local_ts(day, start, zone, latest=False)
    closes = _local_ts(end_day, end, zone, latest=True)
    # A range lying wholly inside a skipped hour does not happen that day.
    return (opens, closes) if opens < closes else None


def _period_at(window: Window, zone: ZoneInfo, ts: float) -> tuple[date, float, float] | None:
    local = datetime.fromtimestamp(ts, zone).date()
    # A repeated hour at midnight can put the next day's period around ``ts`` too.
    for day in (local - _DAY, local, local + _DAY):
        p = _period(window, zone, day)
        if p is not None and p[0] <= ts < p[1]:
            return day, p[0], p[1]
    return None


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def in_window(window: Window, at: datetime, zone: ZoneInfo) -> bool:
    return _period_at(window, zone, at.timestamp()) is not None


def next_window_open(window: Window, at: datetime, zone: ZoneInfo) -> datetime | None:
    """``at`` if the window is open then, else the instant it next opens (UTC)."""
    ts = at.timestamp()
    if _period_at(window, zone, ts) is not None:
        return at
    local = datetime.fromtimestamp(ts, zone).date()
    for i in range(HORIZON_DAYS + 1):
        p = _period(window, zone, local + timedelta(days=i))
        if p is not None and p[0] > ts:
            return _utc(p[0])
    return None


def window_close(window: Window, at: datetime, zone: ZoneInfo) -> datetime | None:
    """When the open period around ``at`` ends; ``at`` itself when closed, None if never.

    Periods that touch (all-day windows on consecutive days) count as one.
    """
    ts = at.timestamp()
    found = _period_at(window, zone, ts)
    if found is None:
        return at
    day, _, closes = found
    for i in range(1, HORIZON_DAYS + 1):
        p = _period(window, zone, day + timedelta(days=i))
        if p is None or p[0] > closes:
            return _utc(closes)
        closes = max(closes, p[1])
    return None


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


def _warmup_full_day(warmup: Warmup) -> int:
    day = 1 + max(0, math.ceil(math.log(warmup.until / warmup.start) / math.log(warmup.growth)))
    while day > 1 and warmup_cap(warmup, day - 1) >= warmup.until:
        day -= 1
    while warmup_cap(warmup, day) < warmup.until:
        day += 1
    return day


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


def _triggers(expr: str, zone: ZoneInfo) -> tuple[CronTrigger, ...]:
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
        triggers = _triggers(expr, ZoneInfo("UTC"))
    except ValueError as exc:
        return str(exc)
    # 2000 is a leap year, so "29 feb" counts as firing; "30 feb" never does.
    reference = datetime(2000, 1, 1, tzinfo=UTC)
    if all(t.get_next_fire_time(None, reference) is None for t in triggers):
        return f"cron line {expr!r} never fires: no date has that day of month in that month"
    return None


def _fold_end(ts: datetime, zone: ZoneInfo) -> datetime:
    """The first instant after ``ts`` that is not in the second pass of a repeated hour."""
    lo = math.floor(ts.timestamp())
    hi = lo + 3600
    while datetime.fromtimestamp(hi, zone).fold:
        hi += 3600
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).fold:
            lo = mid
        else:
            hi = mid
    return _utc(hi)


def _next_after(trigger: CronTrigger, after: datetime, zone: ZoneInfo) -> datetime | None:
    # APScheduler 3.11 gets stuck inside a repeated (fall-back) hour, even answering with
    # earlier times. A wall-clock time fires once, so the repeat is skipped outright.
    probe = after
    for _ in range(64):
        if probe.astimezone(zone).fold:
            probe = _fold_end(probe, zone) - _TINY
        fire: datetime | None = trigger.get_next_fire_time(None, probe + _TINY)
        if fire is None:
            return None
        fire = fire.astimezone(UTC)
        if fire <= probe:
            probe += timedelta(minutes=1)
        elif fire.astimezone(zone).fold:
            probe = fire
        else:
            return fire
    return None


def next_fire(expr: str, after: datetime, zone: ZoneInfo) -> datetime | None:
    """The first firing strictly after ``after`` (UTC), None if it never fires again.

    Raises ValueError (with the reason ``validate_cron`` gives) for a bad line.
    """
    fires = [f for t in _triggers(expr, zone) if (f := _next_after(t, after, zone)) is not None]
    return min(fires) if fires else None


def _last_fire(expr: str, since: datetime, now: datetime, zone: ZoneInfo) -> datetime | None:
    """The latest firing in (since, now], found by looking back over doubling spans."""
    span = timedelta(minutes=1)
    while True:
        lo = max(since, now - span)
        fire = next_fire(expr, lo, zone)
        if fire is not None and fire <= now:
            while (later := next_fire(expr, fire, zone)) is not None and later <= now:
                fire = later
            return fire
        if lo == since:
            return None
        span *= 2


def missed_editions(
    expr: str, last_fire: datetime | None, created: datetime, now: datetime, zone: ZoneInfo
) -> tuple[int, datetime | None]:
    """Firings in (last_fire or created, now] and the latest of them.

    The count stops at ``MISSED_COUNT_LIMIT`` (a minutely line left off for a day): it is
    only reported, since the daemon catches up with a single edition, not one per firing.
    """
    since = last_fire or created
    count = 0
    latest: datetime | None = None
    fire = next_fire(expr, since, zone)
    while fire is not None and fire <= now:
        count += 1
        latest = fire
        if count >= MISSED_COUNT_LIMIT:
            return count, _last_fire(expr, fire, now, zone) or fire
        fire = next_fire(expr, fire, zone)
    return count, latest


CATCH_UP_GRACE = timedelta(minutes=5)
"""An edition started later than this after its firing was caught up (the daemon was down)."""


@dataclass(frozen=True)
class EditionDue:
    """A recurring campaign's edition to send now, and what it stands for."""

    fired_at: datetime
    """The firing it is sent for: the latest one due."""
    firings: int
    """Firings since the previous edition (at most ``MISSED_COUNT_LIMIT``)."""
    caught_up: bool
    """Sent late or for several firings at once: the daemon was not running at the firing."""

    @property
    def missed(self) -> int:
        """Firings that get no edition of their own (one catch-up edition stands for all)."""
        return self.firings - 1


def edition_due(
    expr: str,
    zone: ZoneInfo,
    *,
    last_fired: datetime | None,
    since: datetime,
    now: datetime,
    grace: timedelta = CATCH_UP_GRACE,
) -> EditionDue | None:
    """The edition a cron schedule owes at ``now``, None if none.

    Firings are counted in (``last_fired`` or ``since``, ``now``]; any number of them makes one
    edition, for the latest — a daemon that was down for three Tuesdays sends one edition, not
    three.
    """
    count, latest = missed_editions(expr, last_fired, since, now, zone)
    if not count or latest is None:
        return None
    return EditionDue(latest, count, caught_up=count > 1 or now - latest > grace)


def step_due(previous_sent: datetime, after: timedelta) -> datetime:
    return previous_sent + after


# ---------------------------------------------------------------- planner


@dataclass(frozen=True)
class ServiceCapacity:
    name: str
    rates: tuple[Rate, ...]
    warmup: Warmup | None
    warmup_since: date | None


@dataclass(frozen=True)
class PlanDay:
    date: date
    messages: int


@dataclass(frozen=True)
class PlanResult:
    days: list[PlanDay]
    finish: datetime | None
    unschedulable: int
    notes: list[str]


def _rates_cap(rates: Sequence[Rate], seconds: float) -> int:
    """Most starts the rates allow in ``seconds`` of open time, with a full burst at its start.

    The limiter's sliding windows let ``count`` start at once, so an hour of 100/hour is 100
    and a day of 50000/day is 50000 whether the window is open 8 hours or 24.
    """
    if seconds <= 0:
        return 0
    caps = [r.count * math.ceil(seconds / r.per_seconds - 1e-9) for r in rates]
    return min(caps, default=UNLIMITED)


def _started_by(rates: Sequence[Rate], t: int) -> int:
    """Starts the rates allow from a fresh start up to ``t`` seconds later, inclusive."""
    return min((r.count * (t // r.per_seconds + 1) for r in rates), default=UNLIMITED)


def _seconds_for(n: int, services: Sequence[ServiceCapacity], campaign: Sequence[Rate]) -> int:
    """Open seconds until the ``n``-th message starts, the limits' bursts included."""
    if n <= 1:
        return 0

    def allowed(t: int) -> int:
        through = sum(_started_by(s.rates, t) for s in services)
        return min(through, _started_by(campaign, t))

    lo, hi = 0, 2 * 86400
    while lo < hi:
        mid = (lo + hi) // 2
        if allowed(mid) >= n:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _advance(pieces: Sequence[tuple[float, float]], seconds: float) -> float:
    for a, b in pieces:
        if seconds < b - a:
            return a + seconds
        seconds -= b - a
    return pieces[-1][1]


def _clip(pieces: Iterable[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    return [(max(a, lo), min(b, hi)) for a, b in pieces if min(b, hi) > max(a, lo)]


def _union(pieces: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(pieces):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _length(pieces: Iterable[tuple[float, float]]) -> float:
    return sum(b - a for a, b in pieces)


def _share(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders), none above its weight."""
    whole = sum(weights)
    if whole <= total:
        return list(weights)
    shares = [total * w // whole for w in weights]
    rest = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % whole))
    for i in order[:rest]:
        shares[i] += 1
    return shares


@dataclass
class _Batch:
    due: float
    step: int
    count: int


@dataclass
class _Group:
    """Recipients whose window is read in one zone, with their messages not yet sent."""

    zone: ZoneInfo
    totals: list[int]  # messages per step
    sent: list[int]  # messages per step sent so far
    batches: list[_Batch]  # released, not yet sent
    periods: dict[date, tuple[float, float] | None] = field(default_factory=dict)

    def ready(self, end: float) -> int:
        return sum(b.count for b in self.batches if b.due < end)

    def pieces(self, window: Window | None, lo: float, hi: float) -> list[tuple[float, float]]:
        """This group's open time within [lo, hi)."""
        if window is None:
            return [(lo, hi)] if hi > lo else []
        day = datetime.fromtimestamp(lo, self.zone).date() - _DAY
        last = datetime.fromtimestamp(hi, self.zone).date()
        spans = []
        while day <= last:
            if day not in self.periods:
                self.periods[day] = _period(window, self.zone, day)
            if (p := self.periods[day]) is not None:
                spans.append(p)
            day += _DAY
        return _clip(_union(spans), lo, hi)


@dataclass
class _Planner:
    window: Window | None
    campaign_rates: tuple[Rate, ...]
    services: list[ServiceCapacity]
    first_day: date
    afters: list[float]  # seconds each step waits for the previous one
    notes: list[str]
    warned: set[str] = field(default_factory=set)

    def warmup_caps(self, day: date) -> list[int]:
        caps = []
        for s in self.services:
            if s.warmup is None:
                caps.append(UNLIMITED)
            else:
                first = s.warmup_since or s.warmup.since or self.first_day
                caps.append(warmup_cap(s.warmup, warmup_day(first, day)))
        return caps

    def through(self, seconds: float) -> int:
        """Rate capacity (no warm-up) of ``seconds`` of open time."""
        services = sum(_rates_cap(s.rates, seconds) for s in self.services)
        return min(services, _rates_cap(self.campaign_rates, seconds))

    def open_time(
        self, groups: list[_Group], lo: float, hi: float
    ) -> dict[int, list[tuple[float, float]]]:
        """Each group's open time in [lo, hi) from its earliest ready message on."""
        out = {}
        for i, g in enumerate(groups):
            own = g.pieces(self.window, lo, hi)
            ready = [b.due for b in g.batches if own and b.due < own[-1][1]]
            if ready and (clipped := _clip(own, min(ready), hi)):
                out[i] = clipped
        return out

    def capacity(self, day: date, seconds: float, demand: int) -> int:
        by_rate = [_rates_cap(s.rates, seconds) for s in self.services]
        by_warmup = self.warmup_caps(day)
        services = sum(min(r, w) for r, w in zip(by_rate, by_warmup, strict=True))
        capacity = min(services, _rates_cap(self.campaign_rates, seconds))
        if demand > capacity and capacity == services:
            self.note_warmup(day, by_rate, by_warmup)
        return capacity

    def note_warmup(self, day: date, by_rate: list[int], by_warmup: list[int]) -> None:
        for s, rate, cap in zip(self.services, by_rate, by_warmup, strict=True):
            if s.warmup is None or cap >= rate or s.name in self.warned:
                continue
            self.warned.add(s.name)
            first = s.warmup_since or s.warmup.since or self.first_day
            full = _warmup_full_day(s.warmup)
            self.notes.append(
                f"warm-up limits {s.name} to {cap} messages on day {warmup_day(first, day)} "
                f"({day.isoformat()}); it allows {s.warmup.until} a day from day {full} "
                f"({(first + timedelta(days=full - 1)).isoformat()})"
            )

    def send(self, g: _Group, count: int, opens: float, end: float) -> None:
        """Sends ``count`` of the group's messages ready before ``end``, earliest due first."""
        g.batches.sort(key=lambda b: (b.due, b.step))
        for b in list(g.batches):
            if count <= 0 or b.due >= end:
                break
            take = min(count, b.count)
            b.count -= take
            count -= take
            self.release_next(g, b.step, take, opens)
        g.batches = [b for b in g.batches if b.count > 0]

    def release_next(self, g: _Group, step: int, take: int, opens: float) -> None:
        # The next step follows `after` this one: the day's send curve shifted by `after`.
        # Cumulative integer division releases exactly the step's total in the end.
        before = g.sent[step]
        g.sent[step] += take
        nxt = step + 1
        if nxt >= len(g.totals) or g.totals[step] == 0:
            return
        total, following = g.totals[step], g.totals[nxt]
        gained = g.sent[step] * following // total - before * following // total
        if gained:
            g.batches.append(_Batch(opens + self.afters[nxt], nxt, gained))

    def plan_day(
        self, groups: list[_Group], day: date, lo: float, hi: float
    ) -> tuple[int, float | None]:
        """Sends plan day [lo, hi); returns its messages and the instant of the last one."""
        used: dict[int, int] = {}
        finish: float | None = None
        union: list[tuple[float, float]] = []
        # Passes after the first let a follow-up due later that same day (after: 2h) go.
        for _ in range(len(self.afters)):
            pieces = self.open_time(groups, lo, hi)
            ids = sorted(pieces)
            wants = [
                max(0, min(self.through(_length(pieces[i])) - used.get(i, 0),
                           groups[i].ready(pieces[i][-1][1])))
                for i in ids
            ]  # fmt: skip
            open_now = _union([*union, *(p for ps in pieces.values() for p in ps)])
            spare = self.capacity(day, _length(open_now), sum(wants)) - sum(used.values())
            shares = _share(max(spare, 0), wants)
            if not any(shares):
                break
            union = open_now
            for i, n in zip(ids, shares, strict=True):
                if n:
                    self.send(groups[i], n, pieces[i][0][0], pieces[i][-1][1])
                    used[i] = used.get(i, 0) + n
                    done = _advance(pieces[i], self.seconds_for(used[i]))
                    finish = done if finish is None else max(finish, done)
        total = sum(used.values())
        if finish is not None:
            # Groups open at once share the limits: the day's whole volume bounds the finish.
            finish = max(finish, _advance(union, self.seconds_for(total)))
        return total, finish

    def seconds_for(self, n: int) -> int:
        return _seconds_for(n, self.services, self.campaign_rates)


def _groups(
    messages_by_zone: dict[str, int],
    window: Window | None,
    plan_zone: ZoneInfo,
    step_counts: list[int],
    start_ts: float,
    notes: list[str],
) -> list[_Group]:
    """Recipients merged by the zone their window is read in (one group without a window)."""
    merged: dict[str, tuple[ZoneInfo, int]] = {}
    for name, n in sorted(messages_by_zone.items()):
        if n <= 0:
            continue
        zone = plan_zone if window is None else window_zone(window, name)
        if window is not None and window.timezone == "recipient" and zone.key != name:
            notes.append(
                f"{n} recipients have the unknown time zone {name!r}: their window is read "
                f"in {zone.key}"
            )
        merged[zone.key] = (zone, merged.get(zone.key, (zone, 0))[1] + n)
    first_total = sum(n for _, n in merged.values())
    groups = []
    for zone, n in (merged[k] for k in sorted(merged)):
        totals = [n] + [c * n // first_total for c in step_counts[1:]]
        groups.append(_Group(zone, totals, [0] * len(totals), [_Batch(start_ts, 0, n)]))
    # Later steps split over the zones like the first; rounding leftovers go to the last.
    for step, c in enumerate(step_counts[1:], start=1):
        if groups:
            groups[-1].totals[step] += c - sum(g.totals[step] for g in groups)
    return groups


def simulate(
    messages_by_zone: dict[str, int],
    *,
    start: datetime,
    window: Window | None,
    campaign_rates: tuple[Rate, ...],
    services: list[ServiceCapacity],
    plan_zone: ZoneInfo,
    later_steps: Sequence[tuple[timedelta, int]] = (),
) -> PlanResult:
    """Messages per plan-zone day under rates, warm-up and windows, and the estimated finish.

    A day's capacity is each service's rate cap over that day's open time, held to its
    warm-up cap of the day, summed, then held to the campaign's rates. Zones open that day
    share it in proportion to what they could use. A later step's messages become ready
    ``after`` the day their previous step went. O(days × zones × steps).

    ``finish`` is when the last schedulable message starts; ``unschedulable`` counts the rest
    (a window that never opens, no service, or beyond the horizon), each with a note.
    """
    if start.tzinfo is None:
        start = start.replace(tzinfo=plan_zone)
    notes: list[str] = []
    step_counts = [sum(max(n, 0) for n in messages_by_zone.values())]
    step_counts += [max(c, 0) for _, c in later_steps]
    start_ts = start.timestamp()
    groups = _groups(messages_by_zone, window, plan_zone, step_counts, start_ts, notes)
    if not groups:
        return PlanResult([], None, 0, notes)
    if not services:
        total = sum(step_counts)
        notes.append(f"{total} messages cannot be scheduled: the campaign names no service")
        return PlanResult([], None, total, notes)
    unschedulable = 0
    if window is not None:
        closed = [g for g in groups if next_window_open(window, start, g.zone) is None]
        if closed:
            unschedulable = sum(sum(g.totals) for g in closed)
            why = "its days list is empty" if not window.days else "except_dates cover it"
            zones = ", ".join(g.zone.key for g in closed)
            notes.append(
                f"{unschedulable} messages cannot be scheduled: the window never opens "
                f"within {HORIZON_DAYS} days in {zones} ({why})"
            )
            groups = [g for g in groups if g not in closed]
    first_day = start.astimezone(plan_zone).date()
    afters = [0.0] + [a.total_seconds() for a, _ in later_steps]
    planner = _Planner(window, campaign_rates, services, first_day, afters, notes)
    days: list[PlanDay] = []
    finish: float | None = None
    for offset in range(HORIZON_DAYS):
        if not any(g.batches for g in groups):
            break
        day = first_day + timedelta(days=offset)
        lo = max(start_ts, _local_ts(day, _MIDNIGHT, plan_zone, latest=False))
        hi = _local_ts(day + _DAY, _MIDNIGHT, plan_zone, latest=False)
        messages, last = planner.plan_day(groups, day, lo, hi)
        if messages:
            days.append(PlanDay(day, messages))
            finish = last
    left = sum(sum(g.totals) - sum(g.sent) for g in groups)
    if left:
        unschedulable += left
        notes.append(
            f"{left} messages cannot be sent within {HORIZON_DAYS} days at these limits — "
            "raise the rates or split the audience"
        )
    return PlanResult(days, _utc(finish) if finish is not None else None, unschedulable, notes)
