"""Parsers for the shared value syntax of SPEC §2: durations, rates, percentages, hours.

Pure functions that raise ``ValueError`` with a message an operator can act on; the pydantic
models wrap them as annotated types so the same rules hold in validation and in JSON Schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_ISO_RE = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(value: Any) -> timedelta:
    """``30s``, ``5m``, ``2h``, ``3d``, ``2w`` or ISO-8601 ``P3D``; a bare number is seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 2h, 3d, 2w or P3D")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError("expected a duration like 30s, 5m, 2h, 3d, 2w or P3D")
    text = value.strip()
    m = _DURATION_RE.match(text)
    if m:
        return timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2)])
    iso = _ISO_RE.match(text.upper())
    if iso and text.upper() not in ("P", "PT"):
        parts = {k: float(v) for k, v in iso.groupdict().items() if v}
        if parts:
            return timedelta(
                weeks=parts.get("w", 0),
                days=parts.get("d", 0),
                hours=parts.get("h", 0),
                minutes=parts.get("m", 0),
                seconds=parts.get("s", 0),
            )
    raise ValueError(
        f"{value!r} is not a duration — write it as 30s, 5m, 2h, 3d, 2w or ISO-8601 like P3D"
    )


def format_duration(td: timedelta) -> str:
    seconds = int(td.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_RATE_UNITS = {
    "second": 1,
    "sec": 1,
    "s": 1,
    "minute": 60,
    "min": 60,
    "m": 60,
    "hour": 3600,
    "h": 3600,
    "day": 86400,
    "d": 86400,
}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")
_BURST_RE = re.compile(r"^\s*(\d+\s*/\s*[a-z]+)\s+burst\s+(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` messages per ``per_seconds``: as a pace, one every ``interval`` seconds after
    up to ``burst`` back to back (SPEC §2); as a quota, at most ``count`` in any window."""

    count: int
    per_seconds: int
    burst: int = 1

    def __str__(self) -> str:
        names = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
        text = f"{self.count}/{names.get(self.per_seconds, f'{self.per_seconds}s')}"
        return text if self.burst == 1 else f"{text} burst {self.burst}"

    @property
    def per_day(self) -> float:
        return self.count * 86400 / self.per_seconds

    @property
    def interval(self) -> float:
        """Seconds between two messages at this pace."""
        return self.per_seconds / self.count


def _rate_out(rate: Rate) -> str | dict[str, Any]:
    """The YAML/JSON spelling: a plain ``N/period`` unless a burst was given."""
    if rate.burst == 1:
        return str(rate)
    return {"limit": str(replace(rate, burst=1)), "burst": rate.burst}


def parse_rate(value: Any) -> Rate:
    if isinstance(value, Rate):
        return value
    if isinstance(value, dict):
        # ``{limit: 4/minute, burst: 4}``: the limit's own spelling, plus back-to-back starts.
        extra = set(value) - {"limit", "burst"}
        if "limit" not in value or extra:
            raise ValueError(
                f"{value!r} is not a rate — write {{limit: 4/minute, burst: 4}} "
                "(only the keys limit and burst)"
            )
        base = parse_rate(value["limit"])
        burst = value.get("burst", 1)
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"{value!r}: a rate's burst must be a whole number ≥ 1")
        return replace(base, burst=burst)
    if isinstance(value, str):
        m = _RATE_RE.match(value.lower())
        if m and m.group(2) in _RATE_UNITS:
            count = int(m.group(1))
            if count <= 0:
                raise ValueError(f"{value!r}: a rate must allow at least 1 message")
            return Rate(count, _RATE_UNITS[m.group(2)])
        # str(Rate) of a burst rate reads back: "4/minute burst 4"
        b = _BURST_RE.match(value.lower())
        if b:
            return parse_rate({"limit": b.group(1), "burst": int(b.group(2))})
    raise ValueError(
        f"{value!r} is not a rate — write N/second, N/minute, N/hour or N/day (e.g. 14/second)"
    )


def parse_rates(value: Any) -> tuple[Rate, ...]:
    """A single rate or a list of rates; all of them must hold."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(parse_rate(v) for v in items)


def parse_percent(value: Any) -> float:
    """``5%`` → 0.05; a bare number ≤ 1 is taken as a fraction."""
    if isinstance(value, bool):
        raise ValueError("expected a percentage like 5% or 0.3%")
    if isinstance(value, int | float):
        frac = float(value) if value <= 1 else float(value) / 100
    elif isinstance(value, str) and value.strip().endswith("%"):
        try:
            frac = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage — write it like 5% or 0.3%") from None
    else:
        raise ValueError(f"{value!r} is not a percentage — write it like 5% or 0.3%")
    if not 0 <= frac <= 1:
        raise ValueError(f"{value!r} must be between 0% and 100%")
    return frac


@dataclass(frozen=True, slots=True)
class Hours:
    """A daily time range; ``end <= start`` runs past midnight (``00:00-24:00`` is all day)."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


_HOURS_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_hours(value: Any) -> Hours:
    if isinstance(value, Hours):
        return value
    if isinstance(value, str):
        m = _HOURS_RE.match(value)
        if m:
            h1, m1, h2, m2 = (int(g) for g in m.groups())
            if h1 <= 24 and h2 <= 24 and m1 < 60 and m2 < 60:
                start = time(0, 0) if h1 == 24 else time(h1, m1)
                end = time(0, 0) if h2 == 24 else time(h2, m2)
                if start == end and 24 not in (h1, h2):
                    raise ValueError(f"{value!r} is an empty range — use 00:00-24:00 for all day")
                return Hours(start, end)
    raise ValueError(f'{value!r} is not a range of hours — write it quoted, like "10:00-14:00"')


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not an IANA time zone — use a name like Europe/Berlin or UTC"
        ) from None
    return name


_SCHEMA_DURATION = {
    "type": "string",
    "pattern": r"^(\d+(\.\d+)?\s*[smhdw]|P.*)$",
    "description": "duration: 30s, 5m, 2h, 3d, 2w or ISO-8601 (P3D)",
}
_SCHEMA_RATE_TEXT = {
    "type": "string",
    "pattern": r"^\d+\s*/\s*(second|sec|s|minute|min|m|hour|h|day|d)$",
    "description": "rate: N/second, N/minute, N/hour, N/day",
}
_SCHEMA_RATE = {
    "anyOf": [
        _SCHEMA_RATE_TEXT,
        {
            "type": "object",
            "properties": {"limit": _SCHEMA_RATE_TEXT, "burst": {"type": "integer", "minimum": 1}},
            "required": ["limit"],
            "additionalProperties": False,
            "description": "a pace that allows `burst` messages back to back first",
        },
    ]
}

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_SCHEMA_DURATION),
]
RateT = Annotated[
    Rate,
    BeforeValidator(parse_rate),
    PlainSerializer(_rate_out),
    WithJsonSchema(_SCHEMA_RATE),
]
Rates = Annotated[
    tuple[Rate, ...],
    BeforeValidator(parse_rates),
    PlainSerializer(lambda rs: [_rate_out(r) for r in rs]),
    WithJsonSchema(
        {
            "anyOf": [_SCHEMA_RATE, {"type": "array", "items": _SCHEMA_RATE}],
            "description": "one rate or a list of rates that must all hold",
        }
    ),
]
Percent = Annotated[
    float,
    BeforeValidator(parse_percent),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?%$", "description": "like 5%"}),
]
HoursT = Annotated[
    Hours,
    BeforeValidator(parse_hours),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,2}:\d{2}-\d{1,2}:\d{2}$"}),
]
TimeZoneName = Annotated[
    str, BeforeValidator(lambda v: check_timezone(v) if isinstance(v, str) else v)
]
