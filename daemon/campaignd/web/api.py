"""The HTTP API (SPEC §5): status, campaign summaries, messages, pause/resume/stop/retry.

The API writes state to the database and pokes the daemon; it never drives tasks itself.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import __version__
from ..errors import CampaigndError

if TYPE_CHECKING:
    from ..runtime.daemon import Daemon

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATUSES = (
    "queued", "sending", "sent", "deferred", "failed", "bounced", "suppressed", "skipped",
    "uncertain",
)  # fmt: skip
RETRYABLE = ("failed", "uncertain", "deferred")
PROTECTED = ("/api/", "/metrics")


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(data: Any) -> str:
    import json

    def default(o: Any) -> Any:
        if is_dataclass(o) and not isinstance(o, type):
            return asdict(o)
        if isinstance(o, datetime):
            return o.isoformat()
        if isinstance(o, set | frozenset | tuple):
            return list(o)
        return str(o)

    return json.dumps(data, default=default)


def error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    token = daemon.token
    if token and request.path.startswith(PROTECTED):
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        )
        if not ok:
            resp = error(401, "missing or wrong API token — send Authorization: Bearer <token>")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="campaignd"'
            return resp
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return error(exc.status, exc.reason)
        raise
    except CampaigndError as exc:
        return error(404 if "no campaign" in str(exc) else 400, str(exc))


async def summary(daemon: Daemon, campaign_id: str) -> dict[str, Any] | None:
    assert daemon.store is not None
    row = await daemon.store.get_campaign(campaign_id)
    cfg = daemon.config
    campaign = cfg.campaigns.get(campaign_id) if cfg else None
    if row is None:
        if campaign is None:
            return None
        return {
            "id": campaign_id,
            "name": campaign.name or campaign_id,
            "state": "scheduled",
            "reason": None,
            "total": 0,
            "counts": dict.fromkeys(STATUSES, 0),
        }
    counts = await daemon.store.counts(campaign_id)
    data = counts.as_dict()
    enroll_error = daemon.conductor.enroll_errors.get(campaign_id) if daemon.conductor else None
    out: dict[str, Any] = {
        "id": campaign_id,
        "name": (campaign.name if campaign else None) or campaign_id,
        "state": row.state,
        "reason": row.reason or enroll_error,
        "in_config": campaign is not None,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        **data,
    }
    out["eta"] = _eta(out)
    return out


def _eta(s: dict[str, Any]) -> str | None:
    """A rough finish estimate from the observed send rate (the status page refines it)."""
    counts = s.get("counts", {})
    pending = sum(counts.get(k, 0) for k in ("queued", "sending", "deferred"))
    started = s.get("started_at")
    sent = counts.get("sent", 0)
    if not pending or not started or not sent or s.get("state") != "sending":
        return None
    elapsed = time.time() - datetime.fromisoformat(started).timestamp()
    rate = sent / max(elapsed, 1.0)
    return _iso(time.time() + pending / rate)


async def healthz(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    return _json({"ok": daemon.run_state == "running", "state": daemon.run_state})


async def status(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    assert daemon.config is not None and daemon.store is not None
    now = time.time()
    limits = daemon.limiter.snapshot(now) if daemon.limiter else {}
    breakers = daemon.dispatcher.breakers if daemon.dispatcher else {}
    services: dict[str, Any] = {}
    for sid, svc in daemon.config.services.items():
        use = limits.get("services", {}).get(sid) or {}
        services[sid] = {
            "id": sid,
            "host": f"{svc.host}:{svc.effective_port}",
            "transport": svc.transport,
            "max_connections": svc.max_connections,
            "in_flight": daemon.dispatcher.inflight_of(sid) if daemon.dispatcher else 0,
            "rate": [str(r) for r in svc.rate],
            "limits": use.get("rates", []),
            "domains": use.get("domains", {}),
            "warmup": use.get("warmup"),
            "sent_today": use.get("sent_today", 0),
            "slowed": use.get("slowed", {}),
            "breaker": breakers[sid].snapshot(now) if sid in breakers else None,
        }
    ids = sorted(set(daemon.config.campaigns) | {r.id for r in await daemon.store.list_campaigns()})
    campaigns = [s for cid in ids if (s := await summary(daemon, cid)) is not None]
    return _json(
        {
            "version": __version__,
            "state": daemon.run_state,
            "worker": daemon.worker_id,
            "config": {
                "root": str(daemon.config.root),
                "generation": daemon.config.generation,
                "loaded_at": _iso(daemon.loaded_at),
            },
            "load_errors": [
                {"file": p.file, "line": p.line, "message": p.message, "severity": p.severity}
                for p in daemon.problems
            ],
            "in_flight": daemon.dispatcher.inflight() if daemon.dispatcher else 0,
            "services": services,
            "campaigns": campaigns,
        }
    )


async def campaigns(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    assert daemon.config is not None and daemon.store is not None
    ids = sorted(set(daemon.config.campaigns) | {r.id for r in await daemon.store.list_campaigns()})
    return _json([s for cid in ids if (s := await summary(daemon, cid)) is not None])


async def campaign(request: web.Request) -> web.Response:
    data = await summary(request.app[DAEMON], request.match_info["id"])
    if data is None:
        return error(404, f"no campaign {request.match_info['id']!r}")
    return _json(data)


def _int(request: web.Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(reason=f"{name} must be a whole number") from None
    if not lo <= value <= hi:
        raise web.HTTPBadRequest(reason=f"{name} must be between {lo} and {hi}")
    return value


async def messages(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    assert daemon.store is not None
    cid = request.match_info["id"]
    if await daemon.store.get_campaign(cid) is None:
        return error(404, f"no campaign {cid!r}")
    status_ = request.query.get("status") or None
    if status_ is not None and status_ not in STATUSES:
        return error(400, f"status must be one of {', '.join(STATUSES)}")
    limit = _int(request, "limit", 100, 1, 1000)
    after = _int(request, "after", None, 0, 2**62)
    step = _int(request, "step", None, 1, 1000)
    rows = await daemon.store.messages_page(
        cid,
        status=status_,
        step=step,
        template=request.query.get("template") or None,
        service=request.query.get("service") or None,
        recipient=request.query.get("recipient") or None,
        after=after,
        limit=limit or 100,
    )
    items = [r.as_dict() for r in rows]
    return _json(
        {
            "campaign": cid,
            "messages": items,
            "next_after": items[-1]["id"] if len(items) == (limit or 100) else None,
        }
    )


def _action(action: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        daemon = request.app[DAEMON]
        cid = request.match_info["id"]
        state = await daemon.set_state(cid, action)
        return _json({"id": cid, "state": state})

    return handle


async def retry(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    assert daemon.store is not None
    cid = request.match_info["id"]
    if await daemon.store.get_campaign(cid) is None:
        return error(404, f"no campaign {cid!r}")
    try:
        body = await request.json()
    except ValueError:
        return error(400, 'body must be JSON like {"statuses": ["failed"]}')
    statuses = body.get("statuses") if isinstance(body, dict) else None
    if (
        not isinstance(statuses, list)
        or not statuses
        or not all(isinstance(s, str) and s in RETRYABLE for s in statuses)
    ):
        return error(400, f"statuses must be a non-empty list of {', '.join(RETRYABLE)}")
    count = await daemon.store.retry(cid, statuses, now=time.time())
    row = await daemon.store.get_campaign(cid)
    if count and row is not None and row.state in ("completed", "waiting"):
        await daemon.store.set_campaign_state(cid, "sending", None)
    daemon.poke()
    return _json({"id": cid, "requeued": count})


def make_app(daemon: Daemon) -> web.Application:
    app = web.Application(
        middlewares=[errors, auth],
        client_max_size=daemon.config.settings.http.client_max_size if daemon.config else 1 << 20,
    )
    app[DAEMON] = daemon
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/campaigns", campaigns)
    app.router.add_get("/api/campaigns/{id}", campaign)
    app.router.add_get("/api/campaigns/{id}/messages", messages)
    for action in ("pause", "resume", "stop"):
        app.router.add_post(f"/api/campaigns/{{id}}/{action}", _action(action))
    app.router.add_post("/api/campaigns/{id}/retry", retry)
    return app


async def start_api(daemon: Daemon, listen: str) -> tuple[web.AppRunner, int]:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(make_app(daemon), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True)
    await site.start()
    addresses = runner.addresses
    bound = int(addresses[0][1]) if addresses else int(port)
    return runner, bound
