"""Open pixel ``GET /o/{token}`` and click redirect ``GET /c/{token}`` (SPEC §5, §7).

Both tokens are signed (``links.LinkSigner``) and name the message by its Message-ID; a click
token also carries its target, so ``/c/`` redirects only where the campaign's own HTML linked —
never an open redirect, never a ``javascript:`` URL. Each message counts ``opened`` and
``clicked`` once (the events are deduplicated per message); a click also counts as an open,
since most readers block images. HEAD requests (link checkers) record nothing.
"""

from __future__ import annotations

import base64
import time
from typing import Final

from aiohttp import web
from yarl import URL

from ..queue.rows import EventIn, MessageRow
from ..tokens.links import BadToken, MessageRef
from .common import DAEMON
from .unsubscribe import signer_of

__all__ = ["PIXEL", "add_routes"]

PIXEL: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
"""A transparent 1×1 GIF (43 bytes)."""
_NO_CACHE: Final = {"Cache-Control": "no-store, private", "Pragma": "no-cache"}


async def _message(request: web.Request, ref: MessageRef) -> MessageRow | None:
    store = request.app[DAEMON].store
    assert store is not None
    if isinstance(ref, int):
        return await store.get_message(ref)
    return await store.find_by_message_id(ref)


async def _record(request: web.Request, row: MessageRow, kind: str, detail: str | None) -> None:
    store = request.app[DAEMON].store
    assert store is not None
    new = await store.add_event(
        EventIn(
            kind=kind,
            source="tracking",
            at=time.time(),
            campaign_id=row.campaign_id,
            message=row.id,
            recipient=row.recipient,
            detail=detail,
            dedupe=f"{kind}:{row.id}",
        )
    )
    if new:
        request.app[DAEMON].stats.feedback_event(kind, "tracking")


async def pixel(request: web.Request) -> web.Response:
    try:
        ref = signer_of(request).verify_open(request.match_info["token"])
    except BadToken:
        return web.Response(status=400, text="not a valid link\n", headers=_NO_CACHE)
    if request.method == "GET" and (row := await _message(request, ref)) is not None:
        await _record(request, row, "opened", None)
    return web.Response(body=PIXEL, content_type="image/gif", headers=_NO_CACHE)


async def click(request: web.Request) -> web.Response:
    try:
        ref, target = signer_of(request).verify_click(request.match_info["token"])
        location = str(URL(target))  # percent-encoded, IDN hosts as A-labels: a valid header
    except (BadToken, ValueError):
        return web.Response(status=400, text="not a valid link\n", headers=_NO_CACHE)
    if request.method == "GET" and (row := await _message(request, ref)) is not None:
        await _record(request, row, "opened", "inferred from a click")
        await _record(request, row, "clicked", target[:2000])
    # Still redirected when the message's records were deleted: the target is signed.
    return web.Response(status=302, headers={"Location": location, **_NO_CACHE})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/o/{token}", pixel)
    app.router.add_get("/c/{token}", click)
