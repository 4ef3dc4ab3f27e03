"""What the audience needs to know about the past, as the narrow interfaces it declares.

The database implements these (synchronously, in batches of keys); ``campaignctl plan`` without a
database and the tests use the empty and in-memory versions here. Keys are ``Recipient.key``:
the normalized address, lower-cased (``plan.audience_address.parse_address(text).key``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol


class History(Protocol):
    def contacted_since(self, keys: Sequence[str], since: datetime) -> set[str]:
        """Those of ``keys`` that any campaign sent a message to at or after ``since``."""
        ...

    def received_campaigns(self, keys: Sequence[str], campaign_ids: Sequence[str]) -> set[str]:
        """Those of ``keys`` that were sent a message of any of ``campaign_ids``."""
        ...


class Suppressions(Protocol):
    def suppressed(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` on the global suppression list (unsubscribed, bounced, complained)."""
        ...


class NoHistory:
    def contacted_since(self, keys: Sequence[str], since: datetime) -> set[str]:
        return set()

    def received_campaigns(self, keys: Sequence[str], campaign_ids: Sequence[str]) -> set[str]:
        return set()


class NoSuppressions:
    def suppressed(self, keys: Sequence[str]) -> set[str]:
        return set()


class MemoryHistory:
    """Past sends as (key, campaign id, sent at); also counts calls so tests can see batching."""

    def __init__(self, sends: Iterable[tuple[str, str, datetime]] = ()) -> None:
        self.sends = list(sends)
        self.calls: list[int] = []

    def contacted_since(self, keys: Sequence[str], since: datetime) -> set[str]:
        self.calls.append(len(keys))
        wanted = set(keys)
        return {k for k, _, at in self.sends if k in wanted and at >= since}

    def received_campaigns(self, keys: Sequence[str], campaign_ids: Sequence[str]) -> set[str]:
        self.calls.append(len(keys))
        wanted, ids = set(keys), set(campaign_ids)
        return {k for k, cid, _ in self.sends if k in wanted and cid in ids}


class MemorySuppressions:
    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.keys = set(keys)
        self.calls: list[int] = []

    def suppressed(self, keys: Sequence[str]) -> set[str]:
        self.calls.append(len(keys))
        return self.keys.intersection(keys)
