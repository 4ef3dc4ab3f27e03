"""The HTTP API (SPEC §5): status, campaign summaries, messages and their CSV log,
pause/resume/stop/retry/delete, the suppression list; and the app that also serves the status
page, ``/metrics``, unsubscribe and tracking links.

The API writes state to the database and pokes the daemon; it never drives tasks itself.

Protection, in the order the middlewares apply it:

* ``Host`` allow-list on ``/``, ``/api/`` and ``/metrics`` (DNS rebinding: a hostile page whose
  name resolves to 127.0.0.1 would otherwise be same-origin with us);
* ``Authorization: Bearer <token>`` on ``/api/`` and ``/metrics`` when a token is configured,
  compared in constant time; without a token the daemon only listens on loopback;
* state-changing ``/api/`` requests must not be "simple" cross-site requests: they carry the
  Authorization header or a non-form content type, which browsers only send cross-origin after a
  CORS preflight we never grant — a ``<form>`` on another site can change nothing;
* every input from the path, the query or the body is checked before it reaches SQL: bad input
  is a 4xx with a sentence saying what is wrong, never a 500.

Unsubscribe (``/u/``) and tracking (``/o/``, ``/c/``) links are public by design and are
checked by their HMAC signature instead. Pages get a nonce-based CSP; every answer gets
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and ``nosniff``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from .. import __version__
from ..errors import CampaigndError, StoreError
from ..observe import STATS
from ..queue.rows import EVENT_COUNTERS
from . import hooks
from . import metrics as metrics_routes
from . import page as page_routes
from . import suppressions as suppression_routes
from . import tracking as tracking_routes
from . import unsubscribe as unsubscribe_routes
from .common import DAEMON, Handler, check_id, dumps, error, iso, json_response
from .csvlog import stream_rows
from .eta import estimate_finish

if TYPE_CHECKING:
    from ..runtime.daemon import Daemon

__all__ = ["DAEMON", "make_app", "start_api", "status_data", "summary"]

log = logging.getLogger("campaignd.api")

STATUSES = (
    "queued", "sending", "sent", "deferred", "failed", "bounced", "suppressed", "skipped",
    "uncertain",
)  # fmt: skip
PENDING = ("queued", "sending", "deferred")
RETRYABLE = ("failed", "uncertain", "deferred")
PROTECTED = ("/api/", "/metrics")
HOST_CHECKED = ("/api/", "/metrics")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What a cross-site <form> (or a no-cors fetch) can send without a CORS preflight.
SIMPLE_TYPES: Final = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})
MAX_FILTER = 320

# Kept for callers of the old private names.
_iso = iso
_json = json_response
_dumps = dumps


# ---------------------------------------------------------------- middlewares


def host_name(host: str | None) -> str | None:
    """The host of a ``Host`` header without port and brackets, lower-cased."""
    if not host:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


@lru_cache(maxsize=1)
def _machine_names() -> frozenset[str]:
    # gethostname only: getfqdn would ask DNS, and could stall the event loop for seconds.
    return frozenset({socket.gethostname().lower()})


def allowed_host(
    name: str | None, *, listen_host: str, public_url: str | None, extra: str = ""
) -> bool:
    """May a request naming ``name`` in its Host header reach the API and the page?

    A rebinding attack needs a name the attacker controls: an IP literal is never one, nor are
    the names we were given — the listen address, ``public_url``'s host, this machine's host
    name, ``$CAMPAIGND_ALLOWED_HOSTS`` (comma-separated) — and ``localhost``.
    """
    if name is None:
        return True  # HTTP/1.0 without Host: not a browser
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    allowed = set(LOOPBACK_NAMES) | _machine_names()
    allowed.add(listen_host.strip("[]").lower())
    if public_url:
        allowed.add((urlsplit(public_url).hostname or "").lower())
    allowed |= {h.strip().lower() for h in extra.split(",") if h.strip()}
    return name in allowed


@web.middleware
async def hosts(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/" or request.path.startswith(HOST_CHECKED):
        daemon = request.app[DAEMON]
        http = daemon.config.settings.http if daemon.config else None
        listen = os.environ.get("CAMPAIGND_LISTEN") or (http.listen if http else "127.0.0.1:0")
        if not allowed_host(
            host_name(request.headers.get("Host")),
            listen_host=listen.rpartition(":")[0],
            public_url=http.public_url if http else None,
            extra=os.environ.get("CAMPAIGND_ALLOWED_HOSTS", ""),
        ):
            return error(
                421,
                "this Host is not one campaignd answers to — use the listen address, "
                "public_url's host, or add the name to $CAMPAIGND_ALLOWED_HOSTS",
            )
    return await handler(request)


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    token = daemon.token
    given = request.headers.get("Authorization", "")
    if token and request.path.startswith(PROTECTED):
        scheme, _, value = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        )
        if not ok:
            resp = error(401, "missing or wrong API token — send Authorization: Bearer <token>")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="campaignd"'
            return resp
    if (
        request.method in UNSAFE_METHODS
        and request.path.startswith("/api/")
        and not given
        # aiohttp reports a missing Content-Type as application/octet-stream: look at the header
        and (hdrs.CONTENT_TYPE not in request.headers or request.content_type in SIMPLE_TYPES)
    ):
        return error(
            415,
            "state-changing requests must send JSON (Content-Type: application/json) or an "
            "Authorization header",
        )
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
    except HttpProcessingError as exc:  # a body aiohttp could not parse (broken multipart, …)
        return error(400, f"malformed request body: {exc.message}")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, streamed ones too (this runs before the headers go out)."""
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    if request.path.startswith(PROTECTED):
        h.setdefault("Cache-Control", "no-store")


