"""Where a message row may go from where it is: the one table of status changes.

Every store update that changes a message's status names its operation here and takes its
``WHERE status IN (…)`` from ``sources``, so the database itself refuses a row that is not in a
state the operation may leave; the store turns such a refusal into ``TransitionError`` (never a
silent write, never a silent no-op). Pure data and functions: no I/O, importable anywhere.

The operations, in the life of a message::

    enqueue   (new)                       → queued | skipped | suppressed
    claim     queued | deferred           → sending        (attempt counted, lease taken)
    start     sending                     → sending        (service set: SMTP is about to begin)
    release   sending                     → queued | deferred   (handed back, attempt undone)
    outcome   sending                     → sent | deferred | failed | bounced
                                            | skipped | suppressed
    outcome   uncertain                   → sent | deferred | failed | bounced
    settle    sending                     → uncertain      (its worker died or stopped mid-send)
    retry     failed | uncertain | deferred → queued       (the operator's decision)
    feedback  sent | deferred | uncertain | failed → bounced | failed   (a DSN, a policy bounce)
    feedback  bounced                     → bounced

An ``uncertain`` row accepts a late outcome because that outcome is the truth the row lacked:
the worker it was taken from turned out to be alive and heard the server's reply.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from ..errors import StoreError
from .tables import MESSAGE_STATUSES

Operation = Literal[
    "enqueue", "claim", "start", "release", "outcome", "settle", "retry", "feedback"
]
OPERATIONS: Final[tuple[Operation, ...]] = (
    "enqueue", "claim", "start", "release", "outcome", "settle", "retry", "feedback",
)  # fmt: skip
NEW: Final = None
"""The source of ``enqueue``: the row does not exist yet."""


@dataclass(frozen=True, slots=True)
class Rule:
    operation: Operation
    sources: frozenset[str | None]
    targets: frozenset[str]


def _rule(op: Operation, sources: Iterable[str | None], targets: Iterable[str]) -> Rule:
    return Rule(op, frozenset(sources), frozenset(targets))


TABLE: Final[tuple[Rule, ...]] = (
    _rule("enqueue", [NEW], ["queued", "skipped", "suppressed"]),
    _rule("claim", ["queued", "deferred"], ["sending"]),
    _rule("start", ["sending"], ["sending"]),
    _rule("release", ["sending"], ["queued", "deferred"]),
    _rule(
        "outcome", ["sending"], ["sent", "deferred", "failed", "bounced", "skipped", "suppressed"]
    ),
    _rule("outcome", ["uncertain"], ["sent", "deferred", "failed", "bounced"]),
    _rule("settle", ["sending"], ["uncertain"]),
    _rule("retry", ["failed", "uncertain", "deferred"], ["queued"]),
    _rule("feedback", ["sent", "deferred", "uncertain", "failed"], ["bounced", "failed"]),
    _rule("feedback", ["bounced"], ["bounced"]),
)

_ALLOWED: Final[frozenset[tuple[Operation, str | None, str]]] = frozenset(
    (rule.operation, source, target)
    for rule in TABLE
    for source in rule.sources
    for target in rule.targets
)


class TransitionError(StoreError):
    """A status change the table does not allow was asked for; nothing was written."""

    def __init__(self, operation: str, message: int | None, source: str | None, target: str):
        self.operation = operation
        self.message = message
        self.source = source
        self.target = target
        where = "a new message" if message is None else f"message {message}"
        now = "does not exist" if source is None and message is not None else f"is {source}"
        allowed = ", ".join(str(s) for s in sources(operation, target)) or "nowhere"
        super().__init__(
            f"{where} {now}: {operation} may not make it {target} (only from {allowed}) — "
            "another worker or an operator changed it first; nothing was written"
        )


class ClaimLost(StoreError):
    """``start`` for a row another worker holds now: this worker's claim was released (its
    heartbeat was taken for dead) and the row claimed again. Sending it would send it twice."""

    def __init__(self, message: int, worker: str, holder: str | None) -> None:
        self.message = message
        super().__init__(
            f"message {message} is held by {holder or 'nobody'}, not {worker}: this daemon's "
            "claim was released meanwhile (missed heartbeats?) — it is not sent from here"
        )


def allowed(operation: str, source: str | None, target: str) -> bool:
    return (operation, source, target) in _ALLOWED


def check(operation: str, source: str | None, target: str, *, message: int | None = None) -> None:
    """Raise ``TransitionError`` unless ``operation`` may move a row from ``source`` to
    ``target``."""
    if target not in MESSAGE_STATUSES:
        raise ValueError(f"{target!r} is not a message status — one of {MESSAGE_STATUSES}")
    if not allowed(operation, source, target):
        raise TransitionError(operation, message, source, target)


def sources(operation: str, target: str) -> tuple[str, ...]:
    """The existing statuses ``operation`` may move to ``target``, sorted: the ``WHERE status
    IN (…)`` of its UPDATE."""
    return tuple(
        sorted(s for (op, s, t) in _ALLOWED if op == operation and t == target and s is not None)
    )


def targets(operation: str) -> frozenset[str]:
    return frozenset(t for (op, _, t) in _ALLOWED if op == operation)


def sources_any(operation: str) -> tuple[str, ...]:
    """Every status ``operation`` may leave (whatever its target), sorted."""
    return tuple(sorted({s for (op, s, _) in _ALLOWED if op == operation and s is not None}))


def sql_in(values: Iterable[str]) -> str:
    """``'a', 'b'`` for a constant ``IN (…)`` in hand-written SQL; the values come from this
    table only (statuses are identifiers, never user input)."""
    out = []
    for v in values:
        if v not in MESSAGE_STATUSES:
            raise ValueError(f"{v!r} is not a message status")
        out.append(f"'{v}'")
    return ", ".join(out)
