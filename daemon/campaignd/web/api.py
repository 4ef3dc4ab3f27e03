"""The HTTP API's routes (SPEC §5): status, campaign summaries, messages and their CSV log,
pause/resume/stop/retry/delete, the suppression list; and the app that also serves the status
page, ``/metrics``, unsubscribe and tracking links.

The API reads and changes the view only through the ``DaemonView`` it is handed
(``ports.py``): changes are written to the database and the view is woken; the API never
drives tasks itself. The protection is in ``security.py``, the summaries in ``status.py``.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import NotFound, StoreError
from . import hooks
from . import metrics as metrics_routes
from . import page as page_routes
from . import suppressions as suppression_routes
from . import tracking as tracking_routes
from . import unsubscribe as unsubscribe_routes
from .common import DAEMON, Handler, check_id, error, json_response
from .csvlog import stream_rows
from .ports import DaemonView
from .security import auth, errors, hosts, security_headers
from .status import STATUSES, campaign_ids, status_data, summary

__all__ = [
    "DAEMON",
    "HTTP_LOG",
    "make_app",
    "runner_options",
    "start_api",
    "status_data",
    "summary",
]

log = logging.getLogger("campaignd.api")


class MalformedRequests(logging.Filter):
    """aiohttp logs every request it cannot parse (a NUL byte in the path, a header over
    8 KiB, bytes that are no HTTP), and every client that hangs up while its body is read,
    with a full traceback at ERROR: anyone who can connect could fill the journal with them.
    Such a record becomes one INFO line; a traceback stays for what is ours (a 500 from a
    handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and exc.code < 500:
            said = record.getMessage()
            record.msg = "%s: refused a malformed request (%d): %.200r"
            record.args = (said, exc.code, exc.message)
        elif isinstance(exc, ConnectionResetError):
            said = record.getMessage()
            record.msg = "%s: the client went away (%s)"
            record.args = (said, exc)
        else:
            return True
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


HTTP_LOG = logging.getLogger("campaignd.http")
"""The logger of the HTTP server's own messages (not the handlers')."""
HTTP_LOG.addFilter(MalformedRequests())


def runner_options() -> dict[str, Any]:
    """How the API's ``AppRunner`` is made (tests start their ``TestServer`` with these)."""
    return {"access_log": None, "handle_signals": False, "logger": HTTP_LOG}


MAX_FILTER = 320


# ---------------------------------------------------------------- summaries


def _campaign_id(request: web.Request) -> str:
    cid = request.match_info["id"]
    if not check_id(cid):
        raise web.HTTPNotFound(reason=f"no campaign {cid[:100]!r}")
    return cid


async def healthz(request: web.Request) -> web.Response:
    view = request.app[DAEMON]
    ok, why = view.health()
    body: dict[str, Any] = {"ok": ok, "state": view.run_state}
    if not ok:
        body["reason"] = why
    return json_response(body, status=200 if ok else 503)


async def status(request: web.Request) -> web.Response:
    return json_response(await status_data(request.app[DAEMON]))


async def campaigns(request: web.Request) -> web.Response:
    view = request.app[DAEMON]
    ids = await campaign_ids(view)
    return json_response([s for cid in ids if (s := await summary(view, cid)) is not None])


async def campaign(request: web.Request) -> web.Response:
    cid = _campaign_id(request)
    data = await summary(request.app[DAEMON], cid)
    if data is None:
        return error(404, f"no campaign {cid!r}")
    return json_response(data)


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


async def _known(view: DaemonView, cid: str) -> bool:
    assert view.store is not None
    return await view.store.get_campaign(cid) is not None


async def messages(request: web.Request) -> web.Response:
    view = request.app[DAEMON]
    assert view.store is not None
    cid = _campaign_id(request)
    filters = _filters(request)
    limit = _int(request, "limit", 100, 1, 1000) or 100
    after = _int(request, "after", None, 0, 2**62)
    if not await _known(view, cid):
        return error(404, f"no campaign {cid!r}")
    rows = await view.store.messages_page(cid, **filters, after=after, limit=limit)
    items = [r.as_dict() for r in rows]
    return json_response(
        {
            "campaign": cid,
            "messages": items,
            "next_after": items[-1]["id"] if len(items) == limit else None,
        }
    )


async def why(request: web.Request) -> web.Response:
    """GET /api/campaigns/{id}/why?recipient=EMAIL: everything the campaign holds about one
    recipient — each message (edition, step, status, times, service, reply) with its events,
    the list row, why it was not enrolled, its suppression (``campaignctl why``)."""
    view = request.app[DAEMON]
    assert view.store is not None
    cid = _campaign_id(request)
    recipient = _filters(request)["recipient"]
    if recipient is None:
        return error(400, "recipient= is required: the address to explain")
    if not await _known(view, cid):
        return error(404, f"no campaign {cid!r}")
    return json_response(await view.store.story(cid, recipient))


async def log_csv(request: web.Request) -> web.StreamResponse:
    """The messages as CSV, streamed page by page (constant memory at any size)."""
    view = request.app[DAEMON]
    store = view.store
    assert store is not None
    cid = _campaign_id(request)
    filters = _filters(request)
    if not await _known(view, cid):
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
    try:
        await resp.prepare(request)  # the client may be gone before the headers go out
        async for chunk in stream_rows(page):
            await resp.write(chunk.encode())  # waits while the client's buffer is full
        await resp.write_eof()
    except ConnectionResetError:
        log.info("log.csv of %s: the client went away", cid)
    return resp


# ---------------------------------------------------------------- control


def _action(action: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        cid = _campaign_id(request)
        state = await request.app[DAEMON].control(cid, action)
        return json_response({"id": cid, "state": state})

    return handle


async def test_service_route(request: web.Request) -> web.Response:
    """POST /api/services/{id}/test {"to": ADDR?}: connect, TLS, AUTH (and send) as the view
    would — from the view's host and network, which is where the answer matters."""
    view = request.app[DAEMON]
    assert view.config is not None
    sid = request.match_info["id"]
    if sid not in view.config.services:
        known = ", ".join(sorted(view.config.services))
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
    report = await view.test_service(sid, to)
    return json_response(report.as_dict(), status=200 if report.ok else 502)


async def retry(request: web.Request) -> web.Response:
    view = request.app[DAEMON]
    cid = _campaign_id(request)
    if not await _known(view, cid):
        return error(404, f"no campaign {cid!r}")
    try:
        body = await request.json()
    except ValueError:
        return error(400, 'body must be JSON like {"statuses": ["failed"]}')
    statuses = body.get("statuses") if isinstance(body, dict) else None
    if not isinstance(statuses, list) or not all(isinstance(s, str) for s in statuses):
        statuses = []
    try:
        count = await view.retry(cid, statuses)
    except ValueError as exc:
        return error(400, str(exc))
    return json_response({"id": cid, "requeued": count})


async def delete(request: web.Request) -> web.Response:
    """Delete a stopped or finished campaign's records; suppressions stay.

    Refused while its file is still in campaigns.d: the conductor would enroll the campaign
    afresh and send every message a second time.
    """
    view = request.app[DAEMON]
    assert view.store is not None and view.config is not None
    cid = _campaign_id(request)
    if cid in view.config.campaigns:
        return error(
            409,
            f"campaigns.d/{cid}.yaml is still there — remove the file first (the view "
            "would otherwise start the campaign again and send everything a second time)",
        )
    if not await _known(view, cid):
        raise NotFound(f"no campaign {cid!r}")
    try:
        deleted = await view.store.delete_campaign(cid)
    except StoreError as exc:
        return error(409, str(exc))
    log.info("campaign %s deleted: %d messages", cid, deleted)
    return json_response({"id": cid, "deleted": deleted})


# ---------------------------------------------------------------- app


def make_app(view: DaemonView) -> web.Application:
    app = web.Application(
        middlewares=[errors, hosts, auth],
        client_max_size=view.config.settings.http.client_max_size if view.config else 1 << 20,
    )
    app[DAEMON] = view
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/campaigns", campaigns)
    app.router.add_get("/api/campaigns/{id}", campaign)
    app.router.add_delete("/api/campaigns/{id}", delete)
    app.router.add_get("/api/campaigns/{id}/messages", messages)
    app.router.add_get("/api/campaigns/{id}/log.csv", log_csv)
    app.router.add_get("/api/campaigns/{id}/why", why)
    for action in ("pause", "resume", "stop"):
        app.router.add_post(f"/api/campaigns/{{id}}/{action}", _action(action))
    app.router.add_post("/api/campaigns/{id}/retry", retry)
    app.router.add_post("/api/services/{id}/test", test_service_route)
    suppression_routes.add_routes(app)
    page_routes.add_routes(app, status_data)
    metrics_routes.add_routes(app, view.stats)
    unsubscribe_routes.add_routes(app)
    tracking_routes.add_routes(app)
    hooks.add_routes(app)  # POST /hooks/{provider}: ESP webhooks, signature-checked (web/hooks.py)
    return app


async def start_api(view: DaemonView, listen: str) -> tuple[web.AppRunner, int]:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(make_app(view), **runner_options())
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True)
    await site.start()
    addresses = runner.addresses
    bound = int(addresses[0][1]) if addresses else int(port)
    return runner, bound
