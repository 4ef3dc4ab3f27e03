"""Feedback: bounces, complaints, replies, auto-replies and ESP events as one event shape.

Pure parsing and verification (SPEC §7); reading maildirs/IMAP, HTTP handling and applying
events to the database live with their callers. ``recognize`` reads one received mail,
``webhooks`` checks and maps ESP callbacks, ``verp`` makes and reads per-message return paths.
"""

from __future__ import annotations

from .event import FeedbackEvent, Kind
from .mailparse import referenced_ids
from .recognize import recognize
from .verp import VerpCodec

__all__ = ["FeedbackEvent", "Kind", "VerpCodec", "recognize", "referenced_ids"]
