"""What this process saw happen: delivery outcomes, SMTP reply classes, attempt latency, recent
send rates, the last errors per campaign, and feedback hits on the web endpoints.

The database holds the truth about every message; these are the *flows* it does not keep
(how long an SMTP transaction took, how fast a campaign is going right now). The dispatcher
and the web handlers record into the one ``DeliveryStats`` the runtime creates and hands
them (no module global); ``/metrics``, the campaign summaries and the status page read it at
request time. Plain Python, no I/O: Prometheus types are built from it by
``web/metrics.py``, so the dispatcher does not depend on the exporter.

Labels stay bounded: campaign and service ids come from the config, statuses and reply classes
from fixed sets, reply codes from 200–599; recipients appear only in the short error notes the
status page shows, never as a metric label.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Final, Protocol

__all__ = [
    "LATENCY_BUCKETS",
    "DeliveryStats",
    "ErrorNote",
    "Histogram",
    "RateMeter",
    "reply_class",
]

LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds in seconds; an SMTP transaction to a nearby relay takes 10–500 ms."""
RATE_WINDOW: Final = 300.0
"""The send rate is measured over the last five minutes: long enough to smooth bursts, short
enough that a pause, a closed window or a throttled relay shows within minutes."""
RATE_BUCKET: Final = 10.0
LAST_ERRORS: Final = 5


class _Outcome(Protocol):
    """The fields of ``queue.rows.Outcome`` read here (keeps this module import-free)."""

    @property
    def status(self) -> str: ...
    @property
    def service(self) -> str | None: ...
    @property
    def code(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def at(self) -> float: ...


def reply_class(code: int | None) -> tuple[str, str]:
    """(class, code) labels of an SMTP reply: ``("5xx", "550")``; ``("none", "none")`` when
    no reply was involved (a render error, an internal error)."""
    if code is None or not 200 <= code <= 599:
        return "none", "none"
    return f"{code // 100}xx", str(code)


@dataclass
class Histogram:
    """Cumulative-bucket histogram in Prometheus' sense (``le`` upper bounds, then +Inf)."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, observations ≤ le)], ending with ``+Inf`` = count."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == math.inf else repr(bound), running))
        return out


@dataclass
class RateMeter:
    """Events per second over the last ``window`` seconds, in fixed buckets (constant memory
    whatever the rate)."""

    window: float = RATE_WINDOW
    bucket: float = RATE_BUCKET
    buckets: dict[int, int] = field(default_factory=dict)
    first: float | None = None

    def add(self, at: float, n: int = 1) -> None:
        if self.first is None:
            self.first = at
        key = int(at // self.bucket)
        self.buckets[key] = self.buckets.get(key, 0) + n
        oldest = int((at - self.window) // self.bucket)
        for k in [k for k in self.buckets if k < oldest]:
            del self.buckets[k]

    def rate(self, now: float) -> float | None:
        """Per second over the window (or since the first event, if that is more recent);
        None before any event or when the last one is older than the window."""
        if self.first is None:
            return None
        since = now - self.window
        counted = [k for k in self.buckets if (k + 1) * self.bucket > since]
        n = sum(self.buckets[k] for k in counted)
        if n == 0:
            return None
        # The counted buckets cover from the oldest one's start (or the first event, if later:
        # a campaign that began a minute ago must not look five times slower than it is). A
        # one-second floor keeps a single event from looking like a burst.
        start = max(self.first, min(counted) * self.bucket)
        return n / max(now - start, 1.0)


@dataclass(frozen=True)
class ErrorNote:
    at: float
    service: str | None
    status: str
    recipient: str
    error: str


@dataclass
class DeliveryStats:
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(campaign, service, status) → outcomes recorded by this process."""
    replies: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(service, class, code) → SMTP replies that ended an attempt."""
    latency: dict[str, Histogram] = field(default_factory=dict)
    """service → seconds per attempt (render, in-flight mark, SMTP transaction)."""
    sends: dict[str, RateMeter] = field(default_factory=dict)
    """campaign → ``sent`` outcomes, for the observed send rate."""
    errors: dict[str, deque[ErrorNote]] = field(default_factory=dict)
    feedback: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(kind, source) → feedback events handled by this process (opened via pixel, …)."""

    def attempt(self, campaign: str, recipient: str, outcome: _Outcome, seconds: float) -> None:
        """One delivery attempt ended with ``outcome`` after ``seconds``."""
        service = outcome.service or "none"
        self.outcomes[(campaign, service, outcome.status)] += 1
        self.replies[(service, *reply_class(outcome.code))] += 1
        self.latency.setdefault(service, Histogram()).observe(max(seconds, 0.0))
        if outcome.status == "sent":
            self.sends.setdefault(campaign, RateMeter()).add(outcome.at)
        elif outcome.error:
            notes = self.errors.setdefault(campaign, deque(maxlen=LAST_ERRORS))
            notes.append(
                ErrorNote(outcome.at, outcome.service, outcome.status, recipient, outcome.error)
            )

    def feedback_event(self, kind: str, source: str) -> None:
        self.feedback[(kind, source)] += 1

    def send_rate(self, campaign: str, now: float) -> float | None:
        """Messages per second this campaign was sent at lately, or None if it sent none."""
        meter = self.sends.get(campaign)
        return meter.rate(now) if meter is not None else None

    def last_errors(self, campaign: str) -> list[ErrorNote]:
        """Newest first."""
        return list(reversed(self.errors.get(campaign, ())))
