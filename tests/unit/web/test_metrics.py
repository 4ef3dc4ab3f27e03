"""observe.py and web/metrics.py: what the dispatcher records, and the exposition built from a
snapshot — names, values, histogram buckets, and labels that never name a recipient."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from campaignd.stats import DeliveryStats, Histogram, RateMeter, reply_class
from campaignd.web.metrics import (
    CampaignSample,
    LimitSample,
    ServiceSample,
    Snapshot,
    make_registry,
    render,
)


@dataclass(frozen=True)
class Out:
    status: str
    service: str | None
    code: int | None
    error: str | None
    at: float


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize(
    ("code", "labels"),
    [(250, ("2xx", "250")), (421, ("4xx", "421")), (550, ("5xx", "550")), (None, ("none", "none")),
     (999, ("none", "none")), (0, ("none", "none"))],
)  # fmt: skip
def test_reply_classes_are_a_bounded_set(code: int | None, labels: tuple[str, str]) -> None:
    assert reply_class(code) == labels


def test_histogram_is_cumulative_with_inf() -> None:
    h = Histogram(bounds=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert h.count == 4 and h.total == pytest.approx(3.65)


def test_rate_meter_measures_the_recent_rate() -> None:
    meter = RateMeter(window=300, bucket=10)
    assert meter.rate(1000.0) is None
    for i in range(100):  # 10 per second for 10 s
        meter.add(1000.0 + i / 10)
    assert meter.rate(1010.0) == pytest.approx(10.0, rel=0.02)  # not diluted by the window
    assert meter.rate(1200.0) == pytest.approx(100 / 200, rel=0.05)  # idle time counts
    assert meter.rate(1400.0) is None  # nothing in the last five minutes
    for t in range(2000, 4000):  # a long steady run: one per second
        meter.add(float(t))
    assert meter.rate(4000.0) == pytest.approx(1.0, rel=0.05)
    assert len(meter.buckets) <= 32  # constant memory, whatever the rate


def test_delivery_stats_count_outcomes_replies_latency_and_errors() -> None:
    stats = DeliveryStats()
    stats.attempt("launch", "ann@example.com", Out("sent", "ses", 250, None, 100.0), 0.2)
    stats.attempt(
        "launch", "bob@example.com", Out("deferred", "ses", 451, "451 4.7.1 later", 101.0), 0.4
    )
    stats.attempt(
        "launch", "cy@example.com", Out("failed", None, None, "template x: field y", 102.0), 0.01
    )
    assert stats.outcomes == {
        ("launch", "ses", "sent"): 1,
        ("launch", "ses", "deferred"): 1,
        ("launch", "none", "failed"): 1,
    }
    assert stats.replies[("ses", "4xx", "451")] == 1
    assert stats.latency["ses"].count == 2
    notes = stats.last_errors("launch")
    assert [n.recipient for n in notes] == ["cy@example.com", "bob@example.com"]  # newest first
    assert stats.send_rate("launch", 101.0) == pytest.approx(1.0)
    assert stats.send_rate("other", 101.0) is None
    for i in range(10):
        stats.attempt("launch", f"r{i}@x", Out("failed", "ses", 550, "550 no", 200.0 + i), 0.1)
    assert len(stats.last_errors("launch")) == 5


def snapshot() -> Snapshot:
    return Snapshot(
        version="9.9",
        run_state="running",
        started_at=1000.0,
        generation=3,
        loaded_at=1100.0,
        problems={"error": 2},
        campaigns=(
            CampaignSample(
                id="launch",
                state="sending",
                statuses={"queued": 5, "sent": 10, "deferred": 1},
                events={"opened": 4, "unsubscribed": 1},
                next_due=1234.5,
                send_rate=2.5,
            ),
        ),
        services=(
            ServiceSample("ses", 2, 4, 10, 3, 112, "open", 3),
            ServiceSample("mailgun", 0, 2, 0, None, None, "closed", 0),
        ),
        limits=(
            LimitSample("service", "ses", "14/second", 3, 14),
            LimitSample("domain", "ses/gmail.com", "100/minute", 7, 100),
            LimitSample("campaign", "launch", "20/minute", 9, 20),
        ),
    )


def test_exposition_from_snapshot_and_counters() -> None:
    stats = DeliveryStats()
    stats.attempt("launch", "ann@example.com", Out("sent", "ses", 250, None, 100.0), 0.2)
    stats.attempt(
        "launch", "bob@example.com", Out("bounced", "ses", 550, "550 5.1.1 x", 101.0), 3.0
    )
    stats.feedback_event("opened", "tracking")
    registry, collector = make_registry(stats)
    text = render(registry, collector, snapshot()).decode()
    got = samples(text)

    def v(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert v("campaignd_build_info", version="9.9") == 1
    assert v("campaignd_config_generation") == 3
    assert v("campaignd_config_problems", severity="error") == 2
    assert v("campaignd_config_problems", severity="warning") == 0
    assert v("campaignd_campaign_state", campaign="launch", state="sending") == 1
    assert v("campaignd_campaign_state", campaign="launch", state="paused") == 0
    assert v("campaignd_campaign_messages", campaign="launch", status="sent") == 10
    assert v("campaignd_campaign_events", campaign="launch", kind="unsubscribed") == 1
    assert v("campaignd_queue_depth", campaign="launch") == 6
    assert v("campaignd_queue_next_due_timestamp_seconds", campaign="launch") == 1234.5
    assert v("campaignd_campaign_send_rate", campaign="launch") == 2.5
    assert v("campaignd_messages_total", campaign="launch", service="ses", status="bounced") == 1
    assert v("campaignd_smtp_replies_total", service="ses", **{"class": "5xx"}, code="550") == 1
    assert v("campaignd_send_duration_seconds_bucket", service="ses", le="0.25") == 1
    assert v("campaignd_send_duration_seconds_bucket", service="ses", le="+Inf") == 2
    assert v("campaignd_send_duration_seconds_count", service="ses") == 2
    assert v("campaignd_feedback_events_total", kind="opened", source="tracking") == 1
    assert v("campaignd_service_in_flight", service="ses") == 2
    assert v("campaignd_warmup_day", service="ses") == 3
    assert v("campaignd_warmup_cap", service="ses") == 112
    assert ("campaignd_warmup_day", (("service", "mailgun"),)) not in got  # no warm-up there
    assert v("campaignd_breaker_state", service="ses", state="open") == 1
    assert v("campaignd_breaker_state", service="ses", state="closed") == 0
    assert v("campaignd_limit_used", scope="domain", target="ses/gmail.com", rate="100/minute") == 7
    assert v("campaignd_limit_cap", scope="campaign", target="launch", rate="20/minute") == 20


def test_no_recipient_or_message_ever_becomes_a_label() -> None:
    stats = DeliveryStats()
    for i in range(50):
        stats.attempt(
            "launch",
            f"user{i}@example.com",
            Out("failed", "ses", 550, f"550 user{i}", float(i)),
            0.1,
        )
    registry, collector = make_registry(stats)
    text = render(registry, collector, snapshot()).decode()
    assert "@example.com" not in text
    label_names = {
        name for f in text_string_to_metric_families(text) for s in f.samples for name in s.labels
    }
    assert label_names <= {
        "version", "severity", "campaign", "state", "status", "kind", "service", "class",
        "code", "le", "source", "scope", "target", "rate",
    }  # fmt: skip
    series = len(list(text_string_to_metric_families(text)))
    assert series < 40  # 50 failures added no series


def test_each_registry_is_its_own() -> None:
    """Two apps in one process (tests, or a reload) never collide in a global registry."""
    a, ca = make_registry(DeliveryStats())
    b, cb = make_registry(DeliveryStats())
    assert render(a, ca, snapshot()) and render(b, cb, snapshot())
