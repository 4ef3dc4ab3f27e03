"""The values the store takes and returns: frozen dataclasses, never database rows.

Times are float epoch seconds (UTC); ``as_dict`` renders them as ISO-8601 for JSON and CSV.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol

from .tables import EVENT_COLUMNS, MESSAGE_STATUSES, OUTCOME_STATUSES

EVENT_COUNTERS = ("opened", "clicked", "replied", "unsubscribed", "complained")
"""Counters kept beside the statuses (a message counts once per kind)."""


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def _as_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = iso(value) if f.name.endswith(("_at", "_until")) else value
    return out


def normalize_key(key: str) -> str:
    """A recipient key as the suppression list compares it: case and surrounding space do not
    make another person."""
    return key.strip().lower()


@dataclass(frozen=True, slots=True)
class RecipientIn:
    """One audience row as enrollment stores it; later drip steps render from it."""

    key: str
    email: str
    smtp_address: str
    domain: str
    fields: Mapping[str, str] = field(hash=False)
    source: str
    timezone: str | None = None


class AudienceRow(Protocol):
    """What enrollment stores of an audience row: ``RecipientIn``, or the audience reader's
    own row type handed over as it is (no copy per row)."""

    @property
    def key(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def smtp_address(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def fields(self) -> Mapping[str, str]: ...
    @property
    def source(self) -> str: ...
    @property
    def timezone(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ExclusionIn:
    """A list row enrollment records without enrolling it: its recipient row (under its
    address key, or an exclusion key for invalid and duplicate rows — ``accounting``) and
    the step-1 message that says why."""

    recipient: RecipientIn
    template: str
    status: str
    """``skipped`` or ``suppressed``."""
    excluded: str
    """``invalid``, ``duplicate``, ``filtered`` or ``suppressed``."""
    reason: str
    """For the operator, kept as the message's ``last_error``."""


@dataclass(frozen=True, slots=True)
class CampaignRow:
    id: str
    state: str
    reason: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    last_edition: int | None
    last_fired_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message leased to one worker, with everything needed to render and send it."""

    id: int
    campaign_id: str
    edition: int
    step: int
    template: str
    attempts: int
    """Including this one."""
    first_attempt_at: float | None
    recipient: str
    email: str
    smtp_address: str
    domain: str
    fields: Mapping[str, str] = field(hash=False)
    timezone: str | None
    suppressed: bool = False
    """On the suppression list when claimed: read in the claim's own transaction, so the
    dispatcher needs no second round trip to the database per batch."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How one claimed message ended (or why it waits); ``record`` applies it atomically."""

    id: int
    status: str
    at: float
    service: str | None = None
    message_id: str | None = None
    error: str | None = None
    code: int | None = None
    enhanced: str | None = None
    next_attempt_at: float | None = None
    """Required for ``deferred``: when to try again."""
    suppress: bool = False
    """Put the recipient on the global suppression list (a hard bounce)."""
    reason: str | None = None
    """Why, for the suppression list and the event; defaults to ``error``."""
    source: str | None = None
    """Who decided (event source); defaults to the service, else ``dispatcher``."""

    def __post_init__(self) -> None:
        if self.status not in OUTCOME_STATUSES:
            raise ValueError(
                f"message {self.id}: outcome status {self.status!r} is not one of "
                f"{', '.join(sorted(OUTCOME_STATUSES))}"
            )
        if self.status == "deferred" and self.next_attempt_at is None:
            raise ValueError(f"message {self.id}: a deferred outcome needs next_attempt_at")


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: int
    campaign_id: str
    edition: int
    step: int
    recipient: str
    email: str | None
    """The address as the list spelled it (None if the recipient row is gone)."""
    template: str
    status: str
    attempts: int
    service: str | None
    message_id: str | None
    last_error: str | None
    last_code: int | None
    last_enhanced: str | None
    next_attempt_at: float | None
    claimed_by: str | None
    claimed_until: float | None
    created_at: float
    updated_at: float
    first_attempt_at: float | None
    sent_at: float | None
    opened_at: float | None
    clicked_at: float | None
    replied_at: float | None
    unsubscribed_at: float | None
    complained_at: float | None
    bounced_at: float | None
    excluded: str | None = None
    """Why enrollment recorded this row without enrolling it (``invalid``, ``duplicate``,
    ``filtered``, ``suppressed``); None for an enrolled recipient's message."""
    source: str | None = None
    """The list row the recipient came from (``lists/a.csv:12``)."""

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self)


