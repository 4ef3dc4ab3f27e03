"""What ``/api/status``, ``/api/campaigns`` and the status page show: campaign summaries with
progress, rate and ETA, services with their limits and breakers, load problems and feedback.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .. import __version__
from ..queue.rows import AUDIENCE_KEYS, EVENT_COUNTERS
from .common import iso
from .eta import estimate_finish
from .ports import DaemonView

STATUSES = (
    "queued", "sending", "sent", "deferred", "failed", "bounced", "suppressed", "skipped",
    "uncertain",
)  # fmt: skip
PENDING = ("queued", "sending", "deferred")


def _warmup_days(view: DaemonView, now: float) -> dict[str, int]:
    services = view.limits_snapshot(now).get("services", {})
    return {sid: s["warmup"]["day"] for sid, s in services.items() if s.get("warmup")}


def _progress(total: int, counts: Mapping[str, int], state: str) -> float:
    if not total:
        return 100.0 if state == "completed" else 0.0
    done = total - sum(counts.get(k, 0) for k in PENDING)
    return round(100 * done / total, 1)


async def summary(view: DaemonView, campaign_id: str) -> dict[str, Any] | None:
    assert view.store is not None
    row = await view.store.get_campaign(campaign_id)
    cfg = view.config
    campaign = cfg.campaigns.get(campaign_id) if cfg else None
    now = time.time()
    if row is None:
        if campaign is None:
            return None
        return {
            "id": campaign_id,
            "name": campaign.name or campaign_id,
            "state": "scheduled",
            "reason": None,
            "in_config": True,
            "started_at": None,
            "finished_at": None,
            "total": 0,
            "counts": dict.fromkeys((*STATUSES, *EVENT_COUNTERS), 0),
            "by_step": {},
            "by_template": {},
            "audience": dict.fromkeys(AUDIENCE_KEYS, 0),
            "progress": 0.0,
            "send_rate": None,
            "eta": None,
            "last_errors": [],
        }
    counts = await view.store.counts(campaign_id)
    data = counts.as_dict()
    enroll_error = view.enroll_error(campaign_id)
    out: dict[str, Any] = {
        "id": campaign_id,
        "name": (campaign.name if campaign else None) or campaign_id,
        "state": row.state,
        "reason": row.reason or enroll_error,
        "in_config": campaign is not None,
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        **data,
    }
    rate = view.stats.send_rate(campaign_id, now)
    pending = sum(counts.counts.get(k, 0) for k in PENDING)
    out["progress"] = _progress(counts.total, counts.counts, row.state)
    out["send_rate"] = round(rate * 60, 1) if rate else None  # messages per minute
    out["eta"] = (
        iso(
            estimate_finish(
                pending=pending,
                now=now,
                observed_rate=rate,
                campaign=campaign,
                config=cfg,
                warmup_days=_warmup_days(view, now),
            )
        )
        if row.state == "sending"
        else None
    )
    out["last_errors"] = [
        {
            "at": iso(e.at),
            "service": e.service,
            "status": e.status,
            "recipient": e.recipient,
            "error": e.error,
        }
        for e in view.stats.last_errors(campaign_id)
    ]
    out.update(view.campaign_notes(campaign_id, row, now))  # window, editions, next drip step
    return out


async def campaign_ids(view: DaemonView) -> list[str]:
    assert view.config is not None and view.store is not None
    stored = {r.id for r in await view.store.list_campaigns()}
    return sorted(set(view.config.campaigns) | stored)


async def status_data(view: DaemonView) -> dict[str, Any]:
    """Everything ``/api/status`` answers (the status page renders the same)."""
    assert view.config is not None and view.store is not None
    now = time.time()
    limits = view.limits_snapshot(now)
    services: dict[str, Any] = {}
    for sid, svc in view.config.services.items():
        use = limits.get("services", {}).get(sid) or {}
        services[sid] = {
            "id": sid,
            "host": f"{svc.host}:{svc.effective_port}",
            "transport": svc.transport,
            "max_connections": svc.max_connections,
            "in_flight": view.in_flight(sid),
            "rate": [str(r) for r in svc.rate],
            "limits": use.get("rates", []),
            "domains": use.get("domains", {}),
            "warmup": use.get("warmup"),
            "sent_today": use.get("sent_today", 0),
            "slowed": use.get("slowed", {}),
            # configured vs effective pace, and why it is lower (a relay's throttle replies)
            "pace": use.get("pace"),
            "slowed_domains": use.get("slowed_domains", {}),
            "breaker": view.breaker_snapshot(sid, now),
        }
    ids = await campaign_ids(view)
    campaigns = [s for cid in ids if (s := await summary(view, cid)) is not None]
    healthy, why = view.health()
    out: dict[str, Any] = {
        "version": __version__,
        "state": view.run_state,
        "worker": view.worker_id,
        "config": {
            "root": str(view.config.root),
            "generation": view.config.generation,
            "loaded_at": iso(view.loaded_at),
        },
        "load_errors": [
            {"file": p.file, "line": p.line, "message": p.message, "severity": p.severity}
            for p in view.problems
        ],
        "health": {"ok": healthy, "reason": why or None},
        "loops": {
            name: {**loop, "last_progress": iso(loop.get("last_progress"))}
            for name, loop in view.loops_snapshot().items()
        },
        "in_flight": view.in_flight(),
        "services": services,
        "campaigns": campaigns,
    }
    if view.feedback is not None:
        feedback = await view.feedback.status()
        out["feedback"] = feedback
        out["unmatched"] = feedback["unmatched"]
    return out
