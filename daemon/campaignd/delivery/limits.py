"""Every sending limit, enforced in memory: service rates, per-domain shaping, campaign rates,
the warm-up cap of the day, and the slow-down after a throttling reply.

A rate is a pace (SPEC §2): ``N/period`` admits one SMTP transaction every ``period/N``
seconds, ``{limit: N/period, burst: B}`` admits B back to back first — a generic cell rate
algorithm (GCRA) holding one "theoretical arrival time" per limit. In a list of rates the
shortest period is the pace and the longer ones are quotas: sliding windows that hold at every
instant (``[14/second, 50000/day]`` sends at 14/s until 50,000 went out in the last 24 h).

What each counts (issue 13): the pace counts transactions started (the permit is taken just
before ``MAIL FROM``); quotas and the warm-up cap count messages the relay accepted, plus the
transactions in flight, which may all be accepted — so a quota is never exceeded and a
rejected attempt does not burn it. The database keeps accepted messages (``sent_at``,
``service_days``), so the state rebuilt at start (``seed_*``) has the same definition and a
restart changes no figure.

A throttling reply (throttle.py) halves the pace of that service and of that recipient domain
(multiplicative decrease), holds it for ``HOLD`` seconds and then recovers it additively, a
tenth of the normal pace every ``STEP`` seconds.

With PostgreSQL several daemons share the limits (delivery/shared.py): the paces are taken
from the database (``pace_wants`` → ``decide``), and quotas and the warm-up cap count from views
of every daemon's acceptances (``share``) plus this daemon's own since and in flight.

Nothing here reads the clock: every call is given ``now`` (epoch seconds).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..config.model import Config, Service
from ..config.values import Rate
from ..plan.pace import WIRE_MARGIN, pace_interval, split_rates
from ..plan.warmup import warmup_cap, warmup_day

_KEEP_DAYS = 3  # daily counters kept: today, yesterday, and a spare for clock skew

# Adaptive slow-down. HOLD: how long a halved pace stays halved after the last throttle reply;
# then every STEP the pace grows by RECOVER_FRACTION of the pace before the first cut.
HOLD = 30.0
STEP = 10.0
RECOVER_FRACTION = 0.1
MIN_RATE = 1 / 60  # never slower than one message a minute: the relay must see us to relent
OBSERVE = 10.0  # seconds of starts an unpaced sender's current rate is measured over
# A quota or cap entirely held by transactions in flight cannot say when it frees up (that
# depends on their replies): look again this soon.
RECHECK = 0.5
LATE = 0.02  # at most this much of a late permit is forgiven (see Gcra.take)


# ---------------------------------------------------------------- state pieces


class Gcra:
    """One pace: the theoretical arrival time (TAT) of the next transaction."""

    __slots__ = ("interval", "tat")

    def __init__(self) -> None:
        self.tat = -math.inf
        self.interval = 0.0

    def _retune(self, interval: float, now: float) -> None:
        # A changed pace (reload, slow-down, recovery) keeps the debt in messages, not in
        # seconds: 3 messages ahead at the old pace are 3 messages ahead at the new one.
        if interval != self.interval:
            if self.interval > 0 and interval > 0 and self.tat > now:
                self.tat = now + (self.tat - now) * interval / self.interval
            self.interval = interval

    def earliest(self, interval: float, burst: int, now: float, ahead: int = 0) -> float:
        """When one more may go, ``ahead`` others being let through first."""
        self._retune(interval, now)
        if interval <= 0:
            return now
        tat = self.tat if ahead == 0 else max(self.tat, now) + ahead * interval
        return max(now, tat - (burst - 1) * interval)

    def take(self, interval: float, now: float) -> None:
        self._retune(interval, now)
        if interval <= 0:
            self.tat = now
        elif 0 <= now - self.tat <= lateness(interval):
            # A permit taken a moment after its time (a timer firing late) keeps the
            # schedule, so the pace does not drift below the limit; the pace's window
            # (``pace_window``) still never lets the limit be exceeded.
            self.tat += interval
        else:
            self.tat = max(self.tat, now) + interval


# ---------------------------------------------------------------- shared paces (PostgreSQL)


@dataclass(frozen=True, slots=True)
class PaceWant:
    """One pace a permit needs: its key, the interval in force (limits.pace_interval, or the
    slowed one) and its burst."""

    key: str
    interval: float
    burst: int = 1


def decide(
    wants: Sequence[PaceWant],
    stored: Mapping[str, tuple[float, float]],
    now: float,
    horizon: float = 0.0,
) -> tuple[float, dict[str, tuple[float, float]]]:
    """(earliest time every pace admits one more, the rows after taking that permit).

    ``stored`` maps a key to its (tat, interval); a missing key is a fresh pace. The rows
    returned are only meaningful when earliest ≤ now + ``horizon``: the permit is then booked
    for ``max(now, earliest)`` — a waiter books its slot ahead instead of asking again at it,
    so the time a database round trip takes is not added to every interval.
    """
    earliest = now
    gcras: list[tuple[PaceWant, Gcra]] = []
    for want in wants:
        g = Gcra()
        g.tat, g.interval = stored.get(want.key, (-math.inf, want.interval))
        earliest = max(earliest, g.earliest(want.interval, want.burst, now))
        gcras.append((want, g))
    # Strict GCRA: no lateness forgiven, since no window of starts is kept here to cap what
    # forgiving would let through (limits.pace_window).
    at = max(now, earliest)
    after = {w.key: (max(g.tat, at) + w.interval, w.interval) for w, g in gcras}
    return earliest, after


def lateness(interval: float) -> float:
    """How late a permit may be taken and still keep its pace's schedule."""
    return min(interval / 4, LATE)


