"""What an operator may do to a campaign (SPEC §5): pause, resume, stop and retry.

The transitions are written to the database, which is the truth for every daemon sharing it;
the caller pokes its own loops afterwards. Each is idempotent: pausing a paused campaign
answers its state and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

from ..errors import ConfigError, NotFound
from ..queue.store import Store
from .conductor import paused_in_file

Action = Literal["pause", "resume", "stop"]
ACTIONS: Final = ("pause", "resume", "stop")
RETRYABLE: Final = ("failed", "uncertain", "deferred")
FINAL: Final = frozenset({"stopped", "completed"})


async def set_state(store: Store, campaign_id: str, action: str) -> str:
    """Apply ``action``; returns the campaign's state afterwards.

    Raises NotFound for an unknown campaign and ConfigError when the campaign file decides
    (``paused: true`` there cannot be resumed from the API).
    """
    row = await store.get_campaign(campaign_id)
    if row is None:
        raise NotFound(f"no campaign {campaign_id!r}")
    if action == "pause":
        if row.state in (*FINAL, "paused"):
            return row.state
        row = await store.set_campaign_state(campaign_id, "paused", "paused by operator")
    elif action == "stop":
        if row.state in FINAL:
            return row.state
        row = await store.set_campaign_state(campaign_id, "stopped", "stopped by operator")
    elif action == "resume":
        if row.state != "paused":
            return row.state
        if row.reason == paused_in_file(campaign_id):
            raise ConfigError(
                f"campaign {campaign_id!r} has paused: true in campaigns.d/"
                f"{campaign_id}.yaml — set paused: false there (the file decides)"
            )
        # Back to sending; the conductor moves it to waiting/completed if nothing is due.
        row = await store.set_campaign_state(campaign_id, "sending", None)
    else:
        raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    return row.state


async def retry(store: Store, campaign_id: str, statuses: Sequence[str], *, now: float) -> int:
    """Re-queue the campaign's messages in ``statuses``; a finished campaign sends again.

    Returns how many messages were re-queued. Raises NotFound for an unknown campaign.
    """
    if await store.get_campaign(campaign_id) is None:
        raise NotFound(f"no campaign {campaign_id!r}")
    bad = [s for s in statuses if s not in RETRYABLE]
    if bad or not statuses:
        raise ValueError(f"statuses must be a non-empty list of {', '.join(RETRYABLE)}")
    # The store re-opens a completed or waiting campaign in the same transaction.
    return await store.retry(campaign_id, list(statuses), now=now)
