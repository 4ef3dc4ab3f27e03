"""What an SMTP reply means for one message: sent, deferred, bounced or failed (pure, no I/O).

Temporary versus permanent is decided here and nowhere else (RFC 5321 §4.2.1, RFC 3463):

- 2xx: the step succeeded (``sent``).
- 421: the server is going away — ``deferred``, close the session and slow the service down.
- other 4xx (451, 452, …): ``deferred``, retried with the service's backoff; one that says it
  is rate limiting ("too many messages", "rate limited") slows the service down as well.
- 5xx with an RFC 3463 address status ``5.1.x`` naming the *recipient* (at RCPT or later):
  ``bounced`` — the address is suppressed. A 5xx with no enhanced code or a generic one
  (``5.0.0``, ``5.3.0``) whose text says the mailbox does not exist counts too, unless the text
  reads like a policy block (``delivery.mailbox``: one table for replies and bounce reports).
- any other 5xx (policy blocks ``5.7.x``, content rejections, a refused sender): ``failed`` —
  the message fails but the address is not suppressed.
- no reply at all (connection dropped, timeout): ``deferred``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, TypeVar

from .mailbox import mailbox_does_not_exist

Stage = Literal["connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "eod"]
Kind = Literal["sent", "deferred", "bounced", "failed"]
_E = TypeVar("_E", bound=BaseException)

STAGE_NAMES: dict[Stage, str] = {
    "connect": "connect",
    "ehlo": "EHLO",
    "starttls": "STARTTLS",
    "auth": "AUTH",
    "mail": "MAIL FROM",
    "rcpt": "RCPT TO",
    "data": "DATA",
    "eod": "end of data",
}
TEXT_LIMIT = 300

# RFC 3463: class.subject.detail; subject and detail are 1-3 digits.
_ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
# Stages where a 5.1.x names the recipient; at MAIL or before it names our sender or session.
_RECIPIENT_STAGES = frozenset({"rcpt", "data", "eod"})
_THROTTLE_RE = re.compile(
    r"rate.?limit|too many (messages|mails|connections|sessions)|throttl|sending rate"
    r"|slow down|exceeded .*(rate|quota)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Reply:
    """One message's outcome at one stage, with the server's words kept for ``last_error``."""

    kind: Kind
    code: int | None
    enhanced: str | None
    text: str
    close_session: bool = False
    slow_down: bool = False
    stage: Stage | None = None

    def summary(self) -> str:
        """``550 5.1.1 user unknown`` — code, enhanced code and text, whichever are known.

        Texts that already quote the code (``AUTH rejected: 535 5.7.8 …``) are left as they are.
        """
        head = " ".join(p for p in (str(self.code or ""), self.enhanced or "") if p)
        # As a whole word: "250" inside a file name or a timestamp is not the code quoted.
        if not head or re.search(rf"(?<![\w.]){re.escape(head)}(?![\w.])", self.text):
            return self.text or head
        return f"{head} {self.text}" if self.text else head


def parse_enhanced(text: str) -> tuple[str | None, str]:
    """Split an RFC 3463 code off the front of a reply text: ``("5.1.1", "user unknown")``."""
    m = _ENHANCED_RE.match(text.lstrip())
    if m is None:
        return None, text.strip()
    return m.group(0), text.lstrip()[m.end() :].strip()


def one_line(text: str, enhanced: str | None = None, limit: int = TEXT_LIMIT) -> str:
    """Join a multi-line reply into one trimmed line, dropping each line's repeated code."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if enhanced and line.startswith(enhanced):
            line = line[len(enhanced) :].strip()
        if line:
            lines.append(line)
    flat = " ".join(lines)
    if not flat.isprintable():
        flat = "".join(ch if ch.isprintable() else " " for ch in flat)
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def classify(code: int | None, text: str, *, stage: Stage) -> Reply:
    """Map a server reply (or ``None`` for no reply) at ``stage`` to what the message's fate is."""
    enhanced, rest = parse_enhanced(text)
    if enhanced is not None and code is not None and enhanced[0] != str(code)[0]:
        enhanced = None  # a class that contradicts the reply code is noise, not a status
        rest = text.strip()
    clean = one_line(rest, enhanced)
    if code is None:
        note = clean or f"no reply at {STAGE_NAMES[stage]}"
        return Reply("deferred", None, None, note, close_session=True, stage=stage)
    if 200 <= code < 300:
        return Reply("sent", code, enhanced, clean, stage=stage)
    if code == 421:
        return Reply("deferred", code, enhanced, clean, True, True, stage)
    if 400 <= code < 500:
        # Providers throttle with 450/451 too ("rate limited", "too many messages"); greylisting
        # ("try again later") is per recipient and does not slow the service down.
        throttled = bool(_THROTTLE_RE.search(clean))
        return Reply("deferred", code, enhanced, clean, slow_down=throttled, stage=stage)
    if 500 <= code < 600:
        kind: Kind = "bounced" if _names_bad_recipient(enhanced, clean, stage) else "failed"
        return Reply(kind, code, enhanced, clean, stage=stage)
    # 1xx/3xx where a final reply belongs, or garbage: the session is out of step.
    return Reply("deferred", code, enhanced, clean or "unexpected reply", True, stage=stage)


def _names_bad_recipient(enhanced: str | None, text: str, stage: Stage) -> bool:
    if stage not in _RECIPIENT_STAGES:
        return False
    return mailbox_does_not_exist(enhanced, text)


def find_cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of ``kind`` in ``exc``'s cause/context chain (libraries wrap them)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, kind):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None