def pace_window(pace: Rate) -> Rate:
    """What a pace allows in any window of its period: its count plus the burst beyond the
    first message — checked besides the GCRA, so forgiving lateness never exceeds it."""
    return Rate(pace.count + pace.burst - 1, pace.per_seconds)


@dataclass(frozen=True, slots=True)
class SharedUse:
    """Accepted messages of one sender as the database saw them at ``as_of`` — every daemon's.

    ``windows`` maps a quota's period (seconds) to (how many were accepted in the period up to
    ``as_of``, the oldest of them ascending — enough to say when the window frees up);
    ``today``: accepted on ``day`` (a service's warm-up cap), None if not read.
    """

    as_of: float
    windows: Mapping[float, tuple[int, Sequence[float]]] = field(default_factory=dict)
    today: int | None = None
    day: date | None = None


class Starts:
    """Times of one sender (service, service+domain or campaign), oldest first — transaction
    starts (for reporting the pace's use) or accepted messages (for quotas).

    Holds no more than its largest rate needs: the newest ``max(count)`` times, none older
    than its longest period — so a 50000/day rate keeps at most 50000 floats.
    """

    __slots__ = ("_dq", "_horizon")

    def __init__(self, rates: Sequence[Rate], starts: Sequence[float] = ()) -> None:
        self._dq: deque[float] = deque(maxlen=0)
        self._horizon = 0
        self.retune(rates)
        for t in sorted(starts):
            self.add(t)

    def retune(self, rates: Sequence[Rate]) -> None:
        self._horizon = max((r.per_seconds for r in rates), default=0)
        self._dq = deque(self._dq, maxlen=max((r.count for r in rates), default=0))

    def __len__(self) -> int:
        return len(self._dq)

    def _trim(self, now: float) -> None:
        dq = self._dq
        # ``s + per <= now`` is the same float expression ``earliest`` returns, so a start
        # allowed at that instant is never judged still inside the window.
        while dq and dq[0] + self._horizon <= now:
            dq.popleft()

    def add(self, t: float) -> None:
        dq = self._dq
        if not dq or t >= dq[-1]:
            dq.append(t)
            return
        # The wall clock stepped back: keep the order that ``earliest`` relies on.
        if dq.maxlen == 0 or (len(dq) == dq.maxlen and t <= dq[0]):
            return
        if len(dq) == dq.maxlen:
            dq.popleft()
        bisect.insort(dq, t)

    def earliest(
        self, rates: Sequence[Rate], now: float, held: int = 0, margin: float = 0.0
    ) -> float:
        """The first instant ≥ now at which one more keeps every window (widened by
        ``margin``), ``held`` more being already promised (in flight); ``now + RECHECK`` if
        those alone fill a window."""
        self._trim(now)
        dq = self._dq
        at = now
        for r in rates:
            room = r.count - held
            if room <= 0:
                at = max(at, now + RECHECK)
            elif len(dq) >= room:
                at = max(at, dq[-room] + r.per_seconds + margin)
        return at

    def used(self, rate: Rate, now: float) -> int:
        self._trim(now)
        n = 0
        for t in reversed(self._dq):
            if t + rate.per_seconds <= now:
                break
            n += 1
        return n


