"""systemd integration without a dependency: sd_notify over $NOTIFY_SOCKET, the watchdog
interval from $WATCHDOG_USEC, and the one-line progress summaries journald shows.

The protocol is a datagram of ``KEY=VALUE`` lines to a unix socket (an ``@`` prefix means the
abstract namespace). Outside systemd there is no socket and every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Mapping

log = logging.getLogger("campaignd")


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # The watchdog is meant for the main process only (systemd sets WATCHDOG_PID to it).
        mine = not pid or pid == str(os.getpid())
        return cls(env.get("NOTIFY_SOCKET") or None, int(usec) if usec.isdigit() and mine else None)

    @property
    def watchdog_interval(self) -> float | None:
        """Ping at half the deadline, so one slow event-loop turn does not kill the daemon."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, **fields: str) -> bool:
        if self._sock is None or self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        data = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(data, target)
        except OSError as exc:  # systemd gone or the socket full: never fatal
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        self.send(READY="1", STATUS=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd ≥ 253 match the READY=1 that ends this reload.
        self.send(RELOADING="1", MONOTONIC_USEC=str(time.monotonic_ns() // 1000))

    def stopping(self) -> None:
        self.send(STOPPING="1", STATUS="draining in-flight messages")

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def watchdog(self) -> None:
        self.send(WATCHDOG="1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def progress_lines(
    before: Counter[tuple[str, str, str]], now: Counter[tuple[str, str, str]], seconds: float
) -> list[str]:
    """One journald line per campaign that did something since ``before``: what was sent,
    deferred, failed or bounced in the interval (the per-message detail is in the API)."""
    delta: dict[str, Counter[str]] = {}
    for (campaign, _service, status), n in now.items():
        d = n - before.get((campaign, _service, status), 0)
        if d > 0:
            delta.setdefault(campaign, Counter())[status] += d
    lines = []
    for campaign, counts in sorted(delta.items()):
        parts = ", ".join(f"{counts[s]} {s}" for s in sorted(counts))
        lines.append(f"campaign {campaign}: {parts} in the last {seconds:.0f}s")
    return lines


def status_line(in_flight: int, sending: int, sent_total: int, problems: int) -> str:
    tail = f"; {problems} config problems" if problems else ""
    return f"{sending} campaigns sending, {in_flight} messages in flight, {sent_total} sent{tail}"
