"""What every web module shares: the app key of the daemon, JSON answers, input checks, the
HTML template environment and the security headers of pages.

Kept apart from ``api.py`` so the page, metrics and link endpoints can use it without importing
the API module (which registers them).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import jinja2
from aiohttp import web

if TYPE_CHECKING:
    from .ports import DaemonView

__all__ = [
    "DAEMON",
    "Handler",
    "bad_request",
    "check_id",
    "error",
    "html_page",
    "iso",
    "json_response",
    "render_html",
]

DAEMON: web.AppKey[DaemonView] = web.AppKey("daemon")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Object ids as config/model.py allows them, with a length cap: an id from a URL is checked
# here before it reaches SQL, so a NUL byte or a megabyte of path is a 404, never a 500.
_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def _default(o: Any) -> Any:
    if is_dataclass(o) and not isinstance(o, type):
        return asdict(o)
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    return str(o)


def dumps(data: Any) -> str:
    return json.dumps(data, default=_default)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=dumps)


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


def bad_request(message: str) -> web.HTTPBadRequest:
    """Raise it; the error middleware turns it into ``{"error": message}``."""
    return web.HTTPBadRequest(reason=message)


def check_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


# ---------------------------------------------------------------- HTML

TEMPLATES: Final = Path(__file__).parent / "templates"
_ENV: Final = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every value a page shows is escaped; recipients' data included
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(name: str, **context: Any) -> str:
    return _ENV.get_template(name).render(**context)


def html_page(
    name: str,
    *,
    status: int = 200,
    scripts: bool = False,
    connect: bool = False,
    **context: Any,
) -> web.Response:
    """A page with a fresh nonce: the only inline style and script it may run are ours.

    No inline event handlers, no ``style=`` attributes, nothing from elsewhere; forms post
    only back here; no page may frame it.
    """
    nonce = secrets.token_urlsafe(18)
    body = render_html(name, nonce=nonce, **context)
    csp = [
        "default-src 'none'",
        f"style-src 'nonce-{nonce}'",
        "img-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
    if scripts:
        csp.append(f"script-src 'nonce-{nonce}'")
    if connect:
        csp.append("connect-src 'self'")
    resp = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    resp.headers["Content-Security-Policy"] = "; ".join(csp)
    resp.headers["Cache-Control"] = "no-store"
    return resp