@dataclass
class Adaptive:
    """A pace lowered by throttling replies: halved at each cut, recovering step by step."""

    ceiling: float  # messages/second before the first cut of this episode
    low: float  # messages/second right after the latest cut
    cut_at: float
    reason: str

    def rate(self, now: float) -> float | None:
        """The allowed rate now, or None once it is back to the ceiling (episode over)."""
        if now < self.cut_at + HOLD:
            return self.low
        steps = math.floor((now - self.cut_at - HOLD) / STEP) + 1
        r = self.low + steps * RECOVER_FRACTION * self.ceiling
        return None if r >= self.ceiling else r

    def recovered_at(self) -> float:
        steps = math.ceil((self.ceiling - self.low) / (RECOVER_FRACTION * self.ceiling) - 1e-9)
        return self.cut_at + HOLD + max(steps - 1, 0) * STEP


@dataclass
class _Limit:
    """The state of one sender key: its pace, its quotas, the slow-down."""

    pace: Gcra = field(default_factory=Gcra)
    starts: Starts = field(default_factory=lambda: Starts(()))  # for the pace's "used"
    accepted: Starts = field(default_factory=lambda: Starts(()))  # for the quotas
    held: int = 0  # permits taken whose reply is not in yet
    adaptive: Adaptive | None = None
    recent: deque[float] = field(default_factory=deque)  # starts of the last OBSERVE s
    shared: SharedUse | None = None  # PostgreSQL: every daemon's acceptances, read lately
    # Our acceptances a shared view may lack: (accepted at, when its outcome committed —
    # None until then). One committed before a view was read is in it.
    own: list[list[float | None]] = field(default_factory=list)

    def retune(self, rates: Sequence[Rate]) -> None:
        pace, quotas = split_rates(rates)
        self.starts.retune([pace_window(pace)] if pace else [])
        self.accepted.retune(quotas)

    def effective(self, pace: Rate | None, now: float) -> tuple[float, int]:
        """(interval, burst) in force now: the configured pace, or slower while throttled."""
        interval = pace_interval(pace) if pace else 0.0
        burst = pace.burst if pace else 1
        if self.adaptive is not None:
            r = self.adaptive.rate(now)
            if r is None:
                self.adaptive = None
            elif 1 / r > interval:
                return 1 / r, 1  # no burst while the relay asks us to slow down
        return interval, burst

    def earliest(self, rates: Sequence[Rate], now: float, ahead: int = 0) -> float:
        pace, quotas = split_rates(rates)
        interval, burst = self.effective(pace, now)
        window = [pace_window(pace)] if pace else []
        return max(
            self.pace.earliest(interval, burst, now, ahead),
            self.starts.earliest(window, now, ahead, WIRE_MARGIN),
            self._quotas_earliest(quotas, now, self.held + ahead),
        )

    def _quotas_earliest(self, quotas: Sequence[Rate], now: float, held: int) -> float:
        if self.shared is None:
            return self.accepted.earliest(quotas, now, held)
        at = now
        for r in quotas:
            used, oldest = self.shared_used(r, now)
            used += held
            if used < r.count:
                continue
            # The (used − count)-th oldest (0-based) must leave the window for one more.
            k = used - r.count
            at = max(at, oldest[k] + r.per_seconds if k < len(oldest) else now + RECHECK)
        return at

    def shared_used(self, quota: Rate, now: float) -> tuple[int, Sequence[float]]:
        """(accepted in the quota's window at ``now`` by every daemon, the oldest of the
        database's still inside it), from the shared view plus our own newer acceptances."""
        sh = self.shared
        assert sh is not None
        count, oldest = sh.windows.get(quota.per_seconds, (0, ()))
        gone = bisect.bisect_right(oldest, now - quota.per_seconds)
        mine = sum(1 for t, _ in self.own if t is not None and t + quota.per_seconds > now)
        return max(count - gone, 0) + mine, oldest[gone:]

    def share(self, use: SharedUse) -> None:
        self.shared = use
        self.own = [e for e in self.own if e[1] is None or e[1] >= use.as_of]

    def committed(self, accepted_at: float, now: float) -> None:
        # The newest first: the outcome being committed is almost always among the last.
        for entry in reversed(self.own):
            if entry[0] == accepted_at and entry[1] is None:
                entry[1] = now
                return

    def take(self, rates: Sequence[Rate], now: float) -> None:
        pace, _ = split_rates(rates)
        interval, _ = self.effective(pace, now)
        self.pace.take(interval, now)
        self.starts.add(now)
        self.held += 1
        self.recent.append(now)
        while self.recent and self.recent[0] <= now - OBSERVE:
            self.recent.popleft()

    def settle(self, now: float, accepted: bool) -> None:
        self.held = max(0, self.held - 1)
        if accepted:
            self.accepted.add(now)

    def observed(self, now: float) -> float:
        """Starts per second lately: over the last OBSERVE seconds, or since the first start
        if sending began more recently (else a fresh start would look ten times slower)."""
        while self.recent and self.recent[0] <= now - OBSERVE:
            self.recent.popleft()
        if not self.recent:
            return 0.0
        return len(self.recent) / min(max(now - self.recent[0], 1.0), OBSERVE)

    def cut(
        self,
        pace: Rate | None,
        now: float,
        started: float,
        reason: str,
        unpaced: float | None = None,
    ) -> None:
        """A throttle reply to a transaction that started at ``started``: halve the pace,
        once per round — replies to transactions started before the last cut say nothing new.
        ``unpaced``: the rate to halve if this sender has no pace (else: what it sent lately)."""
        ad = self.adaptive
        if ad is not None and ad.rate(now) is not None:
            if started < ad.cut_at:
                return
            current = min(ad.rate(now) or ad.ceiling, 1 / pace_interval(pace) if pace else math.inf)
            ceiling = ad.ceiling
        else:
            # A paced sender halves its pace; an unpaced one what it has been sending.
            if pace is not None:
                current = 1 / pace_interval(pace)
            elif unpaced is not None:
                current = unpaced
            else:
                current = max(self.observed(now), MIN_RATE * 2)
            ceiling = current
        self.adaptive = Adaptive(ceiling, max(current / 2, MIN_RATE), now, reason)

    def pace_json(self, pace: Rate | None, now: float) -> dict[str, Any]:
        interval, _ = self.effective(pace, now)
        ad = self.adaptive
        configured = round(1 / pace.interval, 6) if pace else None
        slowed = ad is not None and (pace is None or interval > pace_interval(pace))
        return {
            "configured_per_second": configured,
            "effective_per_second": round(1 / interval, 6) if slowed else configured,
            "reason": ad.reason if ad is not None else None,
            "slowed_since": _iso(ad.cut_at) if ad is not None else None,
            "recovers_at": _iso(ad.recovered_at()) if ad is not None else None,
        }


