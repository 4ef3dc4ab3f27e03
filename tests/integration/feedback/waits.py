"""Waiting for work done on another task or process, with a deadline instead of a sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    what: str, probe: Callable[[], Awaitable[object]], within: float = 5.0
) -> None:
    """Wait for ``probe`` to hold: the reader works on its own task, the database is the news."""
    end = time.monotonic() + within
    while not await probe():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


async def holds(value: object) -> bool:
    """A probe for a plain condition: ``eventually("…", lambda: holds(path.exists()))``."""
    return bool(value)
