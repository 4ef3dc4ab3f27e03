"""web/page.py ``view`` and web/eta.py: what the status page shows, and when a campaign ends."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from campaignd.config.load import load_root
from campaignd.config.model import Config
from campaignd.web.common import render_html
from campaignd.web.eta import estimate_finish
from campaignd.web.page import view
from tests.rootfiles import make_root

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC).timestamp()


def summary(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "launch", "name": "Launch", "state": "sending", "reason": None, "total": 1000,
        "counts": {"sent": 996, "queued": 4, "failed": 0}, "by_template": {},
        "started_at": "2026-12-01T09:00:00+00:00", "finished_at": None, "eta": None,
        "send_rate": 30.0, "last_errors": [],
    }  # fmt: skip
    base.update(kw)
    return base


def status(*campaigns: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "1.0",
        "state": "running",
        "in_flight": 2,
        "config": {"generation": 4},
        "load_errors": [{"file": "campaigns.d/x.yaml", "line": 3, "message": "bad rate"}],
        "services": {
            "ses": {
                "id": "ses",
                "host": "smtp.example:587",
                "transport": "smtp",
                "limits": [{"rate": "14/second", "used": 3, "cap": 14}],
                "domains": {"gmail.com": [{"rate": "100/minute", "used": 7, "cap": 100}]},
                "warmup": {"day": 3, "cap": 112, "sent_today": 40},
                "sent_today": 40,
                "in_flight": 2,
                "max_connections": 4,
                "breaker": {"state": "open", "reason": "connection refused", "retry_at": NOW + 30},
            }
        },
        "campaigns": list(campaigns),
    }


def test_progress_is_floored_so_100_means_done() -> None:
    (c,) = view(status(summary()), NOW)["campaigns"]
    assert (c["done"], c["total"], c["pct"]) == (996, 1000, 99)
    done = summary(
        counts={"sent": 1000}, state="completed", finished_at="2026-12-01T10:00:00+00:00"
    )
    assert view(status(done), NOW)["campaigns"][0]["pct"] == 100
    empty = summary(total=0, counts={}, state="completed")
    assert view(status(empty), NOW)["campaigns"][0]["pct"] == 100


@pytest.mark.parametrize(
    ("state", "actions"),
    [("sending", ("pause", "stop")), ("waiting", ("pause", "stop")), ("paused", ("resume", "stop")),
     ("stopped", ()), ("completed", ()), ("failed", ())],
)  # fmt: skip
def test_buttons_follow_the_state(state: str, actions: tuple[str, ...]) -> None:
    assert view(status(summary(state=state)), NOW)["campaigns"][0]["actions"] == actions


def test_ab_variants_rates_services_and_problems() -> None:
    c = summary(
        by_template={
            "intro-a": {"sent": 200, "opened": 50, "clicked": 10, "replied": 2},
            "intro-b": {"sent": 0, "opened": 0, "clicked": 0, "replied": 0},
        },
        eta="2026-12-01T10:12:00+00:00",
        last_errors=[{"at": "2026-12-01T09:59:00+00:00", "service": "ses", "status": "failed",
                      "recipient": "ann@example.com", "error": "550 5.1.1 unknown"}],
    )  # fmt: skip
    v = view(status(c), NOW)
    (camp,) = v["campaigns"]
    assert camp["variants"][0] == {
        "template": "intro-a", "sent": 200, "opened": "50 (25 %)", "clicked": "10 (5 %)",
        "replied": "2 (1 %)",
    }  # fmt: skip
    assert camp["variants"][1]["opened"] == "0"
    assert camp["rate"] == "30.0/min"
    assert camp["eta"] == "10:12 UTC (in 12 min)"
    assert camp["errors"][0]["at"] == "09:59 UTC (1 min ago)"
    (svc,) = v["services"]
    assert svc["limits"] == ["3 / 14 per second", "gmail.com: 7 / 100 per minute"]
    assert svc["warmup"] == "day 3: cap 112"
    assert svc["breaker"] == "open" and "connection refused" in svc["breaker_note"]
    assert v["problems"] == [{"where": "campaigns.d/x.yaml:3", "message": "bad rate"}]


def test_the_fragment_escapes_what_it_shows() -> None:
    c = summary(name="<script>alert(1)</script>", reason='paused: "x" & <y>')
    html = render_html("_status.html", view=view(status(c), NOW))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-campaign="launch"' in html and 'data-pct="99"' in html
    assert '<button type="button" data-action="pause" data-campaign="launch">' in html


# ---------------------------------------------------------------- ETA


def config(tmp_path: Path, *campaign_lines: str) -> Config:
    campaign = "kind: transactional\naudience: [lists/people.csv]\nservices: [sink]\n"
    campaign += "template: hello\n" + "".join(line + "\n" for line in campaign_lines)
    root = make_root(tmp_path, {"campaigns.d/launch.yaml": campaign})
    result = load_root(root)
    assert result.ok, result.problems
    return result.config


def eta(cfg: Config | None, pending: int, rate: float | None) -> float | None:
    campaign = cfg.campaigns["launch"] if cfg else None
    return estimate_finish(
        pending=pending, now=NOW, observed_rate=rate, campaign=campaign, config=cfg
    )


def test_eta_is_the_later_of_the_limits_and_the_observed_rate(tmp_path: Path) -> None:
    cfg = config(tmp_path, "rate: 60/minute")
    assert eta(cfg, 0, 1.0) is None
    planned = eta(cfg, 600, None)
    assert planned is not None and 9 * 60 - 61 <= planned - NOW <= 10 * 60  # 600 at 60/minute
    assert eta(cfg, 600, 100.0) == planned  # faster than the limits allow: the limits win
    slow = eta(cfg, 600, 0.5)
    assert slow == pytest.approx(NOW + 1200)  # a slow relay: the observed rate wins
    assert eta(None, 100, 2.0) == pytest.approx(NOW + 50)  # no config: observed only
    assert eta(None, 100, None) is None


def test_eta_respects_the_window_and_knows_when_it_never_opens(tmp_path: Path) -> None:
    cfg = config(tmp_path / "w", "rate: 60/minute", 'window: {days: [wed], hours: "14:00-15:00"}')
    at = eta(cfg, 30, None)  # NOW is Tuesday 10:00 UTC: nothing before Wednesday 14:00
    assert at is not None
    assert datetime.fromtimestamp(at, UTC) >= datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
    never = config(tmp_path / "n", "window: {days: [mon]}", "rate: 1/second")
    assert eta(never, 5, None) is not None  # a Monday comes
    shut = config(tmp_path / "s", "window: {days: []}")
    assert eta(shut, 5, 3.0) is None


# ---------------------------------------------------------------- Host allow-list


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("127.0.0.1:8470", True), ("[::1]:8470", True), ("10.1.2.3", True),
        ("localhost:8470", True), ("LOCALHOST", True), ("mail.acme.example", True),
        ("admin.acme.internal:8470", True), (None, True),
        ("evil.example:8470", False), ("127.0.0.1.evil.example", False),
        ("mail.acme.example.evil.example", False), ("localhost.evil.example:8470", False),
    ],
)  # fmt: skip
def test_host_allow_list(header: str | None, allowed: bool) -> None:
    from campaignd.web.security import allowed_host, host_name

    assert (
        allowed_host(
            host_name(header),
            listen_host="127.0.0.1",
            public_url="https://mail.acme.example/campaigns",
            extra=" admin.acme.internal , ",
        )
        is allowed
    )
