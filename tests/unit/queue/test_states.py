"""The message-status transition table, checked cell by cell against a table written out here."""

from __future__ import annotations

import itertools

import pytest

from campaignd.errors import StoreError
from campaignd.queue import states
from campaignd.queue.tables import MESSAGE_STATUSES, RETRYABLE_STATUSES

# (operation, from, to) — every change a message row may make; anything else is refused.
EXPECTED = {
    ("enqueue", None, "queued"), ("enqueue", None, "skipped"), ("enqueue", None, "suppressed"),
    ("claim", "queued", "sending"), ("claim", "deferred", "sending"),
    ("start", "sending", "sending"),
    ("release", "sending", "queued"), ("release", "sending", "deferred"),
    ("outcome", "sending", "sent"), ("outcome", "sending", "deferred"),
    ("outcome", "sending", "failed"), ("outcome", "sending", "bounced"),
    ("outcome", "sending", "skipped"), ("outcome", "sending", "suppressed"),
    ("outcome", "uncertain", "sent"), ("outcome", "uncertain", "deferred"),
    ("outcome", "uncertain", "failed"), ("outcome", "uncertain", "bounced"),
    ("settle", "sending", "uncertain"),
    ("retry", "failed", "queued"), ("retry", "uncertain", "queued"),
    ("retry", "deferred", "queued"),
    ("feedback", "sent", "bounced"), ("feedback", "deferred", "bounced"),
    ("feedback", "uncertain", "bounced"), ("feedback", "failed", "bounced"),
    ("feedback", "bounced", "bounced"),
    ("feedback", "sent", "failed"), ("feedback", "deferred", "failed"),
    ("feedback", "uncertain", "failed"), ("feedback", "failed", "failed"),
}  # fmt: skip

CELLS = list(itertools.product(states.OPERATIONS, (None, *MESSAGE_STATUSES), MESSAGE_STATUSES))


@pytest.mark.parametrize(("operation", "source", "target"), CELLS)
def test_every_cell_of_the_table(operation: str, source: str | None, target: str) -> None:
    expected = (operation, source, target) in EXPECTED
    assert states.allowed(operation, source, target) is expected
    if expected:
        states.check(operation, source, target, message=7)
    else:
        with pytest.raises(states.TransitionError) as info:
            states.check(operation, source, target, message=7)
        err = info.value
        assert isinstance(err, StoreError)
        assert (err.operation, err.message, err.source, err.target) == (
            operation, 7, source, target,
        )  # fmt: skip
        assert f"may not make it {target}" in str(err)


def test_the_table_names_only_known_operations_and_statuses() -> None:
    assert {r.operation for r in states.TABLE} == set(states.OPERATIONS)
    for rule in states.TABLE:
        assert rule.targets <= set(MESSAGE_STATUSES)
        assert rule.sources <= {None, *MESSAGE_STATUSES}
    assert len(CELLS) == len(states.OPERATIONS) * 10 * 9


def test_sources_are_the_where_clause_of_each_update() -> None:
    assert states.sources("claim", "sending") == ("deferred", "queued")
    assert states.sources("outcome", "sent") == ("sending", "uncertain")
    assert states.sources("outcome", "skipped") == ("sending",)
    assert states.sources("enqueue", "queued") == ()  # only from "no row yet"
    assert states.sources("retry", "queued") == tuple(sorted(RETRYABLE_STATUSES))
    assert states.sources_any("feedback") == ("bounced", "deferred", "failed", "sent", "uncertain")
    assert states.targets("release") == {"queued", "deferred"}


def test_unknown_status_is_a_programming_error_not_a_transition() -> None:
    with pytest.raises(ValueError, match="not a message status"):
        states.check("outcome", "sending", "delivered")
    with pytest.raises(ValueError, match="not a message status"):
        states.sql_in(["queued", "x'); DROP TABLE messages; --"])
    assert states.sql_in(["queued", "deferred"]) == "'queued', 'deferred'"


def test_error_for_a_vanished_row_says_so() -> None:
    err = states.TransitionError("outcome", 5, None, "sent")
    assert "message 5 does not exist" in str(err)
    assert "only from sending, uncertain" in str(err)
