"""All that ``web/`` knows of the daemon: the ``DaemonView`` it is handed by the runtime.

The web layer sits below the runtime and never imports it; ``make_app(view)`` takes anything
that has these members (the daemon, or a small fake in tests). Reading goes through the view's
config, store and snapshots; changing a campaign goes through ``control``/``retry``, which
write the database, and ``wake``, which makes the daemon look at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..config.model import Config
from ..config.problems import Problem
from ..delivery.servicetest import ServiceTestReport
from ..feedback.apply import Applied
from ..feedback.event import FeedbackEvent
from ..queue.rows import CampaignRow
from ..queue.store import Store
from ..stats import DeliveryStats
from ..tokens.links import LinkSigner
from ..tokens.verp import VerpDecoder

__all__ = ["DaemonView", "FeedbackPort"]


class FeedbackPort(Protocol):
    """The daemon's one event path, as the webhooks and ``/api/status`` use it."""

    def verp(self) -> VerpDecoder | None: ...

    async def apply(
        self, events: Sequence[FeedbackEvent], *, authenticated: bool
    ) -> list[Applied]: ...

    async def status(self) -> dict[str, Any]: ...


class DaemonView(Protocol):
    @property
    def config(self) -> Config | None: ...

    @property
    def store(self) -> Store | None: ...

    @property
    def run_state(self) -> str: ...

    @property
    def worker_id(self) -> str: ...

    @property
    def token(self) -> str | None:
        """The API token; None means the API is only reachable on loopback."""

    @property
    def problems(self) -> Sequence[Problem]: ...

    @property
    def loaded_at(self) -> float: ...

    @property
    def started_at(self) -> float: ...

    @property
    def stats(self) -> DeliveryStats: ...

    @property
    def feedback(self) -> FeedbackPort | None: ...

    @property
    def signer(self) -> LinkSigner | None:
        """Signs and checks unsubscribe and tracking links (None while starting)."""

    def health(self) -> tuple[bool, str]:
        """(engine making progress, why not) for ``/healthz``."""

    def loops_snapshot(self) -> Mapping[str, Mapping[str, Any]]:
        """The supervised loops: state, restarts, failures, last error, last progress."""

    def limits_snapshot(self, now: float) -> Mapping[str, Any]:
        """Rates, warm-up and slow-downs in use (``delivery.limits.Limiter.snapshot``)."""

    def in_flight(self, service_id: str | None = None) -> int: ...

    def breaker_snapshot(self, service_id: str, now: float) -> dict[str, object] | None: ...

    def campaign_notes(
        self, campaign_id: str, row: CampaignRow | None, now: float
    ) -> dict[str, Any]:
        """Time facts for a campaign summary: window, editions, next drip step."""

    def enroll_error(self, campaign_id: str) -> str | None: ...

    async def control(self, campaign_id: str, action: str) -> str:
        """pause / resume / stop; returns the state afterwards (raises NotFound)."""

    async def retry(self, campaign_id: str, statuses: Sequence[str]) -> int:
        """Re-queue messages in ``statuses``; returns how many (raises NotFound, ValueError)."""

    def wake(self) -> None:
        """Something changed: advance campaign states now."""

    async def test_service(self, service_id: str, to: str | None) -> ServiceTestReport: ...
