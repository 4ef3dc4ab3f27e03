"""What the ESP webhook mappers share: their errors, timestamps, and event building.

Each provider module verifies first and maps second; nothing is mapped from a request whose
signature did not check out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from ..errors import CampaigndError
from .event import DETAIL_LIMIT, FeedbackEvent, Kind, make_dedupe_key

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "BadPayload",
    "BadSignature",
    "EventBuilder",
    "bare_message_id",
    "header_lookup",
    "load_json",
    "parse_time",
    "text",
]


class BadSignature(CampaigndError, ValueError):
    """A webhook's signature, credentials or timestamp did not check out: answer 401."""


class BadPayload(CampaigndError, ValueError):
    """A correctly signed webhook whose body is not what the provider documents: answer 400."""


MAX_JSON_BYTES = 8 << 20
"""Largest webhook body parsed: providers batch well below this (the HTTP server's own
``client_max_size`` is usually the tighter bound)."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects parsed. Provider payloads nest about five levels;
CPython's parser recurses per level and fails near a thousand."""

# A JSON string, escapes included (unrolled so the regex engine never backtracks).
_JSON_STRING_B = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_STRING_S = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # every byte that is not a bracket
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_too_deep(body: bytes | str, limit: int) -> bool:
    """Whether arrays and objects in ``body`` nest deeper than ``limit``, found without
    parsing it: brackets inside strings do not count; linear and never recursive, so it can run
    on anything before ``json.loads`` does; stops at the first level past ``limit``.
    Malformed input gets an answer all the same (the parser then refuses it)."""
    if isinstance(body, str):
        data = _JSON_STRING_S.sub("", body).encode("utf-8", "surrogatepass")
    else:
        data = _JSON_STRING_B.sub(b"", body)
    brackets = data.translate(None, _BRACKETS)
    if len(brackets) <= limit:
        return False
    return any(depth > limit for depth in accumulate(_STEP[b] for b in brackets))


def load_json(
    body: bytes | str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """``json.loads(body)`` for a body from outside: ``BadPayload`` (answer 400) if it is not
    JSON, larger than ``max_bytes`` or nested deeper than ``max_depth`` — the last two checked
    before the parser sees it."""
    size = len(body.encode("utf-8", "surrogatepass")) if isinstance(body, str) else len(body)
    if size > max_bytes:
        raise BadPayload(f"webhook body is {size} bytes — more than the {max_bytes} accepted")
    if json_too_deep(body, max_depth):
        raise BadPayload(f"webhook body nests arrays/objects more than {max_depth} levels deep")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadPayload(f"webhook body is not JSON: {str(exc)[:200]}") from None


def text(data: Mapping[str, Any], key: str) -> str | None:
    """``data[key]`` when it is a non-empty string (or a number, which some providers send)."""
    value = data.get(key)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return value if isinstance(value, str) and value else None


def header_lookup(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by name, case-insensitively even in a plain dict."""
    if name in headers:
        return headers[name]
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def bare_message_id(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().strip("<>").strip()
    return value or None


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: object, default: datetime) -> datetime:
    """An epoch number or an ISO-8601 string as an aware datetime; ``default`` otherwise."""
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)) or (isinstance(value, str) and _is_number(value)):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            return default
    if not isinstance(value, str):
        return default
    # Postmark writes 7 fractional digits; Python reads at most 6.
    iso = _FRACTION.sub(r"\1", value.strip())
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return default
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


class EventBuilder:
    """Makes one webhook delivery's events, numbering them for stable dedupe keys.

    ``event_id`` is the provider's id for the event or the delivery (SNS MessageId, SendGrid
    sg_event_id, …): a provider retrying the same delivery sends the same id.
    """

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.events: list[FeedbackEvent] = []
        self._seen: dict[str, int] = {}

    def add(
        self,
        event_id: str,
        kind: Kind,
        *,
        recipient: str | None,
        at: datetime,
        message_id: str | None = None,
        message_ref: int | None = None,
        detail: str = "",
        status: str | None = None,
        permanent: bool = False,
    ) -> None:
        # Numbering within one provider event keeps the per-recipient events of one SES bounce
        # apart; the provider lists them in the same order every time it retries.
        n = self._seen.get(event_id, 0)
        self._seen[event_id] = n + 1
        self.events.append(
            FeedbackEvent(
                kind=kind,
                recipient=recipient,
                message_id=message_id,
                message_ref=message_ref,
                detail=detail[:DETAIL_LIMIT],
                status=status,
                permanent=permanent,
                at=at,
                source=self.provider,
                dedupe_key=make_dedupe_key("hook", self.provider, event_id, n, kind, recipient),
            )
        )
