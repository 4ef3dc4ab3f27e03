"""Unsubscribe (SPEC §7): ``GET /u/{token}`` asks, ``POST /u/{token}`` does it.

* ``POST`` with ``List-Unsubscribe=One-Click`` (RFC 8058, what mailbox providers send when the
  reader presses their "unsubscribe" button) unsubscribes at once: no cookie, no redirect,
  ``200``, and the same again changes nothing.
* ``GET`` only shows a page with a button that makes that same POST: link scanners and
  prefetchers follow links with GET, and must not unsubscribe anyone.
* A token that is forged, truncated, altered or meant for another purpose is a ``400`` and
  changes nothing.

The address joins the global suppression list in the same transaction as the ``unsubscribed``
event that the campaign counts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..queue.rows import EventIn
from ..tokens.links import BadToken, LinkSigner
from .common import DAEMON, check_id, html_page

__all__ = ["add_routes", "unsubscribe"]

ONE_CLICK: Final = "One-Click"


def signer_of(request: web.Request) -> LinkSigner:
    signer = request.app[DAEMON].signer
    if signer is None:
        raise web.HTTPServiceUnavailable(reason="campaignd is starting")
    return signer


async def unsubscribe(request: web.Request, campaign_id: str, recipient: str, source: str) -> bool:
    """Suppress ``recipient`` and count it for the campaign; False if it was done before."""
    store = request.app[DAEMON].store
    assert store is not None
    now = time.time()
    message: int | None = None
    if check_id(campaign_id):
        # The counter lives on a message row: the latest one that went out to this address.
        rows = await store.messages_page(campaign_id, recipient=recipient, limit=100)
        sent = [r for r in rows if r.sent_at is not None] or rows
        message = sent[-1].id if sent else None
    how = "one-click (RFC 8058)" if source == "one-click" else "the unsubscribe page"
    event = EventIn(
        kind="unsubscribed",
        source=source,
        at=now,
        campaign_id=campaign_id,
        message=message,
        recipient=recipient,
        detail=f"unsubscribed via {how}",
        suppress=True,
        dedupe=f"unsubscribe:{campaign_id}:{recipient}",
    )
    new = await store.add_event(event)
    if not new:
        # Unsubscribed before: the event stays single, but if an operator has lifted the
        # suppression since, the reader's new request puts it back.
        await store.suppress(
            recipient, reason=event.detail or "unsubscribed", source=source,
            campaign_id=campaign_id, at=now,
        )  # fmt: skip
    else:
        request.app[DAEMON].stats.feedback_event("unsubscribed", source)
    return new


def _bad_link() -> web.Response:
    return html_page(
        "unsubscribe.html",
        status=400,
        state="bad",
        address=None,
        title="This unsubscribe link is not valid",
    )


async def confirm_page(request: web.Request) -> web.Response:
    try:
        _, recipient = signer_of(request).verify_unsubscribe(request.match_info["token"])
    except BadToken:
        return _bad_link()
    store = request.app[DAEMON].store
    assert store is not None
    already = bool(await store.suppressed([recipient]))
    return html_page(
        "unsubscribe.html",
        state="done" if already else "ask",
        address=recipient,
        title="You are unsubscribed" if already else "Unsubscribe?",
    )


async def one_click(request: web.Request) -> web.Response:
    try:
        campaign_id, recipient = signer_of(request).verify_unsubscribe(request.match_info["token"])
    except BadToken:
        return _bad_link()
    via = "one-click"
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form: Mapping[str, object] = await request.post()
        except (ValueError, HttpProcessingError):  # a broken body (bad boundary, bad headers)
            form = {}
        value = form.get("List-Unsubscribe")
        if form.get("via") == "page":
            via = "page"
    else:
        # RFC 8058 names the body, not its media type; accept the bare form too.
        text = (await request.text()).strip()
        value = text.partition("=")[2] if text.startswith("List-Unsubscribe=") else None
    if value != ONE_CLICK:
        return html_page(
            "unsubscribe.html",
            status=400,
            state="bad",
            address=None,
            title="The request must carry List-Unsubscribe=One-Click",
        )
    await unsubscribe(request, campaign_id, recipient, via)
    return html_page(
        "unsubscribe.html", state="done", address=recipient, title="You are unsubscribed"
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/u/{token}", confirm_page)
    app.router.add_post("/u/{token}", one_click)