AUDIENCE_KEYS = ("rows", "invalid", "duplicates", "filtered", "suppressed", "enrolled")
"""The ``audience`` block of a campaign summary: list rows recorded at enrollment (step 1 of
every edition), by what became of them."""
_AUDIENCE_OF = {"invalid": "invalid", "duplicate": "duplicates", "filtered": "filtered",
                "suppressed": "suppressed"}  # fmt: skip


def _zero() -> dict[str, int]:
    return dict.fromkeys(("total", *MESSAGE_STATUSES, *EVENT_COUNTERS), 0)


@dataclass(frozen=True, slots=True)
class CampaignCounts:
    """Messages per status and event counters, overall and per step and template.

    Every group has the same keys: ``total``, each status, each of ``EVENT_COUNTERS``.
    """

    total: int
    counts: Mapping[str, int]
    """Statuses and event counters of the whole campaign (no ``total`` key)."""
    by_step: Mapping[int, Mapping[str, int]]
    by_template: Mapping[str, Mapping[str, int]]
    audience: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(AUDIENCE_KEYS, 0))
    """``AUDIENCE_KEYS`` → rows (see ``audience_of``)."""

    @staticmethod
    def audience_of(step_one: list[tuple[str | None, int]]) -> dict[str, int]:
        """The audience block from (excluded kind or None, step-1 messages) groups."""
        out = dict.fromkeys(AUDIENCE_KEYS, 0)
        for kind, n in step_one:
            out["rows"] += n
            out[_AUDIENCE_OF.get(kind, "enrolled") if kind else "enrolled"] += n
        return out

    @classmethod
    def tally(
        cls,
        rows: list[tuple[int, str, str, int, dict[str, int]]],
        *,
        audience: Mapping[str, int] | None = None,
    ) -> CampaignCounts:
        """From (step, template, status, messages, event counters) groups."""
        whole = _zero()
        by_step: dict[int, dict[str, int]] = {}
        by_template: dict[str, dict[str, int]] = {}
        for step, template, status, n, counters in rows:
            for group in (
                whole,
                by_step.setdefault(step, _zero()),
                by_template.setdefault(template, _zero()),
            ):
                group["total"] += n
                group[status] = group.get(status, 0) + n
                for kind, c in counters.items():
                    group[kind] += c
        total = whole.pop("total")
        return cls(
            total=total,
            counts=whole,
            by_step=dict(sorted(by_step.items())),
            by_template=dict(sorted(by_template.items())),
            audience=dict(audience) if audience is not None else dict.fromkeys(AUDIENCE_KEYS, 0),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``total``, ``counts``, ``by_step`` (keys as strings), ``by_template``,
        ``audience``."""
        return {
            "total": self.total,
            "counts": dict(self.counts),
            "by_step": {str(k): dict(v) for k, v in self.by_step.items()},
            "by_template": {k: dict(v) for k, v in self.by_template.items()},
            "audience": dict(self.audience),
        }


@dataclass(frozen=True, slots=True)
class SuppressionRow:
    key: str
    reason: str
    source: str
    campaign_id: str | None
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventIn:
    """One piece of feedback (or an operator action), applied once per ``dedupe`` key.

    With ``message`` set, kinds in ``EVENT_COLUMNS`` also stamp that message's first-seen time
    and ``status`` (e.g. ``bounced`` after a DSN) changes the message's status; ``suppress`` puts
    ``recipient`` (default: the message's) on the suppression list — all in the same
    transaction as the event.
    """

    kind: str
    source: str
    at: float
    campaign_id: str | None = None
    message: int | None = None
    """The messages table row id."""
    recipient: str | None = None
    detail: str | None = None
    code: int | None = None
    enhanced: str | None = None
    service: str | None = None
    dedupe: str | None = None
    suppress: bool = False
    status: str | None = None

    def __post_init__(self) -> None:
        if self.suppress and not self.recipient and self.message is None:
            raise ValueError(
                f"{self.kind} event from {self.source}: suppress needs a recipient or a message"
            )
        if self.status is not None and self.status not in MESSAGE_STATUSES:
            raise ValueError(f"{self.kind} event: {self.status!r} is not a message status")


__all__ = [
    "AUDIENCE_KEYS",
    "EVENT_COLUMNS",
    "EVENT_COUNTERS",
    "CampaignCounts",
    "CampaignRow",
    "Claimed",
    "EventIn",
    "ExclusionIn",
    "MessageRow",
    "Outcome",
    "RecipientIn",
    "SuppressionRow",
    "iso",
]
