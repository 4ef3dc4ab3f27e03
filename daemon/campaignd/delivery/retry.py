"""When to try a temporarily failed message again — decided in one place (like Mailman).

Pure: exponential backoff from ``retry.backoff`` doubling per attempt, capped at ``max_backoff``,
with ±10 % jitter so a burst of deferrals does not return as a burst; ``None`` once
``give_up_after`` has passed since the first attempt.
"""

from __future__ import annotations

import random

from ..config.model import RetryPolicy


def next_retry(
    policy: RetryPolicy,
    *,
    attempts: int,
    first_attempt_at: float,
    now: float,
    rng: random.Random | None = None,
) -> float | None:
    """The epoch time of the next attempt, or None when the message should fail for good."""
    deadline = first_attempt_at + policy.give_up_after.total_seconds()
    if now >= deadline:
        return None
    base = policy.backoff.total_seconds()
    exponent = max(0, min(attempts - 1, 30))  # 2**30 × any backoff is beyond every cap
    delay = min(base * (2**exponent), policy.max_backoff.total_seconds())
    jitter = (rng or random).uniform(-0.1, 0.1) * delay
    at = now + max(1.0, delay + jitter)
    # The last retry lands on the deadline rather than past it, so give_up_after is honoured.
    return float(min(at, deadline) if at > deadline and now < deadline - 1 else at)
