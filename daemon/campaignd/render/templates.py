"""Which template a recipient gets (A/B variants), stable across restarts."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def choose_template(campaign_id: str, recipient_key: str, templates: Sequence[str]) -> str:
    """The A/B variant for a recipient: a stable hash, so a restart never reshuffles anyone."""
    if not templates:
        raise ValueError(f"campaign {campaign_id!r}: a step without templates")
    if len(templates) == 1:
        return templates[0]
    digest = hashlib.blake2b(
        f"{campaign_id}\x00{recipient_key}".encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return templates[int.from_bytes(digest, "big") % len(templates)]
