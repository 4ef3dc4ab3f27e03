"""The real-world feedback mails of tests/unit/feedback/mails, re-addressed to a test's messages.

The samples name made-up Message-IDs, recipients and VERP addresses; ``personalize`` swaps in
the ones a test really sent, so the same Postfix/Gmail/Exchange/Microsoft bytes exercise the
whole path from mailbox to database.
"""

from __future__ import annotations

import re
from pathlib import Path

MAILS = Path(__file__).parents[2] / "unit" / "feedback" / "mails"
_OUR_IDS = re.compile(r"campaignd\.\d+\.q4-[a-z]+@mail\.acme\.example")
_VERP = re.compile(r"bounces\+[a-z2-7]+@mail\.acme\.example")


def personalize(
    name: str,
    *,
    message_id: str | None = None,
    recipients: dict[str, str] | None = None,
    verp: str | None = None,
) -> bytes:
    """Sample ``name`` with its Message-IDs of ours → ``message_id`` (no brackets), the
    ``recipients`` replaced (old → new), and its VERP addresses → ``verp``."""
    text = (MAILS / name).read_bytes().decode("utf-8", "surrogateescape")
    if message_id is not None:
        text = _OUR_IDS.sub(message_id.strip("<>"), text)
    for old, new in (recipients or {}).items():
        text = text.replace(old, new)
    if verp is not None:
        text = _VERP.sub(verp, text)
    return text.encode("utf-8", "surrogateescape")
