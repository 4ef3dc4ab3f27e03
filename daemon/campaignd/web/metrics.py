"""``GET /metrics``: Prometheus text format, token-protected like ``/api``.

A per-app ``CollectorRegistry`` holds one custom collector. Each scrape first gathers a
``Snapshot`` of the daemon (config generation, campaign counts and queue depth from the
database, limiter use, breakers) — the only part that awaits — and then renders the registry
synchronously from that snapshot and from the daemon's in-process ``stats.DeliveryStats``
(outcome counters, reply classes, the send latency histogram). Nothing is kept between scrapes
but those counters, so what is exported is never stale.

Labels are campaign and service ids, statuses, limit names and SMTP reply codes: all bounded
by the config or by fixed sets. No recipient or message ever becomes a label.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from .. import __version__
from ..queue.rows import EVENT_COUNTERS
from ..queue.tables import CAMPAIGN_STATES, MESSAGE_STATUSES
from ..stats import DeliveryStats
from .common import DAEMON

if TYPE_CHECKING:
    from .ports import DaemonView

__all__ = ["CampaignSample", "DaemonCollector", "ServiceSample", "Snapshot", "add_routes", "gather"]

BREAKER_STATES: Final = ("closed", "open", "half-open")
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics-registry")
COLLECTOR: web.AppKey[DaemonCollector] = web.AppKey("metrics-collector")


@dataclass(frozen=True)
class LimitSample:
    scope: str
    """``service``, ``domain`` or ``campaign``."""
    target: str
    """The service id, ``service/domain``, or the campaign id."""
    rate: str
    """The limit as configured, e.g. ``14/second``."""
    used: int
    cap: int


@dataclass(frozen=True)
class CampaignSample:
    id: str
    state: str
    statuses: Mapping[str, int]
    events: Mapping[str, int]
    next_due: float | None
    send_rate: float | None


@dataclass(frozen=True)
class ServiceSample:
    id: str
    in_flight: int
    max_connections: int
    sent_today: int
    warmup_day: int | None
    warmup_cap: int | None
    breaker_state: str
    breaker_failures: int
    pace_configured: float | None = None
    """Messages per second the service's rate allows (None: unpaced)."""
    pace_effective: float | None = None
    """What it runs at now: lower after throttling replies, recovering step by step."""


