"""The middlewares that protect the API and the page (SPEC §5 "Security").

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
import os
import socket
from functools import lru_cache
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import CampaigndError, NotFound
from .common import DAEMON, Handler, error

if TYPE_CHECKING:
    pass

PROTECTED = ("/api/", "/metrics")
HOST_CHECKED = ("/api/", "/metrics")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What a cross-site <form> (or a no-cors fetch) can send without a CORS preflight.
SIMPLE_TYPES: Final = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})
MAX_FILTER = 320


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
        view = request.app[DAEMON]
        http = view.config.settings.http if view.config else None
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
    token = request.app[DAEMON].token
    given = request.headers.get("Authorization", "")
    if token and request.path.startswith(PROTECTED):
        scheme, _, value = given.partition(" ")
        # Header bytes that are not UTF-8 arrive as surrogates: encode them back, never raise.
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8", "surrogateescape"), token.encode()
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
    except NotFound as exc:
        return error(404, str(exc))
    except CampaigndError as exc:
        return error(400, str(exc))
    except HttpProcessingError as exc:  # a body aiohttp could not parse (broken multipart, …)
        return error(400, f"malformed request body: {exc.message}")
    except (RecursionError, UnicodeError) as exc:
        # Hostile input (JSON nested thousands deep, bytes that are no text) is the client's
        # error, not ours: a 400, never a 500 with a traceback in the journal.
        return error(400, f"malformed request: {type(exc).__name__}")
    except LookupError as exc:
        # aiohttp decodes a body with the charset its Content-Type names; a name no codec
        # has (``charset=x-nothing``) is a plain LookupError. A KeyError or IndexError is
        # one of ours: let it through as the bug it is.
        if isinstance(exc, KeyError | IndexError):
            raise
        return error(400, f"malformed request: {str(exc)[:100]}")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, streamed ones too (this runs before the headers go out)."""
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    if request.path.startswith(PROTECTED):
        h.setdefault("Cache-Control", "no-store")
