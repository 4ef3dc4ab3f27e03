"""Every sending limit, enforced in memory: service rates, per-domain shaping, campaign rates,
the warm-up cap of the day, and throttling after a 421.

Rates are exact sliding windows: ``N/period`` never lets N+1 message starts fall within any
interval of that length, and a start exactly one period after an earlier one is allowed. The
state is rebuilt from the database at start (``seed_*``), so a restart resets no quota.
Nothing here reads the clock: every call is given ``now`` (epoch seconds).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..config.model import Config, Service
from ..config.values import Rate
from ..plan.warmup import warmup_cap, warmup_day

_KEEP_DAYS = 3  # daily counters kept: today, yesterday, and a spare for clock skew


class Starts:
    """Start times of one sender (service, service+domain or campaign), oldest first.

    Holds no more than its largest rate needs: the newest ``max(count)`` starts, none older
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

    def earliest(self, rates: Sequence[Rate], now: float) -> float:
        """The first instant ≥ now at which one more start keeps every rate."""
        self._trim(now)
        dq = self._dq
        at = now
        for r in rates:
            if len(dq) >= r.count:
                at = max(at, dq[-r.count] + r.per_seconds)
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
class _ServiceState:
    starts: Starts
    first_day: date | None = None
    daily: dict[date, int] = field(default_factory=dict)

    def count(self, day: date, n: int = 1) -> None:
        self.daily[day] = self.daily.get(day, 0) + n
        for old in sorted(self.daily)[:-_KEEP_DAYS]:
            del self.daily[old]


