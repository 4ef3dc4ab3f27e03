from campaignd.delivery.breaker import Breaker


def test_opens_after_threshold_and_probes_after_cooldown() -> None:
    b = Breaker(threshold=3, base_cooldown=10, max_cooldown=40)
    assert b.allows(0)
    assert not b.failure(1, "refused")
    assert not b.failure(2, "refused")
    assert b.failure(3, "connection refused by 127.0.0.1:2526")
    assert b.state(4) == "open" and not b.allows(4)
    assert b.snapshot(4)["reason"] == "connection refused by 127.0.0.1:2526"
    assert b.state(13) == "half-open"
    assert b.allows(13)  # the one probe
    assert not b.allows(13)  # nobody else while it runs
    assert b.failure(14, "still refused")  # probe failed: open again, longer
    assert b.cooldown == 20 and b.state(30) == "open" and b.state(34) == "half-open"
    assert b.allows(34)
    b.success()
    assert b.state(35) == "closed" and b.allows(35) and b.failures == 0 and b.cooldown == 10


def test_cooldown_is_capped() -> None:
    b = Breaker(threshold=1, base_cooldown=10, max_cooldown=25)
    t = 0.0
    b.failure(t, "x")
    for _ in range(5):
        t = b.retry_at() or t
        assert b.allows(t)
        b.failure(t, "x")
    assert b.cooldown == 25


def test_success_resets_the_count() -> None:
    b = Breaker(threshold=2)
    b.failure(0, "x")
    b.success()
    assert not b.failure(1, "x")
    assert b.state(1) == "closed"
