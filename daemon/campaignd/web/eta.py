"""When will a campaign's queued messages be out? (the ``eta`` of a campaign summary).

Two estimates, and the later one wins:

* the planner's (``plan.simulate.simulate``): the pending messages under the campaign's and
  its services' rates, warm-up caps and send window, starting now — the limits make it a
  lower bound;
* the observed one: pending messages at the rate the campaign was really sent at during the
  last minutes — it sees what the planner cannot (a slow relay, retries, other campaigns
  sharing the services).

Drip steps that do not exist yet are not counted: the ETA is for what is queued now. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from ..config.model import Campaign, Config
from ..plan.campaign import zone_key
from ..plan.simulate import ServiceCapacity, simulate

__all__ = ["estimate_finish"]


def estimate_finish(
    *,
    pending: int,
    now: float,
    observed_rate: float | None,
    campaign: Campaign | None,
    config: Config | None,
    warmup_days: Mapping[str, int] | None = None,
) -> float | None:
    """Epoch seconds when the last of ``pending`` messages should start, or None if unknown
    (nothing pending, no rate observed and no plan possible, or the window never opens).

    ``observed_rate`` is messages per second; ``warmup_days`` the services' current warm-up
    day (from the limiter), so the planner ramps from today's cap and not from day 1.
    """
    if pending <= 0:
        return None
    observed = now + pending / observed_rate if observed_rate and observed_rate > 0 else None
    planned = _planned(pending, now, campaign, config, warmup_days or {})
    if planned is _NEVER:
        return None
    estimates = [e for e in (observed, planned) if isinstance(e, float)]
    return max(estimates) if estimates else None


class _Never:
    pass


_NEVER = _Never()


def _planned(
    pending: int,
    now: float,
    campaign: Campaign | None,
    config: Config | None,
    warmup_days: Mapping[str, int],
) -> float | _Never | None:
    if campaign is None or config is None:
        return None
    zone = ZoneInfo(config.settings.timezone)
    today = datetime.fromtimestamp(now, zone).date()
    services = []
    for sid in campaign.services:
        svc = config.services.get(sid)
        if svc is None:
            continue
        since: date | None = svc.warmup.since if svc.warmup else None
        if svc.warmup is not None and since is None and sid in warmup_days:
            since = today - timedelta(days=max(warmup_days[sid], 1) - 1)
        services.append(ServiceCapacity(sid, svc.rate, svc.warmup, since))
    if not services:
        return None
    key = zone_key(campaign, None, config.settings.timezone)
    result = simulate(
        {key: pending},
        start=datetime.fromtimestamp(now, UTC),
        window=campaign.window,
        campaign_rates=campaign.rate,
        services=services,
        plan_zone=zone,
    )
    if result.finish is None:
        return _NEVER if result.unschedulable else None
    return result.finish.timestamp()
