import random
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from campaignd.config.model import RetryPolicy
from campaignd.delivery.retry import next_retry

POLICY = RetryPolicy()  # 5m doubling to 4h, give up after 2d


def test_doubles_then_caps() -> None:
    rng = random.Random(1)
    delays = []
    for attempt in range(1, 10):
        at = next_retry(POLICY, attempts=attempt, first_attempt_at=0, now=1000, rng=rng)
        assert at is not None
        delays.append(at - 1000)
    assert 270 <= delays[0] <= 330  # 5 min ± 10 %
    assert 540 <= delays[1] <= 660
    assert all(d <= 4 * 3600 * 1.1 for d in delays)
    assert delays[-1] >= 4 * 3600 * 0.9


def test_gives_up_after_the_deadline() -> None:
    two_days = 2 * 86400
    assert next_retry(POLICY, attempts=3, first_attempt_at=0, now=two_days) is None
    assert next_retry(POLICY, attempts=3, first_attempt_at=0, now=two_days - 10) is not None


@given(
    attempts=st.integers(1, 200),
    elapsed=st.floats(0, 3 * 86400),
    backoff=st.integers(1, 3600),
)
def test_always_in_the_future_and_never_beyond_the_cap(
    attempts: int, elapsed: float, backoff: int
) -> None:
    policy = RetryPolicy(
        backoff=timedelta(seconds=backoff),
        max_backoff=timedelta(seconds=backoff * 8),
        give_up_after=timedelta(days=2),
    )
    at = next_retry(
        policy, attempts=attempts, first_attempt_at=0, now=elapsed, rng=random.Random(0)
    )
    if elapsed >= 2 * 86400:
        assert at is None
    else:
        assert at is not None
        assert at > elapsed
        assert at - elapsed <= max(1.0, backoff * 8 * 1.1)
