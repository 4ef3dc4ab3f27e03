"""The plan of one campaign: who receives it after every filter, and how the volume spreads
over the days under rates, warm-up and windows. Used by ``campaignctl plan`` and, for the ETA,
by the daemon — both through the same pure functions of ``plan/``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..config.load import LoadResult
from ..config.model import Campaign, Config
from ..config.templates import template_fields
from ..errors import ConfigError
from .audience import (
    AudienceReport,
    History,
    NoHistory,
    NoSuppressions,
    Suppressions,
    build_audience,
)
from .cron import next_fire
from .simulate import PlanResult, ServiceCapacity, simulate

EDITIONS_SHOWN = 5
"""How many next firings of a recurring campaign the plan lists."""


def campaign_or_error(result: LoadResult, campaign_id: str) -> Campaign:
    config = result.config
    if campaign_id in config.campaigns:
        return config.campaigns[campaign_id]
    if campaign_id in result.broken["campaign"]:
        raise ConfigError(
            f"campaign {campaign_id!r} has errors (listed above) — fix "
            f"campaigns.d/{campaign_id}.yaml; `campaignctl validate` shows every problem"
        )
    known = ", ".join(sorted(config.campaigns)) or "none"
    raise ConfigError(f"no campaign {campaign_id!r} in {config.root}/campaigns.d (known: {known})")


def required_fields(config: Config, campaign: Campaign, campaign_id: str = "") -> frozenset[str]:
    """Fields the campaign's templates use — the templates it sends (``Config.template_of``):
    a campaign kept at its last good version reads the fields of its last good templates."""
    names: set[str] = set()
    cid = campaign_id
    for step in campaign.steps:
        for tid in step.template:
            template = config.template_of(cid, tid)
            if template is None:
                raise ConfigError(
                    f"template {tid!r} is not loaded — fix templates.d/{tid}.yaml "
                    "(`campaignctl validate` shows every problem)"
                )
            names |= template_fields(template)
    return frozenset(names)


def zone_key(campaign: Campaign, recipient_tz: str | None, default_zone: str) -> str:
    window = campaign.window
    if window is None:
        return default_zone
    if window.timezone == "recipient":
        return recipient_tz or window.fallback_timezone
    return window.timezone


def service_capacities(config: Config, campaign: Campaign) -> list[ServiceCapacity]:
    out = []
    for sid in campaign.services:
        svc = config.services[sid]
        since = svc.warmup.since if svc.warmup else None
        out.append(ServiceCapacity(name=sid, rates=svc.rate, warmup=svc.warmup, warmup_since=since))
    return out


def first_send(campaign: Campaign, now: datetime, zone: ZoneInfo) -> datetime:
    """When the campaign's first message can go: its start (now if that has passed) or, for
    a recurring campaign, the first firing from then on — as the daemon's clock decides."""
    start = campaign.start if campaign.start and campaign.start > now else now
    if campaign.schedule is not None:
        fire = next_fire(campaign.schedule.cron, start, zone)
        if fire is not None:
            return fire
    return start


@dataclass
class Plan:
    campaign_id: str
    campaign: Campaign
    report: AudienceReport
    by_zone: Mapping[str, int]
    result: PlanResult
    start: datetime
    step_messages: list[int] = field(default_factory=list)
    editions: list[datetime] = field(default_factory=list)
    """A recurring campaign's next firings (the first is ``start``); empty for a one-off."""

    def as_json(self) -> dict[str, Any]:
        r = self.report
        return {
            "campaign": self.campaign_id,
            "name": self.campaign.name or self.campaign_id,
            "audience": r.accepted,
            "invalid": r.invalid,
            "duplicates": r.duplicates,
            "filtered": r.filtered,
            "suppressed": r.suppressed,
            "filtered_by": dict(r.filtered_by),
            "missing_fields": {k: v for k, v in sorted(r.missing_fields.items()) if v},
            "invalid_samples": [str(s) for s in r.invalid_rows],
            "steps": self.step_messages,
            "messages": sum(self.step_messages),
            "start": self.start.isoformat(),
            "days": [
                {"date": d.date.isoformat(), "messages": d.messages} for d in self.result.days
            ],
            "finish": self.result.finish.isoformat() if self.result.finish else None,
            "unschedulable": self.result.unschedulable,
            "notes": list(self.result.notes),
            "schedule": (
                {
                    "cron": self.campaign.schedule.cron,
                    "next_editions": [e.isoformat() for e in self.editions],
                }
                if self.campaign.schedule is not None
                else None
            ),
        }


def build_plan(
    result: LoadResult,
    campaign_id: str,
    *,
    now: datetime,
    history: History | None = None,
    suppressions: Suppressions | None = None,
) -> Plan:
    config = result.config
    campaign = campaign_or_error(result, campaign_id)
    audience = build_audience(
        campaign,
        config.root,
        history=history or NoHistory(),
        suppressions=suppressions or NoSuppressions(),
        now=now,
        required_fields=required_fields(config, campaign, campaign_id),
    )
    default_zone = config.settings.timezone
    by_zone: Counter[str] = Counter()
    for recipient in audience:
        by_zone[zone_key(campaign, recipient.timezone, default_zone)] += 1
    report = audience.report
    start = first_send(campaign, now, ZoneInfo(default_zone))
    count = sum(by_zone.values())
    later = [(step.after, count) for step in campaign.steps[1:] if step.after is not None]
    sim = simulate(
        dict(by_zone),
        start=start,
        window=campaign.window,
        campaign_rates=campaign.rate,
        services=service_capacities(config, campaign),
        plan_zone=ZoneInfo(default_zone),
        later_steps=later,
    )
    editions: list[datetime] = []
    if campaign.schedule is not None:
        base = campaign.start if campaign.start and campaign.start > now else now
        fire = next_fire(campaign.schedule.cron, base, ZoneInfo(default_zone))  # as first_send
        while fire is not None and len(editions) < EDITIONS_SHOWN:
            editions.append(fire)
            fire = next_fire(campaign.schedule.cron, fire, ZoneInfo(default_zone))
    return Plan(
        campaign_id=campaign_id,
        campaign=campaign,
        report=report,
        by_zone=dict(by_zone),
        result=sim,
        start=start,
        step_messages=[count] * len(campaign.steps),
        editions=editions,
    )
