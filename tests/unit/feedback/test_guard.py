"""feedback/guard.py: when a campaign's rates cross its guard, and what the reason says."""

from __future__ import annotations

import pytest

from campaignd.config.model import Guard
from campaignd.feedback.guard import guard_reason
from campaignd.queue.feedback import GuardCounts

GUARD = Guard(max_bounce_rate=0.05, max_complaint_rate=0.003, min_sample=200)


@pytest.mark.parametrize(
    ("sample", "bounced", "complained", "trips"),
    [
        (199, 199, 199, None),  # below min_sample nothing trips, however bad
        (200, 10, 0, None),  # exactly 5 %: not above
        (200, 11, 0, "bounce rate 5.5% (11 of 200 messages)"),
        (1000, 0, 3, None),  # exactly 0.3 %
        (1000, 0, 4, "complaint rate 0.4% (4 of 1000 messages)"),
        (1000, 100, 4, "complaint rate"),  # complaints are named first
        (0, 0, 0, None),
    ],
)
def test_thresholds(sample: int, bounced: int, complained: int, trips: str | None) -> None:
    reason = guard_reason("q4", GUARD, GuardCounts(sample, bounced, complained))
    if trips is None:
        assert reason is None
    else:
        assert reason is not None and trips in reason


def test_the_reason_says_what_to_do() -> None:
    reason = guard_reason("q4", GUARD, GuardCounts(400, 40, 0))
    assert reason is not None
    assert reason.startswith("auto-paused by its guard: bounce rate 10%")
    assert "max_bounce_rate 5%" in reason
    assert "campaignctl log q4 --status bounced" in reason
    assert "campaigns.d/q4.yaml" in reason