# ---------------------------------------------------------------- summaries


def _campaign_id(request: web.Request) -> str:
    cid = request.match_info["id"]
    if not check_id(cid):
        raise web.HTTPNotFound(reason=f"no campaign {cid[:100]!r}")
    return cid


def _warmup_days(daemon: Daemon, now: float) -> dict[str, int]:
    if daemon.limiter is None:
        return {}
    services = daemon.limiter.snapshot(now).get("services", {})
    return {sid: s["warmup"]["day"] for sid, s in services.items() if s.get("warmup")}


def _progress(total: int, counts: Mapping[str, int], state: str) -> float:
    if not total:
        return 100.0 if state == "completed" else 0.0
    done = total - sum(counts.get(k, 0) for k in PENDING)
    return round(100 * done / total, 1)


async def summary(daemon: Daemon, campaign_id: str) -> dict[str, Any] | None:
    assert daemon.store is not None
    row = await daemon.store.get_campaign(campaign_id)
    cfg = daemon.config
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
            "progress": 0.0,
            "send_rate": None,
            "eta": None,
            "last_errors": [],
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
    rate = STATS.send_rate(campaign_id, now)
    pending = sum(counts.counts.get(k, 0) for k in PENDING)
    out["progress"] = _progress(counts.total, counts.counts, row.state)
    out["send_rate"] = round(rate * 60, 1) if rate else None  # messages per minute
    out["eta"] = (
        _iso(
            estimate_finish(
                pending=pending,
                now=now,
                observed_rate=rate,
                campaign=campaign,
                config=cfg,
                warmup_days=_warmup_days(daemon, now),
            )
        )
        if row.state == "sending"
        else None
    )
    out["last_errors"] = [
        {
            "at": _iso(e.at),
            "service": e.service,
            "status": e.status,
            "recipient": e.recipient,
            "error": e.error,
        }
        for e in STATS.last_errors(campaign_id)
    ]
    if daemon.conductor:  # window, editions, next drip step (runtime/conductor.py)
        out.update(daemon.conductor.describe(campaign_id, row, time.time()))
    return out


