"""Deliverability guards (SPEC §3 ``guard:``): when to auto-pause a campaign, in words.

Since 2024 Gmail and Yahoo throttle or refuse bulk senders whose complaint rate stays above
0.3 %, and a bounce rate above a few percent says the list is stale. A campaign whose rates
cross its ``guard`` thresholds is paused before it does more harm; the reason tells the operator
what was measured and what to do. Pure: counts in, a reason (or None) out.

The sample is the messages a relay took or refused the address of (``sent`` + ``bounced``);
below ``min_sample`` nothing trips, so three early bounces cannot stop a campaign of thousands.
"""

from __future__ import annotations

from typing import Protocol

from ..config.model import Guard

__all__ = ["GuardCounts", "guard_reason"]


class GuardCounts(Protocol):
    """What a guard measures over one campaign's messages (``queue.feedback.GuardCounts``)."""

    @property
    def sample(self) -> int:
        """Messages sent or bounced (the relay took them, or refused the address)."""

    @property
    def bounced(self) -> int: ...

    @property
    def complained(self) -> int: ...


def _pct(value: float) -> str:
    text = f"{value * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


def guard_reason(campaign_id: str, guard: Guard, counts: GuardCounts) -> str | None:
    """Why the campaign must pause now, or None while its rates are within ``guard``."""
    if counts.sample < guard.min_sample or counts.sample <= 0:
        return None
    bounce_rate = counts.bounced / counts.sample
    complaint_rate = counts.complained / counts.sample
    where = f"campaigns.d/{campaign_id}.yaml"
    # Complaints first: they hurt the sender's reputation most and the threshold is stricter.
    if complaint_rate > guard.max_complaint_rate:
        return (
            f"auto-paused by its guard: complaint rate {_pct(complaint_rate)} "
            f"({counts.complained} of {counts.sample} messages) is above max_complaint_rate "
            f"{_pct(guard.max_complaint_rate)} — check who this campaign goes to and whether "
            f"they asked for it; resume only after raising guard.max_complaint_rate in {where}"
        )
    if bounce_rate > guard.max_bounce_rate:
        return (
            f"auto-paused by its guard: bounce rate {_pct(bounce_rate)} "
            f"({counts.bounced} of {counts.sample} messages) is above max_bounce_rate "
            f"{_pct(guard.max_bounce_rate)} — the list is stale: clean it "
            f"(campaignctl log {campaign_id} --status bounced); resume only after raising "
            f"guard.max_bounce_rate in {where}"
        )
    return None
