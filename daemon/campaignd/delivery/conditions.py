"""The checks a claimed message passes just before it is sent, beyond suppression.

A later drip step's ``unless`` is evaluated here, at send time, so feedback that arrived while
the step waited (a reply, a click) still ends the recipient's sequence. Edits to a running
campaign are honoured here too: a message of a step that was removed from the file is skipped,
never sent; one whose step no longer names its template is sent with the step's current
template. A recipient removed from a continuous audience is skipped.

``decide`` is the pure rule; ``Conditions.evaluate`` asks the database the one question the
rule needs (which recipients opened, clicked, replied … earlier in the edition).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..config.model import Campaign, Config, Step
from ..config.values import format_duration
from ..queue.store import Claimed
from ..render.templates import choose_template

WINDOW_RECHECK = 86400.0
"""A message held for a closed window goes back to the queue until the window opens (at most a
day ahead, so a window that never opens is looked at daily), and is not touched before: a
reload that changes the window wakes the campaign's parked messages instead
(``Store.wake_parked``), so waiting rows cost nothing while they wait."""

REMOVED_REASON = "removed from the audience list before it was sent"


def step_removed_reason(step: int) -> str:
    return f"step {step} is no longer in the campaign file"


def unless_reason(kinds: Sequence[str]) -> str:
    return f"unless: {', '.join(kinds)} — the recipient {' and '.join(kinds)} earlier"


class EngagedStore(Protocol):
    async def engaged(
        self, campaign_id: str, edition: int, keys: Sequence[str], kinds: Collection[str]
    ) -> set[str]: ...
    async def contacted_since(
        self, keys: Sequence[str], since: float, *, exclude_campaign: str | None = None
    ) -> set[str]: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happens to a message instead of sending it as claimed."""

    skip: str | None = None
    """Record it ``skipped`` with this reason."""
    template: str | None = None
    """Send it, but with this template (the step's template changed since it was queued)."""


def step_of(campaign: Campaign, step: int) -> Step | None:
    """The campaign file's step ``step`` (1-based), None if the file has no such step now."""
    return campaign.steps[step - 1] if 1 <= step <= len(campaign.steps) else None


def unless_kinds(campaign: Campaign, step: int) -> tuple[str, ...]:
    found = step_of(campaign, step)
    return tuple(found.unless) if found is not None else ()


def decide(
    campaign_id: str,
    campaign: Campaign,
    *,
    step: int,
    template: str,
    recipient: str,
    engaged: Collection[str] = (),
    removed: bool = False,
) -> Verdict | None:
    """None to send the message as it is; else skip it, or send it with another template.

    ``engaged`` holds the event kinds (opened, clicked, …) the recipient has in this edition.
    """
    config = step_of(campaign, step)
    if config is None:
        return Verdict(skip=step_removed_reason(step))
    if removed:
        return Verdict(skip=REMOVED_REASON)
    hits = [kind for kind in config.unless if kind in engaged]
    if hits:
        return Verdict(skip=unless_reason(hits))
    if template not in config.template:
        # The row was queued before the step's template changed: it has not been sent, so the
        # current file decides. choose_template is stable, so A/B variants are not reshuffled.
        return Verdict(template=choose_template(campaign_id, recipient, config.template))
    return None


class Conditions:
    """The dispatcher's pre-send rules, plus the runtime facts they rely on.

    ``removed`` and ``held`` are derived, never the truth: the conductor rebuilds ``removed``
    from the audience files and the database after each start, and ``held`` only feeds the
    campaign summary's ``next_window``.
    """

    def __init__(self) -> None:
        self.removed: dict[str, frozenset[str]] = {}
        self._held: dict[str, float] = {}

    def set_removed(self, campaign_id: str, keys: Collection[str]) -> None:
        self.removed[campaign_id] = frozenset(keys)

    def removed_now(self, msg: Claimed) -> str | None:
        """The skip reason if the message's recipient has left the lists since it was claimed."""
        return REMOVED_REASON if msg.recipient in self.removed.get(msg.campaign_id, ()) else None

    async def evaluate(
        self,
        store: EngagedStore,
        config: Config,
        claimed: Sequence[Claimed],
        *,
        now: float | None = None,
    ) -> dict[int, Verdict]:
        """Verdicts for the claimed messages that must not go out as claimed."""
        groups: dict[tuple[str, int], list[Claimed]] = defaultdict(list)
        for msg in claimed:
            if msg.campaign_id in config.campaigns:
                groups[(msg.campaign_id, msg.edition)].append(msg)
        out: dict[int, Verdict] = {}
        for (cid, edition), msgs in groups.items():
            campaign = config.campaigns[cid]
            kinds = sorted({k for m in msgs for k in unless_kinds(campaign, m.step)})
            # One query per kind, so the reason can name what matched.
            hits: dict[str, set[str]] = {}
            for kind in kinds:
                keys = [m.recipient for m in msgs if kind in unless_kinds(campaign, m.step)]
                hits[kind] = await store.engaged(cid, edition, keys, [kind])
            removed = self.removed.get(cid, frozenset())
            for m in msgs:
                verdict = decide(
                    cid,
                    campaign,
                    step=m.step,
                    template=m.template,
                    recipient=m.recipient,
                    engaged={k for k, who in hits.items() if m.recipient in who},
                    removed=m.recipient in removed,
                )
                if verdict is not None:
                    out[m.id] = verdict
            await self._contacted(store, cid, campaign, msgs, out, now)
        return out

    @staticmethod
    async def _contacted(
        store: EngagedStore,
        cid: str,
        campaign: Campaign,
        msgs: Sequence[Claimed],
        out: dict[int, Verdict],
        now: float | None,
    ) -> None:
        """``exclude_contacted_within`` again at send time: another campaign may have reached
        the recipient since enrollment. Only a sequence's first step: the follow-ups of this
        campaign are the contact the recipient already agreed to receive."""
        within = campaign.filters.exclude_contacted_within
        if within is None:
            return
        first = [m for m in msgs if m.step == 1 and m.id not in out]
        if not first:
            return
        at = time.time() if now is None else now
        since = at - within.total_seconds()
        hit = await store.contacted_since([m.recipient for m in first], since, exclude_campaign=cid)
        for m in first:
            if m.recipient in hit:
                out[m.id] = Verdict(
                    skip=f"contacted by another campaign within {format_duration(within)} "
                    "(filters.exclude_contacted_within)"
                )

    # ------------------------------------------------------------ windows, for the summary

    def note_held(self, campaign_id: str, opens: float, now: float) -> None:
        """A message of the campaign waits for its window, which opens at ``opens``."""
        current = self._held.get(campaign_id)
        if current is None or current <= now or opens < current:
            self._held[campaign_id] = opens

    def next_window(self, campaign_id: str, now: float) -> float | None:
        """The earliest opening a held message of the campaign waits for, if still ahead."""
        at = self._held.get(campaign_id)
        return at if at is not None and at > now else None


def park_until(opens: float, now: float) -> float:
    """When a message held for a closed window is looked at again (see WINDOW_RECHECK)."""
    return min(opens, now + WINDOW_RECHECK)


__all__ = [
    "REMOVED_REASON",
    "WINDOW_RECHECK",
    "Conditions",
    "EngagedStore",
    "Verdict",
    "decide",
    "park_until",
    "step_of",
    "step_removed_reason",
    "unless_kinds",
    "unless_reason",
]
