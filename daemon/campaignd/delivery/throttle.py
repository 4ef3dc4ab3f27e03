"""Which SMTP replies say "you are sending too fast": a pure table, no I/O.

A relay or mailbox provider throttles with 421 (closing the session), with a 4xx whose
enhanced code is in the ``4.7`` (security or policy) class, or with a 4xx whose text says so
in words (Postfix "too much mail", Exim "ratelimit", Gmail ``4.7.28``, Microsoft "server busy
… try again later", Yahoo ``[TSS04]`` "temporarily deferred"). The limiter answers such a reply
by slowing down (limits.py); a plain deferral (mailbox full, lookup failure) does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words providers use when they defer for volume. ``\brate`` matches "rate", "ratelimit" and
# "rate-limited" but not "generate" or "separate"; "try (again )?later" covers "please try
# later" (Exim) and "try again later" (Microsoft, Gmail).
_WORDS = re.compile(
    r"\brate|too much mail|too many|try (again )?later|throttl|temporarily deferred"
    r"|unusual rate|slow down|server busy",
    re.IGNORECASE,
)
# Greylisting also says "try again later", but for one recipient once: slowing the whole
# service for it would only cost time.
_GREYLIST = re.compile(r"grey ?list|gray ?list", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Throttle:
    """A reply recognised as throttling, with the words an operator sees as the reason."""

    why: str  # "421", "4.7.x" or the matched words
    reply: str  # the reply as the server said it (one line)

    def __str__(self) -> str:
        return f"throttled ({self.why}): {self.reply}"


def recognise(code: int | None, enhanced: str | None, text: str) -> Throttle | None:
    """A ``Throttle`` if this reply asks the sender to slow down, else None.

    Only temporary replies count: a 5xx fails the message whatever it says, and no reply at all
    (a dropped connection) is the breaker's business, not the pace's.
    """
    if code is None or not 400 <= code < 500:
        return None
    line = " ".join(p for p in (str(code), enhanced or "", text.strip()) if p)
    if _GREYLIST.search(text):
        return None
    if code == 421:
        return Throttle("421", line)
    if enhanced is not None and enhanced.startswith("4.7."):
        return Throttle(enhanced, line)
    m = _WORDS.search(text)
    if m is not None:
        return Throttle(m.group(0).lower(), line)
    return None
