"""The global suppression list over HTTP (``campaignctl suppress …``), token-protected.

    GET    /api/suppressions?after=&limit=     a page, in address order
    GET    /api/suppressions.csv               everything, streamed (address, reason, source, …)
    POST   /api/suppressions                   {"addresses": [...], "reason": "..."} → added
    POST   /api/suppressions/import?reason=    a CSV (with an ``email`` column) or one address a
                                               line, streamed in batches → read/added/invalid
    DELETE /api/suppressions/{address}         removed or not

Reason, source and time are kept with every address; removing one is the operator's decision
(campaignd never removes a suppression by itself).
"""

from __future__ import annotations

import csv
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from .common import DAEMON, bad_request, json_response
from .csvlog import csv_lines, neutralise

__all__ = ["ImportParser", "add_routes", "valid_address"]

log = logging.getLogger("campaignd.api")

MAX_ADDRESS: Final = 320  # RFC 5321: 64 + 1 + 255
_ADDRESS: Final = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+")
BATCH: Final = 1000
SAMPLES: Final = 10
MAX_REASON: Final = 500


def valid_address(value: str) -> bool:
    return len(value) <= MAX_ADDRESS and _ADDRESS.fullmatch(value) is not None


@dataclass
class ImportParser:
    """Lines of an import file → addresses, fed one line at a time (constant memory).

    A first line with an ``email`` column makes it a CSV (that column is read); otherwise every
    line's first CSV field is an address. Blank lines and ``#`` comments are skipped.
    """

    read: int = 0
    invalid: int = 0
    samples: list[str] = field(default_factory=list)
    _column: int | None = None
    _line: int = 0
    _started: bool = False

    def feed(self, line: str) -> str | None:
        """The address on this line, or None (header, blank, comment or invalid)."""
        self._line += 1
        text = line.lstrip("\ufeff").strip()
        if not text or text.startswith("#"):
            return None
        try:
            cells = next(csv.reader([text]))
        except (csv.Error, StopIteration):
            cells = [text]
        if not self._started:  # the first line that says anything may be a header
            self._started = True
            names = [c.strip().lower() for c in cells]
            if "email" in names:
                self._column = names.index("email")
                return None
        index = self._column or 0
        address = cells[index].strip() if index < len(cells) else ""
        self.read += 1
        if not valid_address(address):
            self.invalid += 1
            if len(self.samples) < SAMPLES:
                self.samples.append(f"line {self._line}: {text[:100]!r}")
            return None
        return address


def _reason(raw: object, default: str) -> str:
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str) or len(raw) > MAX_REASON or "\x00" in raw:
        raise bad_request(f"reason must be text of at most {MAX_REASON} characters")
    return raw


async def list_page(request: web.Request) -> web.Response:
    store = request.app[DAEMON].store
    assert store is not None
    after = request.query.get("after") or None
    if after is not None and (len(after) > MAX_ADDRESS or "\x00" in after):
        raise bad_request("after must be an address from a previous page")
    try:
        limit = int(request.query.get("limit") or 1000)
    except ValueError:
        raise bad_request("limit must be a whole number") from None
    if not 1 <= limit <= 10000:
        raise bad_request("limit must be between 1 and 10000")
    rows = await store.list_suppressions(after=after, limit=limit)
    items = [r.as_dict() for r in rows]
    return json_response(
        {
            "suppressions": items,
            "next_after": items[-1]["key"] if len(items) == limit else None,
        }
    )


async def export_csv(request: web.Request) -> web.StreamResponse:
    store = request.app[DAEMON].store
    assert store is not None
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="suppressions.csv"',
        }
    )
    resp.enable_chunked_encoding()
    try:
        await resp.prepare(request)
        await resp.write(
            csv_lines([["email", "reason", "source", "campaign", "created_at"]]).encode()
        )
        after: str | None = None
        while True:
            rows = await store.list_suppressions(after=after, limit=BATCH)
            if rows:
                chunk = csv_lines(
                    [
                        neutralise(r.key),
                        neutralise(r.reason),
                        neutralise(r.source),
                        r.campaign_id or "",
                        r.as_dict()["created_at"] or "",
                    ]
                    for r in rows
                )
                await resp.write(chunk.encode())
            if len(rows) < BATCH:
                break
            after = rows[-1].key
        await resp.write_eof()
    except ConnectionResetError:
        # The client went away (even before the headers went out): nothing to answer.
        log.info("suppressions.csv: the client went away")
    return resp


async def add(request: web.Request) -> web.Response:
    store = request.app[DAEMON].store
    assert store is not None
    try:
        body = await request.json()
    except ValueError:
        raise bad_request('body must be JSON like {"addresses": ["ann@example.com"]}') from None
    addresses = body.get("addresses") if isinstance(body, dict) else None
    if (
        not isinstance(addresses, list)
        or not addresses
        or len(addresses) > BATCH
        or not all(isinstance(a, str) for a in addresses)
    ):
        raise bad_request(f"addresses must be a list of 1 to {BATCH} addresses")
    bad = [a for a in addresses if not valid_address(a.strip())]
    if bad:
        raise bad_request(f"not an email address: {', '.join(repr(b[:100]) for b in bad[:5])}")
    assert isinstance(body, dict)
    reason = _reason(body.get("reason"), "added by operator")
    added = await store.import_suppressions(
        [a.strip() for a in addresses], reason=reason, source="operator", at=time.time()
    )
    return json_response({"added": added, "already": len(set(addresses)) - added})


async def import_file(request: web.Request) -> web.Response:
    store = request.app[DAEMON].store
    assert store is not None
    reason = _reason(request.query.get("reason"), "imported")
    parser = ImportParser()
    added = 0
    batch: list[str] = []
    # Read line by line from the socket: an import of millions of lines never sits in memory
    # (client_max_size limits bodies read whole; this one is streamed on purpose).
    while True:
        try:
            raw = await request.content.readline()
        except ValueError:
            raise bad_request("a line of the import is too long (over 64 KiB)") from None
        if not raw:
            break
        address = parser.feed(raw.decode("utf-8", "replace"))
        if address is not None:
            batch.append(address)
        if len(batch) >= BATCH:
            added += await store.import_suppressions(batch, reason=reason, source="import")
            batch = []
    if batch:
        added += await store.import_suppressions(batch, reason=reason, source="import")
    return json_response(
        {
            "read": parser.read,
            "added": added,
            "invalid": parser.invalid,
            "invalid_samples": parser.samples,
        }
    )


async def remove(request: web.Request) -> web.Response:
    store = request.app[DAEMON].store
    assert store is not None
    address = request.match_info["address"].strip()
    if not valid_address(address):
        raise bad_request("not an email address")
    return json_response({"address": address, "removed": await store.unsuppress(address)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/suppressions", list_page)
    app.router.add_get("/api/suppressions.csv", export_csv)
    app.router.add_post("/api/suppressions", add)
    app.router.add_post("/api/suppressions/import", import_file)
    app.router.add_delete("/api/suppressions/{address}", remove)
