"""The status page (``GET /``): services, campaigns with progress bars, rates, ETAs and errors.

Server-rendered with Jinja2 from the same data as ``/api/status`` (no build step, nothing
from a CDN). The page refreshes itself by fetching ``/api/page`` — the same HTML fragment,
rendered here — every two seconds; its pause / resume / stop buttons call the API.

The API token, when the daemon has one, is typed into the page once, kept in the tab's
``sessionStorage`` and sent as an ``Authorization`` header: no cookie carries authority, so a
cross-site request can never ride on it (no CSRF). Without a token the daemon only listens on
loopback, and the page is rendered with its data straight away.

``view`` turns the status JSON into display strings; it is pure and tested on its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from .common import DAEMON, html_page, render_html

if TYPE_CHECKING:
    from .ports import DaemonView

__all__ = ["REFRESH_MS", "StatusFn", "add_routes", "view"]

StatusFn = Callable[["DaemonView"], Awaitable[dict[str, Any]]]
STATUS: web.AppKey[StatusFn] = web.AppKey("status-data")
REFRESH_MS: Final = 2000

ACTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "scheduled": ("pause", "stop"),
    "sending": ("pause", "stop"),
    "waiting": ("pause", "stop"),
    "paused": ("resume", "stop"),
}
"""Buttons per campaign state; a stopped, completed or failed campaign has none."""
SHOWN_COUNTS: Final = (
    "sent", "queued", "sending", "deferred", "failed", "bounced", "suppressed", "skipped",
    "uncertain", "opened", "clicked", "replied", "unsubscribed", "complained",
)  # fmt: skip
PENDING: Final = ("queued", "sending", "deferred")


def _when(value: str | float | None, now: float) -> str:
    """``14:05 UTC (in 12 min)`` / ``2026-12-01 10:00 UTC (3 h ago)``; ``—`` when unknown."""
    if value is None or value == "":
        return "—"
    ts = datetime.fromisoformat(value).timestamp() if isinstance(value, str) else float(value)
    at = datetime.fromtimestamp(ts, UTC)
    same_day = at.date() == datetime.fromtimestamp(now, UTC).date()
    shown = at.strftime("%H:%M UTC" if same_day else "%Y-%m-%d %H:%M UTC")
    delta = ts - now
    span = abs(delta)
    if span < 60:
        rel = f"{span:.0f} s"
    elif span < 3600:
        rel = f"{span / 60:.0f} min"
    elif span < 86400 * 2:
        rel = f"{span / 3600:.1f} h"
    else:
        rel = f"{span / 86400:.0f} d"
    return f"{shown} ({'in ' + rel if delta > 0 else rel + ' ago'})"


def _rate(per_minute: float | None) -> str:
    if not per_minute:
        return "—"
    if per_minute >= 120:
        return f"{per_minute / 60:.1f}/s"
    return f"{per_minute:.1f}/min"


def _share(n: int, of: int) -> str:
    return f"{n} ({100 * n / of:.0f} %)" if of else str(n)


def _campaign(c: Mapping[str, Any], now: float) -> dict[str, Any]:
    counts: Mapping[str, int] = c.get("counts", {})
    total = int(c.get("total", 0))
    done = total - sum(int(counts.get(k, 0)) for k in PENDING)
    # Floor, so "100 %" means every message is settled, not 99.6 % rounded up.
    pct = math.floor(100 * done / total) if total else (100 if c["state"] == "completed" else 0)
    variants = []
    for template, t in sorted((c.get("by_template") or {}).items()):
        sent = int(t.get("sent", 0))
        variants.append(
            {
                "template": template,
                "sent": sent,
                "opened": _share(int(t.get("opened", 0)), sent),
                "clicked": _share(int(t.get("clicked", 0)), sent),
                "replied": _share(int(t.get("replied", 0)), sent),
            }
        )
    return {
        "id": c["id"],
        "name": c.get("name") or c["id"],
        "state": c["state"],
        "reason": c.get("reason"),
        "total": total,
        "done": done,
        "pct": pct,
        "counts": [(k, int(counts[k])) for k in SHOWN_COUNTS if counts.get(k)],
        "rate": _rate(c.get("send_rate")),
        "eta": _when(c.get("eta"), now) if c.get("eta") else "—",
        "started": _when(c.get("started_at"), now),
        "finished": _when(c.get("finished_at"), now) if c.get("finished_at") else None,
        "actions": ACTIONS.get(c["state"], ()),
        "variants": variants,
        "errors": [{**e, "at": _when(e.get("at"), now)} for e in c.get("last_errors", [])],
    }


def _service(s: Mapping[str, Any], now: float) -> dict[str, Any]:
    limits = [f"{r['used']} / {r['cap']} per {r['rate'].split('/', 1)[-1]}" for r in s["limits"]]
    for domain, rates in sorted((s.get("domains") or {}).items()):
        limits += [f"{domain}: {r['used']} / {r['cap']} per {r['rate'].split('/', 1)[-1]}"
                   for r in rates]  # fmt: skip
    warmup = s.get("warmup")
    breaker = s.get("breaker") or {"state": "closed"}
    note = breaker.get("reason") or ""
    if breaker.get("state") == "open" and breaker.get("retry_at"):
        note = f"{note} — retry {_when(breaker['retry_at'], now)}".strip(" —")
    return {
        "id": s["id"],
        "host": s["host"],
        "transport": s.get("transport", ""),
        "limits": limits,
        "warmup": f"day {warmup['day']}: cap {warmup['cap']}" if warmup else None,
        "sent_today": s.get("sent_today", 0),
        "in_flight": s.get("in_flight", 0),
        "max_connections": s.get("max_connections", 0),
        "breaker": breaker.get("state", "closed"),
        "breaker_note": note,
    }


def view(status: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """Display values for the templates, from ``/api/status`` data."""
    now = time.time() if now is None else now
    cfg = status.get("config", {})
    return {
        "daemon": (
            f"{status.get('version', '?')} · {status.get('state', '?')} · config generation "
            f"{cfg.get('generation', '?')} · {status.get('in_flight', 0)} in flight"
        ),
        "problems": [
            {
                "where": f"{p['file']}:{p['line']}" if p.get("line") else p["file"],
                "message": p["message"],
            }
            for p in status.get("load_errors", [])
        ],
        "campaigns": [_campaign(c, now) for c in status.get("campaigns", [])],
        "services": [_service(s, now) for s in status.get("services", {}).values()],
    }


async def index(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    token_required = daemon.token is not None
    # With a token the browser has to present it first (a page load cannot carry a header):
    # the first render is the frame, the data arrives with the first authorised refresh.
    data = None if token_required else await request.app[STATUS](daemon)
    return html_page(
        "status.html",
        scripts=True,
        connect=True,
        title="campaignd",
        token_required=token_required,
        refresh_ms=REFRESH_MS,
        view=view(data) if data is not None else None,
    )


async def fragment(request: web.Request) -> web.Response:
    """``GET /api/page``: the live part of the page (token-protected as under ``/api/``)."""
    data = await request.app[STATUS](request.app[DAEMON])
    html = render_html("_status.html", view=view(data))
    resp = web.Response(text=html, content_type="text/html", charset="utf-8")
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def favicon(request: web.Request) -> web.Response:
    """Browsers ask for it on every page; "no content" keeps their consoles quiet."""
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})


def add_routes(app: web.Application, status: StatusFn) -> None:
    app[STATUS] = status
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/api/page", fragment)
