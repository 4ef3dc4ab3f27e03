"""Circuit breaker per service: skip a relay whose connections fail, probe it again later.

Pure: callers pass the time. Closed → (``threshold`` consecutive connection failures) → open;
after ``cooldown`` one probe is allowed (half-open); its success closes the breaker, its failure
reopens it with a doubled cooldown (capped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half-open"]


@dataclass
class Breaker:
    threshold: int = 3
    base_cooldown: float = 30.0
    max_cooldown: float = 600.0
    failures: int = 0
    opened_at: float | None = None
    cooldown: float = 30.0
    reason: str = ""
    probing: bool = False

    def __post_init__(self) -> None:
        self.cooldown = self.base_cooldown

    def state(self, now: float) -> State:
        if self.opened_at is None:
            return "closed"
        if now >= self.opened_at + self.cooldown:
            return "half-open"
        return "open"

    def allows(self, now: float) -> bool:
        """May a message be sent through this service now? Half-open lets one probe through."""
        st = self.state(now)
        if st == "closed":
            return True
        if st == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.cooldown = self.base_cooldown
        self.reason = ""
        self.probing = False

    def failure(self, now: float, reason: str) -> bool:
        """Record a connection failure; True if this opened (or re-opened) the breaker."""
        self.failures += 1
        self.reason = reason
        if self.probing or self.opened_at is not None:
            self.cooldown = (
                min(self.cooldown * 2, self.max_cooldown) if self.probing else self.cooldown
            )
            self.opened_at = now
            self.probing = False
            return True
        if self.failures >= self.threshold:
            self.opened_at = now
            return True
        return False

    def retry_at(self) -> float | None:
        return None if self.opened_at is None else self.opened_at + self.cooldown

    def snapshot(self, now: float) -> dict[str, object]:
        return {
            "state": self.state(now),
            "failures": self.failures,
            "reason": self.reason or None,
            "retry_at": self.retry_at(),
        }