@dataclass
class _ServiceState:
    limit: _Limit = field(default_factory=_Limit)
    first_day: date | None = None
    daily: dict[date, int] = field(default_factory=dict)  # accepted messages per local day
    # (start, domain) of the last OBSERVE seconds: the rate a slow-down of an unshaped
    # domain halves.
    recent_domains: deque[tuple[float, str]] = field(default_factory=deque)

    def count(self, day: date, n: int = 1) -> None:
        self.daily[day] = self.daily.get(day, 0) + n
        for old in sorted(self.daily)[:-_KEEP_DAYS]:
            del self.daily[old]


def _rates_json(limit: _Limit | None, rates: Sequence[Rate], now: float) -> list[dict[str, Any]]:
    pace, _ = split_rates(rates)
    out = []
    for r in rates:
        if limit is None:
            used = 0
        elif r is pace:
            used = limit.starts.used(r, now)
        else:
            used = limit.accepted.used(r, now) + limit.held
        out.append({"rate": str(r), "used": used, "cap": r.count})
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


# ---------------------------------------------------------------- the limiter


class Limiter:
    """Answers "when may the next transaction start?" for a service, a domain and a campaign.

    The caller takes a permit with ``record`` right before the transaction and reports its
    reply with ``settle`` (and ``throttled`` for a throttling reply).
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._zone = ZoneInfo(config.settings.timezone)
        self._services: dict[str, _ServiceState] = {}
        self._domains: dict[tuple[str, str], _Limit] = {}
        self._campaigns: dict[str, _Limit] = {}
        self._needs: dict[tuple[str, str], dict[str, tuple[float, ...]]] = {}
        self.sharing = False
        """PostgreSQL: other daemons send too; paces are taken in the database (``pace_wants``)
        and quotas and the warm-up cap count from views of it (``share_service``)."""

    # ------------------------------------------------------------ configuration

    def _service_rates(self, service_id: str) -> tuple[Rate, ...]:
        svc = self._config.services.get(service_id)
        return svc.rate if svc else ()

    def _domain_rates(self, service_id: str, domain: str) -> tuple[Rate, ...]:
        svc = self._config.services.get(service_id)
        shaping = svc.domains.get(domain) if svc else None
        return shaping.rate if shaping else ()

    def _campaign_rates(self, campaign_id: str) -> tuple[Rate, ...]:
        campaign = self._config.campaigns.get(campaign_id)
        return campaign.rate if campaign else ()

    def update_config(self, config: Config) -> None:
        """New limits apply from the next call; paces keep their debt in messages, recorded
        starts, acceptances and daily counts stay."""
        self._config = config
        self._zone = ZoneInfo(config.settings.timezone)
        self._needs.clear()
        for sid, state in self._services.items():
            state.limit.retune(self._service_rates(sid))
        for (sid, domain), limit in self._domains.items():
            limit.retune(self._domain_rates(sid, domain))
        for cid, limit in self._campaigns.items():
            limit.retune(self._campaign_rates(cid))

    # ------------------------------------------------------------ state

    def _day(self, ts: float) -> date:
        return datetime.fromtimestamp(ts, self._zone).date()

    def _next_midnight(self, ts: float) -> float:
        tomorrow = self._day(ts) + timedelta(days=1)
        # fold=0 puts a midnight skipped by a DST jump at the instant after the jump.
        return datetime.combine(tomorrow, time(0), tzinfo=self._zone).timestamp()

    def _service(self, service_id: str) -> _ServiceState:
        state = self._services.get(service_id)
        if state is None:
            state = _ServiceState()
            state.limit.retune(self._service_rates(service_id))
            self._services[service_id] = state
        return state

    def _domain(self, service_id: str, domain: str, *, create: bool = False) -> _Limit | None:
        """A shaped domain's state; an unshaped one's only while it is slowed down (there are
        too many domains to keep history for each)."""
        key = (service_id, domain)
        limit = self._domains.get(key)
        if limit is None and (create or self._domain_rates(service_id, domain)):
            limit = _Limit()
            limit.retune(self._domain_rates(service_id, domain))
            self._domains[key] = limit
        return limit

    def _campaign(self, campaign_id: str) -> _Limit | None:
        if campaign_id not in self._config.campaigns:
            return None
        if campaign_id not in self._campaigns:
            limit = _Limit()
            limit.retune(self._campaign_rates(campaign_id))
            self._campaigns[campaign_id] = limit
        return self._campaigns[campaign_id]

    def _drop_recovered(self, service_id: str, domain: str, limit: _Limit, now: float) -> None:
        if (
            not self._domain_rates(service_id, domain)
            and limit.held == 0
            and limit.effective(None, now) == (0.0, 1)
        ):
            del self._domains[(service_id, domain)]

    def seed_service(
        self,
        service_id: str,
        starts: Sequence[float],
        first_day: date | None,
        *,
        attempts: Sequence[float] | None = None,
    ) -> None:
        """From the database: when the service's messages of the last 24 h were accepted
        (``sent_at``), the first day it ever sent, and optionally when its transactions of
        the last minutes started (else the acceptances stand in for them)."""
        state = _ServiceState()
        rates = self._service_rates(service_id)
        state.limit.retune(rates)
        _replay(state.limit, rates, starts, attempts)
        for t in starts:
            state.count(self._day(t))
        state.first_day = first_day or (self._day(min(starts)) if starts else None)
        self._services[service_id] = state

    def seed_domain(
        self,
        service_id: str,
        domain: str,
        starts: Sequence[float],
        *,
        attempts: Sequence[float] | None = None,
    ) -> None:
        """A shaped domain's acceptances of the last 24 h (see ``seed_service``)."""
        domain = domain.lower()
        rates = self._domain_rates(service_id, domain)
        if not rates:
            return
        limit = _Limit()
        limit.retune(rates)
        _replay(limit, rates, starts, attempts)
        self._domains[(service_id, domain)] = limit

    def seed_campaign(
        self, campaign_id: str, starts: Sequence[float], *, attempts: Sequence[float] | None = None
    ) -> None:
        limit = _Limit()
        rates = self._campaign_rates(campaign_id)
        limit.retune(rates)
        _replay(limit, rates, starts, attempts)
        self._campaigns[campaign_id] = limit

    # ------------------------------------------------------------ the limits

    def _warmup_state(self, svc: Service, state: _ServiceState, now: float) -> tuple[int, int]:
        """(warm-up day, cap of that day) for a service with a warm-up."""
        assert svc.warmup is not None
        today = self._day(now)
        first = svc.warmup.since or state.first_day or today
        day = warmup_day(first, today)
        return day, warmup_cap(svc.warmup, day)

    def check(
        self, service_id: str, domain: str, campaign_id: str, now: float, *, ahead: int = 0
    ) -> float:
        """The earliest time ≥ now at which one more transaction keeps every limit, with
        ``ahead`` others (already on their way to a permit) let through first.

        Each limit, once met, stays met until the next permit, so the latest of their
        earliest times is the earliest time for all of them.
        """
        domain = domain.lower()
        at = now
        svc = self._config.services.get(service_id)
        if svc is not None:
            state = self._service(service_id)
            at = max(at, state.limit.earliest(svc.rate, now, ahead))
            if svc.warmup is not None:
                _, cap = self._warmup_state(svc, state, now)
                done = self._sent_today(state, now)
                if done >= cap:
                    at = max(at, self._next_midnight(now))
                elif done + state.limit.held + ahead >= cap:
                    at = max(at, now + RECHECK)  # the replies in flight decide
        shaped = self._domain(service_id, domain)
        if shaped is not None:
            at = max(at, shaped.earliest(self._domain_rates(service_id, domain), now, ahead))
            self._drop_recovered(service_id, domain, shaped, now)
        campaign = self._campaign(campaign_id)
        if campaign is not None:
            at = max(at, campaign.earliest(self._campaign_rates(campaign_id), now, ahead))
        return at

    def _sent_today(self, state: _ServiceState, now: float) -> int:
        """Accepted today: ours (in process), or with a shared view every daemon's."""
        today = self._day(now)
        sh = state.limit.shared
        if sh is None or sh.today is None:
            return state.daily.get(today, 0)
        before = sh.today if sh.day == today else 0
        return before + sum(
            1 for t, _ in state.limit.own if t is not None and self._day(t) == today
        )

    def record(self, service_id: str, domain: str, campaign_id: str, now: float) -> None:
        """Take the permit: one transaction starts now (whatever ``check`` said). Answer it
        with ``settle`` once its reply is in, or the quotas stay held."""
        domain = domain.lower()
        state = self._service(service_id)
        state.limit.take(self._service_rates(service_id), now)
        shaped = self._domain(service_id, domain)
        if shaped is not None:
            shaped.take(self._domain_rates(service_id, domain), now)
        else:
            # Unshaped domains keep only a short history, for the rate a slow-down halves.
            self._recent_domain(service_id, domain, now)
        campaign = self._campaign(campaign_id)
        if campaign is not None:
            campaign.take(self._campaign_rates(campaign_id), now)

    def committed(self, service_id: str, campaign_id: str, accepted_at: float, now: float) -> None:
        """Sharing: the acceptance ``settle`` counted at ``accepted_at`` is in the database as of
        ``now``, so a shared view read after ``now`` holds it (and it stops counting on top)."""
        if not self.sharing:
            return
        self._service(service_id).limit.committed(accepted_at, now)
        campaign = self._campaigns.get(campaign_id)
        if campaign is not None:
            campaign.committed(accepted_at, now)

    def _recent_domain(self, service_id: str, domain: str, now: float) -> None:
        recent = self._service(service_id).recent_domains
        recent.append((now, domain))
        while recent and recent[0][0] <= now - OBSERVE:
            recent.popleft()

    def settle(
        self, service_id: str, domain: str, campaign_id: str, now: float, *, accepted: bool
    ) -> None:
        """The reply to a transaction ``record`` let start: ``accepted`` counts it against
        the quotas, the warm-up cap and ``sent_today`` as of ``now``."""
        domain = domain.lower()
        state = self._service(service_id)
        state.limit.settle(now, accepted)
        if accepted:
            today = self._day(now)
            state.count(today)
            if state.first_day is None:
                state.first_day = today
            # Only a sender whose shared view is read (quotas, warm-up) prunes ``own`` when
            # the view arrives; any other would keep every acceptance of the process.
            if self.sharing and f"service:{service_id}" in self._shared_senders(
                service_id, campaign_id
            ):
                state.limit.own.append([now, None])
        shaped = self._domains.get((service_id, domain))
        if shaped is not None:
            shaped.settle(now, accepted)
        campaign = self._campaigns.get(campaign_id)
        if campaign is not None:
            campaign.settle(now, accepted)
            if (
                accepted
                and self.sharing
                and f"campaign:{campaign_id}" in self._shared_senders(service_id, campaign_id)
            ):
                campaign.own.append([now, None])

    def throttled(
        self, service_id: str, domain: str, now: float, *, started: float, reason: str
    ) -> None:
        """A throttling reply (throttle.py) to a transaction that started at ``started``:
        halve the pace of the service and of that recipient domain."""
        domain = domain.lower()
        svc = self._config.services.get(service_id)
        service_pace, _ = split_rates(svc.rate if svc else ())
        service = self._service(service_id).limit
        interval, _ = service.effective(service_pace, now)
        service.cut(service_pace, now, started, reason)
        shaped = self._domain(service_id, domain)
        domain_pace, _ = split_rates(self._domain_rates(service_id, domain))
        if shaped is None:
            # An unshaped domain: what it got of the service's recent starts is its rate.
            recent = self._service(service_id).recent_domains
            shaped = self._domain(service_id, domain, create=True)
            assert shaped is not None
            shaped.recent.extend(t for t, d in recent if d == domain and t > now - OBSERVE)
        # A domain without a pace of its own went at most at the service's pace; a short
        # history would make it look slower than it was.
        shaped.cut(domain_pace, now, started, reason, 1 / interval if interval > 0 else None)

    def slow_down(self, service_id: str, domain: str, now: float, until: float) -> None:
        """Compatibility with the 421 handling before issue 13: a throttle reply now."""
        del until  # the pace now recovers step by step instead of at a fixed time
        self.throttled(service_id, domain, now, started=now, reason="throttled (421)")

    # ------------------------------------------------------------ shared (PostgreSQL)

    def pace_wants(
        self, service_id: str, domain: str, campaign_id: str, now: float
    ) -> list[PaceWant]:
        """The paces one transaction needs a shared permit of (``queue.paces``): the service's,
        the domain's (shaped, or slowed down by a throttle reply) and the campaign's, each with
        the interval in force now — slowed ones included."""
        domain = domain.lower()
        found: list[tuple[str, _Limit | None, Rate | None]] = []
        svc = self._config.services.get(service_id)
        if svc is not None:
            pace, _ = split_rates(svc.rate)
            found.append((f"service:{service_id}", self._service(service_id).limit, pace))
        dpace, _ = split_rates(self._domain_rates(service_id, domain))
        found.append((f"domain:{service_id}/{domain}", self._domain(service_id, domain), dpace))
        cpace, _ = split_rates(self._campaign_rates(campaign_id))
        found.append((f"campaign:{campaign_id}", self._campaign(campaign_id), cpace))
        wants = []
        for key, limit, pace in found:
            if limit is None:
                continue
            interval, burst = limit.effective(pace, now)
            if interval > 0:
                wants.append(PaceWant(key, interval, burst))
        return wants

    def _shared_senders(self, service_id: str, campaign_id: str) -> dict[str, tuple[float, ...]]:
        # Cached until the next ``update_config``: settle asks for every message.
        key = (service_id, campaign_id)
        found = self._needs.get(key)
        if found is None:
            found = self._needs[key] = self.shared_needs(service_id, campaign_id)
        return found

    def shared_needs(self, service_id: str, campaign_id: str) -> dict[str, tuple[float, ...]]:
        """Which counts a shared view must hold, by sender: ``service:<id>`` / ``campaign:<id>``
        → the quotas' periods; a service with a warm-up also needs today's count (the view's
        ``today``). Senders without quotas or warm-up are absent."""
        needs: dict[str, tuple[float, ...]] = {}
        svc = self._config.services.get(service_id)
        if svc is not None:
            _, quotas = split_rates(svc.rate)
            if quotas or svc.warmup is not None:
                needs[f"service:{service_id}"] = tuple(sorted({q.per_seconds for q in quotas}))
        _, cquotas = split_rates(self._campaign_rates(campaign_id))
        if cquotas and campaign_id in self._config.campaigns:
            needs[f"campaign:{campaign_id}"] = tuple(sorted({q.per_seconds for q in cquotas}))
        return needs

    def today(self, now: float) -> date:
        """The local calendar day (the config's timezone) daily counts belong to."""
        return self._day(now)

    def first_day(self, service_id: str) -> date | None:
        return self._service(service_id).first_day

    def wants_today(self, service_id: str) -> bool:
        svc = self._config.services.get(service_id)
        return svc is not None and svc.warmup is not None

    def share(self, sender: str, use: SharedUse, *, first_day: date | None = None) -> None:
        """A view of every daemon's acceptances (``shared_needs``' sender key); quotas and the
        warm-up cap count from it plus our own acceptances since, and our in-flight."""
        kind, _, ident = sender.partition(":")
        if kind == "service":
            state = self._service(ident)
            state.limit.share(use)
            if state.first_day is None and first_day is not None:
                state.first_day = first_day  # another daemon sent first: its day 1 is ours
        elif kind == "campaign":
            limit = self._campaign(ident)
            if limit is not None:
                limit.share(use)

    def shared_room(self, sender: str, now: float) -> int | None:
        """How many more a sender's quotas and warm-up cap admit, by the latest shared view
        (None: no view yet) — near zero the caller reads a fresh view before every permit."""
        kind, _, ident = sender.partition(":")
        if kind == "service":
            svc = self._config.services.get(ident)
            state = self._service(ident)
            limit: _Limit | None = state.limit
            rates: Sequence[Rate] = svc.rate if svc else ()
        else:
            svc, state = None, None
            limit = self._campaign(ident)
            rates = self._campaign_rates(ident)
        if limit is None or limit.shared is None:
            return None
        room = 2**62
        for q in split_rates(rates)[1]:
            room = min(room, q.count - limit.shared_used(q, now)[0] - limit.held)
        if svc is not None and svc.warmup is not None and state is not None:
            _, cap = self._warmup_state(svc, state, now)
            room = min(room, cap - self._sent_today(state, now) - limit.held)
        return room

    # ------------------------------------------------------------ reporting

    def pace(self, service_id: str, domain: str | None, now: float) -> dict[str, Any]:
        """The configured and effective pace (messages per second; None: unpaced) of a
        service or of one of its recipient domains, and why it is lower."""
        if domain is None:
            svc = self._config.services.get(service_id)
            pace, _ = split_rates(svc.rate if svc else ())
            return self._service(service_id).limit.pace_json(pace, now)
        domain = domain.lower()
        pace, _ = split_rates(self._domain_rates(service_id, domain))
        limit = self._domains.get((service_id, domain)) or _Limit()
        return limit.pace_json(pace, now)

    def snapshot(self, now: float) -> dict[str, Any]:
        """The limits and how much of each is used, for /api/status (JSON-ready).

        ``used`` of the pace counts transactions started in its period; of a quota, messages
        accepted in its window plus those in flight. ``pace`` shows the effective pace and
        why it is lower; ``slowed`` maps each slowed-down domain to when it is back to normal.
        """
        services: dict[str, Any] = {}
        for sid, svc in self._config.services.items():
            state = self._service(sid)
            sent_today = self._sent_today(state, now)
            warmup = None
            if svc.warmup is not None:
                day, cap = self._warmup_state(svc, state, now)
                warmup = {"day": day, "cap": cap, "sent_today": sent_today}
            slowed_domains = {}
            for (s, d), limit in sorted(self._domains.items()):
                if s != sid:
                    continue
                dpace, _ = split_rates(self._domain_rates(s, d))
                limit.effective(dpace, now)  # drops a finished episode
                if limit.adaptive is not None:
                    slowed_domains[d] = limit
            services[sid] = {
                "rates": _rates_json(state.limit, svc.rate, now),
                "warmup": warmup,
                "sent_today": sent_today,
                "in_flight": state.limit.held,
                "pace": self.pace(sid, None, now),
                "slowed": {
                    d: _iso(limit.adaptive.recovered_at())
                    for d, limit in slowed_domains.items()
                    if limit.adaptive is not None
                },
                "slowed_domains": {d: self.pace(sid, d, now) for d in slowed_domains},
                "domains": {
                    d: _rates_json(self._domains.get((sid, d)), shaping.rate, now)
                    for d, shaping in sorted(svc.domains.items())
                },
            }
        campaigns = {
            cid: {"rates": _rates_json(self._campaigns.get(cid), c.rate, now)}
            for cid, c in self._config.campaigns.items()
        }
        return {"services": services, "campaigns": campaigns}


def _replay(
    limit: _Limit,
    rates: Sequence[Rate],
    accepted: Sequence[float],
    attempts: Sequence[float] | None,
) -> None:
    """Rebuild a limit from the database: acceptances fill the quotas; transaction starts (or,
    without them, the acceptances) run through the pace so its debt is where it was."""
    pace, _ = split_rates(rates)
    for t in sorted(accepted):
        limit.accepted.add(t)
    interval = pace_interval(pace) if pace else 0.0
    for t in sorted(attempts if attempts is not None else accepted):
        limit.pace.take(interval, t)
        limit.starts.add(t)