def _rates_json(starts: Starts | None, rates: Sequence[Rate], now: float) -> list[dict[str, Any]]:
    return [
        {"rate": str(r), "used": starts.used(r, now) if starts else 0, "cap": r.count}
        for r in rates
    ]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class Limiter:
    """Answers "when may the next message start?" for a service, a domain and a campaign."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._zone = ZoneInfo(config.settings.timezone)
        self._services: dict[str, _ServiceState] = {}
        self._domains: dict[tuple[str, str], Starts] = {}
        self._campaigns: dict[str, Starts] = {}
        self._slowed: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------ configuration

    def _service_rates(self, service_id: str) -> tuple[Rate, ...]:
        svc = self._config.services.get(service_id)
        return svc.rate if svc else ()

    def _domain_rates(self, service_id: str, domain: str) -> tuple[Rate, ...] | None:
        svc = self._config.services.get(service_id)
        shaping = svc.domains.get(domain) if svc else None
        return shaping.rate if shaping else None

    def _campaign_rates(self, campaign_id: str) -> tuple[Rate, ...]:
        campaign = self._config.campaigns.get(campaign_id)
        return campaign.rate if campaign else ()

    def update_config(self, config: Config) -> None:
        """New limits apply from the next call; recorded starts and daily counts stay."""
        self._config = config
        self._zone = ZoneInfo(config.settings.timezone)
        for sid, state in self._services.items():
            state.starts.retune(self._service_rates(sid))
        for (sid, domain), starts in list(self._domains.items()):
            rates = self._domain_rates(sid, domain)
            if rates is None:
                del self._domains[(sid, domain)]
            else:
                starts.retune(rates)
        for cid, starts in self._campaigns.items():
            starts.retune(self._campaign_rates(cid))

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
            state = _ServiceState(Starts(self._service_rates(service_id)))
            self._services[service_id] = state
        return state

    def _domain(self, service_id: str, domain: str) -> Starts | None:
        rates = self._domain_rates(service_id, domain)
        if rates is None:
            return None  # unshaped domains keep no history: there are too many of them
        key = (service_id, domain)
        if key not in self._domains:
            self._domains[key] = Starts(rates)
        return self._domains[key]

    def _campaign(self, campaign_id: str) -> Starts | None:
        if campaign_id not in self._config.campaigns:
            return None
        if campaign_id not in self._campaigns:
            self._campaigns[campaign_id] = Starts(self._campaign_rates(campaign_id))
        return self._campaigns[campaign_id]

    def seed_service(
        self, service_id: str, starts: Sequence[float], first_day: date | None
    ) -> None:
        """Starts of the last 24 h and the first day the service ever sent, from the database."""
        state = _ServiceState(Starts(self._service_rates(service_id), starts))
        for t in starts:
            state.count(self._day(t))
        state.first_day = first_day or (self._day(min(starts)) if starts else None)
        self._services[service_id] = state

    def seed_campaign(self, campaign_id: str, starts: Sequence[float]) -> None:
        self._campaigns[campaign_id] = Starts(self._campaign_rates(campaign_id), starts)

    # ------------------------------------------------------------ the limits

    def _warmup_state(self, svc: Service, state: _ServiceState, now: float) -> tuple[int, int]:
        """(warm-up day, cap of that day) for a service with a warm-up."""
        assert svc.warmup is not None
        today = self._day(now)
        first = svc.warmup.since or state.first_day or today
        day = warmup_day(first, today)
        return day, warmup_cap(svc.warmup, day)

    def check(self, service_id: str, domain: str, campaign_id: str, now: float) -> float:
        """The earliest time ≥ now at which one more start keeps every limit that applies.

        Each limit, once met, stays met until the next start, so the latest of their
        earliest times is the earliest time for all of them.
        """
        domain = domain.lower()
        at = now
        svc = self._config.services.get(service_id)
        if svc is not None:
            state = self._service(service_id)
            at = max(at, state.starts.earliest(svc.rate, now))
            if svc.warmup is not None:
                _, cap = self._warmup_state(svc, state, now)
                if state.daily.get(self._day(now), 0) >= cap:
                    at = max(at, self._next_midnight(now))
            shaped = self._domain(service_id, domain)
            if shaped is not None:
                at = max(at, shaped.earliest(svc.domains[domain].rate, now))
        slowed = self._slowed.get((service_id, domain))
        if slowed is not None:
            if slowed <= now:
                del self._slowed[(service_id, domain)]
            else:
                at = max(at, slowed)
        campaign = self._campaign(campaign_id)
        if campaign is not None:
            at = max(at, campaign.earliest(self._campaign_rates(campaign_id), now))
        return at

    def record(self, service_id: str, domain: str, campaign_id: str, now: float) -> None:
        """One message started now (call it whatever ``check`` said: the start happened)."""
        domain = domain.lower()
        state = self._service(service_id)
        state.starts.add(now)
        today = self._day(now)
        state.count(today)
        if state.first_day is None:
            state.first_day = today
        shaped = self._domain(service_id, domain)
        if shaped is not None:
            shaped.add(now)
        campaign = self._campaign(campaign_id)
        if campaign is not None:
            campaign.add(now)

    def slow_down(self, service_id: str, domain: str, now: float, until: float) -> None:
        """After a 421: no start to that service and domain before ``until``; nothing else."""
        key = (service_id, domain.lower())
        if until > now:
            self._slowed[key] = max(until, self._slowed.get(key, until))

    # ------------------------------------------------------------ reporting

    def snapshot(self, now: float) -> dict[str, Any]:
        """The limits and how much of each is used, for /api/status (JSON-ready)."""
        services: dict[str, Any] = {}
        for sid, svc in self._config.services.items():
            state = self._services.get(sid)
            sent_today = state.daily.get(self._day(now), 0) if state else 0
            warmup = None
            if svc.warmup is not None:
                day, cap = self._warmup_state(svc, state or self._service(sid), now)
                warmup = {"day": day, "cap": cap, "sent_today": sent_today}
            services[sid] = {
                "rates": _rates_json(state.starts if state else None, svc.rate, now),
                "warmup": warmup,
                "sent_today": sent_today,
                "slowed": _slowed_for(self._slowed, sid, now),
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


def _slowed_for(slowed: Mapping[tuple[str, str], float], sid: str, now: float) -> dict[str, str]:
    return {d: _iso(until) for (s, d), until in sorted(slowed.items()) if s == sid and until > now}
