"""Feedback: bounces, complaints, replies, auto-replies and ESP events as one event shape.

Pure parsing and verification (SPEC §7): ``recognize`` reads one received mail, ``webhooks``
checks and maps ESP callbacks, ``verp`` makes and reads per-message return paths, ``guard``
decides when a campaign's rates must pause it. The mailbox readers ``maildir`` and ``imap`` do
I/O and hand raw mail to a caller's handler; applying events to the database is ``events.py``,
HTTP is ``web/hooks.py``, and ``runtime/feedback_runner.py`` runs it all inside the daemon.
"""

from __future__ import annotations

from ..tokens.verp import VerpCodec
from .event import FeedbackEvent, Kind
from .mailparse import referenced_ids
from .recognize import recognize

__all__ = ["FeedbackEvent", "Kind", "VerpCodec", "recognize", "referenced_ids"]
