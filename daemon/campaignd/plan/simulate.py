"""The day-by-day planner: how many messages go out each day under windows, rates and warm-up
(``campaignctl plan`` and the status page's ETA use it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ..config.model import Warmup, Window
from ..config.values import Rate
from .pace import starts_by
from .warmup import warmup_cap, warmup_day, warmup_full_day
from .windows import local_ts, next_window_open, utc_of, window_period, window_zone

HORIZON_DAYS = 400
MISSED_COUNT_LIMIT = 1000
UNLIMITED = 10**15  # stands for "no limit" in integer capacity arithmetic

_MIDNIGHT = time(0, 0)
_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)


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
    """Most starts the rates allow in ``seconds`` of open time (the limiter's own arithmetic:
    the pace's burst, then one per interval; quotas per window)."""
    if seconds <= 0:
        return 0
    return min(starts_by(rates, max(0.0, seconds - 1e-9)), UNLIMITED) if rates else UNLIMITED


def _started_by(rates: Sequence[Rate], t: int) -> int:
    """Starts the rates allow from a fresh start up to ``t`` seconds later, inclusive."""
    return min(starts_by(rates, t), UNLIMITED) if rates else UNLIMITED


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
                self.periods[day] = window_period(window, self.zone, day)
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
            full = warmup_full_day(s.warmup)
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
        lo = max(start_ts, local_ts(day, _MIDNIGHT, plan_zone, latest=False))
        hi = local_ts(day + _DAY, _MIDNIGHT, plan_zone, latest=False)
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
    return PlanResult(days, utc_of(finish) if finish is not None else None, unschedulable, notes)