@dataclass(frozen=True)
class Snapshot:
    version: str = __version__
    run_state: str = "running"
    started_at: float = 0.0
    generation: int = 0
    loaded_at: float = 0.0
    problems: Mapping[str, int] = field(default_factory=dict)
    """severity → count of load problems in force."""
    campaigns: tuple[CampaignSample, ...] = ()
    services: tuple[ServiceSample, ...] = ()
    limits: tuple[LimitSample, ...] = ()
    healthy: bool = True
    loops: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Supervised loop → its snapshot (runtime/supervisor.py)."""


def _limits(snapshot: Mapping[str, Any]) -> Iterator[LimitSample]:
    for sid, svc in sorted(snapshot.get("services", {}).items()):
        for r in svc.get("rates", []):
            yield LimitSample("service", sid, r["rate"], r["used"], r["cap"])
        for domain, rates in sorted(svc.get("domains", {}).items()):
            for r in rates:
                yield LimitSample("domain", f"{sid}/{domain}", r["rate"], r["used"], r["cap"])
        warmup = svc.get("warmup")
        if warmup:
            yield LimitSample("service", sid, "warmup/day", warmup["sent_today"], warmup["cap"])
    for cid, c in sorted(snapshot.get("campaigns", {}).items()):
        for r in c.get("rates", []):
            yield LimitSample("campaign", cid, r["rate"], r["used"], r["cap"])


async def gather(view: DaemonView, now: float | None = None) -> Snapshot:
    """Everything the collector exports that is not an in-process counter."""
    now = time.time() if now is None else now
    store, config = view.store, view.config
    assert store is not None and config is not None
    limits = view.limits_snapshot(now)
    services = []
    for sid, svc in sorted(config.services.items()):
        use = limits.get("services", {}).get(sid) or {}
        warmup = use.get("warmup") or {}
        breaker = view.breaker_snapshot(sid, now) or {}
        services.append(
            ServiceSample(
                id=sid,
                in_flight=view.in_flight(sid),
                max_connections=svc.max_connections,
                sent_today=int(use.get("sent_today", 0)),
                warmup_day=warmup.get("day"),
                warmup_cap=warmup.get("cap"),
                breaker_state=str(breaker.get("state", "closed")),
                breaker_failures=int(str(breaker.get("failures", 0))),
                pace_configured=(use.get("pace") or {}).get("configured_per_second"),
                pace_effective=(use.get("pace") or {}).get("effective_per_second"),
            )
        )
    campaigns = []
    for row in await store.list_campaigns():
        counts = await store.counts(row.id)
        pending = counts.counts.get("queued", 0) + counts.counts.get("deferred", 0)
        campaigns.append(
            CampaignSample(
                id=row.id,
                state=row.state,
                statuses={s: counts.counts.get(s, 0) for s in MESSAGE_STATUSES},
                events={k: counts.counts.get(k, 0) for k in EVENT_COUNTERS},
                next_due=await store.next_due([row.id]) if pending else None,
                send_rate=view.stats.send_rate(row.id, now),
            )
        )
    problems: Counter[str] = Counter(p.severity for p in view.problems)
    return Snapshot(
        run_state=view.run_state,
        started_at=view.started_at,
        generation=config.generation,
        loaded_at=view.loaded_at,
        problems=dict(problems),
        campaigns=tuple(campaigns),
        services=tuple(services),
        limits=tuple(_limits(limits)),
        healthy=view.health()[0],
        loops=view.loops_snapshot(),
    )


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"campaignd_{name}", doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(f"campaignd_{name}", doc, labels=list(labels))


def families(snap: Snapshot, stats: DeliveryStats) -> Iterator[Any]:
    """Every metric family, from a snapshot and the in-process counters. Pure."""
    info = InfoMetricFamily("campaignd_build", "campaignd version", labels=["version"])
    info.add_metric([snap.version], {})
    yield info
    up = _gauge("running", "1 while the daemon runs (0 while draining at shutdown)")
    up.add_metric([], 1.0 if snap.run_state == "running" else 0.0)
    yield up
    healthy = _gauge("healthy", "1 while the engine can make progress (what /healthz answers)")
    healthy.add_metric([], 1.0 if snap.healthy else 0.0)
    yield healthy
    progress = _gauge(
        "loop_last_progress_timestamp_seconds",
        "when each supervised loop last completed a pass (epoch seconds)",
        ["loop"],
    )
    restarts = _counter(
        "loop_restarts", "times each supervised loop failed and restarted", ["loop"]
    )
    for name, loop in sorted(snap.loops.items()):
        progress.add_metric([name], float(loop.get("last_progress") or 0.0))
        restarts.add_metric([name], float(loop.get("restarts") or 0))
    yield progress
    yield restarts
    start = _gauge("start_time_seconds", "when this daemon process started (epoch seconds)")
    start.add_metric([], snap.started_at)
    yield start

    gen = _gauge("config_generation", "config generation in force (+1 on every reload)")
    gen.add_metric([], snap.generation)
    yield gen
    loaded = _gauge("config_loaded_timestamp_seconds", "when the config was last (re)loaded")
    loaded.add_metric([], snap.loaded_at)
    yield loaded
    problems = _gauge(
        "config_problems", "load errors and warnings in force (see /api/status)", ["severity"]
    )
    for severity in ("error", "warning"):
        problems.add_metric([severity], snap.problems.get(severity, 0))
    yield problems

    state = _gauge("campaign_state", "1 for the campaign's current state", ["campaign", "state"])
    messages = _gauge("campaign_messages", "messages per status (database)", ["campaign", "status"])
    events = _gauge(
        "campaign_events",
        "messages with feedback events: opened, clicked, replied, unsubscribed, complained",
        ["campaign", "kind"],
    )
    depth = _gauge("queue_depth", "messages waiting to be sent (queued + deferred)", ["campaign"])
    due = _gauge(
        "queue_next_due_timestamp_seconds",
        "when the campaign's next waiting message is due (absent when none waits)",
        ["campaign"],
    )
    rate = _gauge(
        "campaign_send_rate", "messages per second sent lately (last 5 minutes)", ["campaign"]
    )
    for c in snap.campaigns:
        for s in CAMPAIGN_STATES:
            state.add_metric([c.id, s], 1.0 if c.state == s else 0.0)
        for status, n in c.statuses.items():
            messages.add_metric([c.id, status], n)
        for kind, n in c.events.items():
            events.add_metric([c.id, kind], n)
        depth.add_metric([c.id], c.statuses.get("queued", 0) + c.statuses.get("deferred", 0))
        if c.next_due is not None:
            due.add_metric([c.id], c.next_due)
        rate.add_metric([c.id], c.send_rate or 0.0)
    yield from (state, messages, events, depth, due, rate)

    outcomes = _counter(
        "messages",
        "delivery outcomes recorded by this process",
        ["campaign", "service", "status"],
    )
    for (cid, sid, status), n in sorted(stats.outcomes.items()):
        outcomes.add_metric([cid, sid, status], n)
    yield outcomes
    replies = _counter(
        "smtp_replies", "SMTP replies that ended an attempt", ["service", "class", "code"]
    )
    for (sid, klass, code), n in sorted(stats.replies.items()):
        replies.add_metric([sid, klass, code], n)
    yield replies
    latency = HistogramMetricFamily(
        "campaignd_send_duration_seconds",
        "one delivery attempt: render, in-flight mark and the SMTP transaction",
        labels=["service"],
    )
    for sid, hist in sorted(stats.latency.items()):
        latency.add_metric([sid], [(le, float(n)) for le, n in hist.cumulative()], hist.total)
    yield latency
    feedback = _counter(
        "feedback_events", "feedback events handled by this process", ["kind", "source"]
    )
    for (kind, source), n in sorted(stats.feedback.items()):
        feedback.add_metric([kind, source], n)
    yield feedback

    in_flight = _gauge("service_in_flight", "SMTP transactions in progress", ["service"])
    slots = _gauge("service_max_connections", "parallel SMTP sessions allowed", ["service"])
    sent_today = _gauge(
        "service_sent_today", "messages sent today (settings timezone)", ["service"]
    )
    warm_day = _gauge("warmup_day", "warm-up day of the service (1 = first day)", ["service"])
    warm_cap = _gauge("warmup_cap", "warm-up cap of today, messages", ["service"])
    breaker = _gauge(
        "breaker_state", "1 for the circuit breaker's current state", ["service", "state"]
    )
    failures = _gauge(
        "breaker_failures", "consecutive connection failures of the service", ["service"]
    )
    pace_set = _gauge(
        "pace_configured_per_second", "messages per second the service's rate allows", ["service"]
    )
    pace_now = _gauge(
        "pace_effective_per_second",
        "messages per second the service runs at now (lower after throttling replies)",
        ["service"],
    )
    for svc in snap.services:
        in_flight.add_metric([svc.id], svc.in_flight)
        slots.add_metric([svc.id], svc.max_connections)
        sent_today.add_metric([svc.id], svc.sent_today)
        if svc.warmup_day is not None and svc.warmup_cap is not None:
            warm_day.add_metric([svc.id], svc.warmup_day)
            warm_cap.add_metric([svc.id], svc.warmup_cap)
        for b in BREAKER_STATES:
            breaker.add_metric([svc.id, b], 1.0 if svc.breaker_state == b else 0.0)
        failures.add_metric([svc.id], svc.breaker_failures)
        if svc.pace_configured is not None:
            pace_set.add_metric([svc.id], svc.pace_configured)
        if svc.pace_effective is not None:
            pace_now.add_metric([svc.id], svc.pace_effective)
    yield from (in_flight, slots, sent_today, warm_day, warm_cap, breaker, failures)
    yield from (pace_set, pace_now)

    used = _gauge(
        "limit_used", "starts counted against the limit in its window", ["scope", "target", "rate"]
    )
    cap = _gauge("limit_cap", "the limit's allowance per window", ["scope", "target", "rate"])
    for lim in snap.limits:
        used.add_metric([lim.scope, lim.target, lim.rate], lim.used)
        cap.add_metric([lim.scope, lim.target, lim.rate], lim.cap)
    yield from (used, cap)


class DaemonCollector(Collector):
    """Renders ``families`` of the snapshot set just before the registry is serialised."""

    def __init__(self, stats: DeliveryStats) -> None:
        self.stats = stats
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Any]:
        return families(self.snapshot, self.stats)


def render(registry: CollectorRegistry, collector: DaemonCollector, snap: Snapshot) -> bytes:
    # Synchronous from here to the end: no other scrape can swap the snapshot in between.
    collector.snapshot = snap
    return generate_latest(registry)


async def metrics(request: web.Request) -> web.Response:
    snap = await gather(request.app[DAEMON])
    body = render(request.app[REGISTRY], request.app[COLLECTOR], snap)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_PLAIN_0_0_4
    return resp


def make_registry(stats: DeliveryStats) -> tuple[CollectorRegistry, DaemonCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = DaemonCollector(stats)
    registry.register(collector)
    return registry, collector


def add_routes(app: web.Application, stats: DeliveryStats) -> None:
    app[REGISTRY], app[COLLECTOR] = make_registry(stats)
    app.router.add_get("/metrics", metrics)