async def healthz(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    return _json({"ok": daemon.run_state == "running", "state": daemon.run_state})


async def _campaign_ids(daemon: Daemon) -> list[str]:
    assert daemon.config is not None and daemon.store is not None
    stored = {r.id for r in await daemon.store.list_campaigns()}
    return sorted(set(daemon.config.campaigns) | stored)


async def status_data(daemon: Daemon) -> dict[str, Any]:
    """Everything ``/api/status`` answers (the status page renders the same)."""
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
    ids = await _campaign_ids(daemon)
    campaigns = [s for cid in ids if (s := await summary(daemon, cid)) is not None]
    return {
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


async def status(request: web.Request) -> web.Response:
    return _json(await status_data(request.app[DAEMON]))


async def campaigns(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    ids = await _campaign_ids(daemon)
    return _json([s for cid in ids if (s := await summary(daemon, cid)) is not None])


async def campaign(request: web.Request) -> web.Response:
    cid = _campaign_id(request)
    data = await summary(request.app[DAEMON], cid)
    if data is None:
        return error(404, f"no campaign {cid!r}")
    return _json(data)


# ---------------------------------------------------------------- messages and the log


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


def _filters(request: web.Request) -> dict[str, Any]:
    """``status``, ``step``, ``template``, ``service``, ``recipient`` from the query, checked."""
    q = request.query
    status_ = q.get("status") or None
    if status_ is not None and status_ not in STATUSES:
        raise web.HTTPBadRequest(reason=f"status must be one of {', '.join(STATUSES)}")
    out: dict[str, Any] = {"status": status_, "step": _int(request, "step", None, 1, 1000)}
    for name in ("template", "service"):
        value = q.get(name) or None
        if value is not None and not check_id(value):
            raise web.HTTPBadRequest(reason=f"{name} must be an id like intro-a")
        out[name] = value
    recipient = q.get("recipient") or None
    if recipient is not None and (len(recipient) > MAX_FILTER or "\x00" in recipient):
        raise web.HTTPBadRequest(reason="recipient must be an email address")
    out["recipient"] = recipient
    return out


async def _known(daemon: Daemon, cid: str) -> bool:
    assert daemon.store is not None
    return await daemon.store.get_campaign(cid) is not None


async def messages(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    assert daemon.store is not None
    cid = _campaign_id(request)
    filters = _filters(request)
    limit = _int(request, "limit", 100, 1, 1000) or 100
    after = _int(request, "after", None, 0, 2**62)
    if not await _known(daemon, cid):
        return error(404, f"no campaign {cid!r}")
    rows = await daemon.store.messages_page(cid, **filters, after=after, limit=limit)
    items = [r.as_dict() for r in rows]
    return _json(
        {
            "campaign": cid,
            "messages": items,
            "next_after": items[-1]["id"] if len(items) == limit else None,
        }
    )


async def log_csv(request: web.Request) -> web.StreamResponse:
    """The messages as CSV, streamed page by page (constant memory at any size)."""
    daemon = request.app[DAEMON]
    store = daemon.store
    assert store is not None
    cid = _campaign_id(request)
    filters = _filters(request)
    if not await _known(daemon, cid):
        return error(404, f"no campaign {cid!r}")

    async def page(after: int | None, limit: int) -> list[Any]:
        return await store.messages_page(cid, **filters, after=after, limit=limit)

    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{cid}-messages.csv"',
        }
    )
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        async for chunk in stream_rows(page):
            await resp.write(chunk.encode())  # waits while the client's buffer is full
        await resp.write_eof()
    except ConnectionResetError:
        log.info("log.csv of %s: the client went away", cid)
    return resp


# ---------------------------------------------------------------- control


def _action(action: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        daemon = request.app[DAEMON]
        cid = _campaign_id(request)
        state = await daemon.set_state(cid, action)
        return _json({"id": cid, "state": state})

    return handle


async def test_service_route(request: web.Request) -> web.Response:
    """POST /api/services/{id}/test {"to": ADDR?}: connect, TLS, AUTH (and send) as the daemon
    would — from the daemon's host and network, which is where the answer matters."""
    from ..delivery.servicetest import test_service

    daemon = request.app[DAEMON]
    assert daemon.config is not None
    sid = request.match_info["id"]
    service = daemon.config.services.get(sid)
    if service is None:
        known = ", ".join(sorted(daemon.config.services))
        return error(404, f"no service {sid!r} (known: {known})")
    to: str | None = None
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            return error(400, 'body must be JSON like {"to": "you@example.com"} or empty')
        to = body.get("to") if isinstance(body, dict) else None
        if to is not None and (not isinstance(to, str) or "@" not in to or len(to) > 320):
            return error(400, '"to" must be one email address')
    report = await test_service(sid, service, to=to)
    return _json(report.as_dict(), status=200 if report.ok else 502)


async def retry(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    assert daemon.store is not None
    cid = _campaign_id(request)
    if not await _known(daemon, cid):
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


async def delete(request: web.Request) -> web.Response:
    """Delete a stopped or finished campaign's records; suppressions stay.

    Refused while its file is still in campaigns.d: the conductor would enroll the campaign
    afresh and send every message a second time.
    """
    daemon = request.app[DAEMON]
    assert daemon.store is not None and daemon.config is not None
    cid = _campaign_id(request)
    if cid in daemon.config.campaigns:
        return error(
            409,
            f"campaigns.d/{cid}.yaml is still there — remove the file first (the daemon "
            "would otherwise start the campaign again and send everything a second time)",
        )
    try:
        deleted = await daemon.store.delete_campaign(cid)
    except StoreError as exc:
        return error(404 if "no campaign" in str(exc) else 409, str(exc))
    log.info("campaign %s deleted: %d messages", cid, deleted)
    return _json({"id": cid, "deleted": deleted})


# ---------------------------------------------------------------- app


def make_app(daemon: Daemon) -> web.Application:
    app = web.Application(
        middlewares=[errors, hosts, auth],
        client_max_size=daemon.config.settings.http.client_max_size if daemon.config else 1 << 20,
    )
    app[DAEMON] = daemon
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/campaigns", campaigns)
    app.router.add_get("/api/campaigns/{id}", campaign)
    app.router.add_delete("/api/campaigns/{id}", delete)
    app.router.add_get("/api/campaigns/{id}/messages", messages)
    app.router.add_get("/api/campaigns/{id}/log.csv", log_csv)
    for action in ("pause", "resume", "stop"):
        app.router.add_post(f"/api/campaigns/{{id}}/{action}", _action(action))
    app.router.add_post("/api/campaigns/{id}/retry", retry)
    app.router.add_post("/api/services/{id}/test", test_service_route)
    suppression_routes.add_routes(app)
    page_routes.add_routes(app, status_data)
    metrics_routes.add_routes(app)
    unsubscribe_routes.add_routes(app)
    tracking_routes.add_routes(app)
    hooks.add_routes(app)  # POST /hooks/{provider}: ESP webhooks, signature-checked (web/hooks.py)
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
