"""Reading a Maildir of bounces, complaints and replies (SPEC §3 ``feedback: - maildir:``).

Mail arrives in ``new/`` (an MDA writes it to ``tmp/`` and renames it, so a file in ``new/``
is complete). Each one is handed to the handler; once handled it is renamed into ``cur/`` with
the Seen flag — never deleted, so the operator can always look at what campaignd acted on.
Mail the handler could not match stays in ``new/`` and is not read again while its name, size
and time are unchanged.

watchdog (inotify on Linux) wakes the reader as soon as a file lands; a rescan every
``rescan`` seconds is the safety net for file systems without change notification (NFS, some
container mounts) and for events lost while the daemon was busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Final

from .sources import MailHandler, SourceStats

__all__ = ["RESCAN", "MaildirReader", "cur_name"]

log = logging.getLogger("campaignd.feedback")

RESCAN: Final = 30.0  # seconds between safety-net rescans
MAX_MAIL: Final = 32 * 1024 * 1024  # bytes; a feedback mail is small, a bigger file is not one


def cur_name(name: str) -> str:
    """The ``cur/`` name of a ``new/`` file: Maildir info ``:2,`` with the Seen flag."""
    base, sep, flags = name.partition(":2,")
    if not sep:
        return f"{name}:2,S"
    return name if "S" in flags else f"{base}:2,{''.join(sorted(flags + 'S'))}"


class MaildirReader:
    def __init__(self, path: Path, handle: MailHandler, *, rescan: float = RESCAN) -> None:
        self.path = path
        self.handle = handle
        self.rescan = rescan
        self.name = f"maildir:{path}"
        self.stats = SourceStats(self.name)
        self._wake = asyncio.Event()
        self._left: set[tuple[str, int, int]] = set()  # (name, size, mtime_ns) left in new/
        self._observer: Any = None

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Scan, then wait for a file (or the rescan timer); until cancelled."""
        try:
            while True:
                self._wake.clear()
                if self._ready():
                    await self.scan()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.rescan)
        finally:
            await self._stop_watching()
            self.stats.state = "stopped"

    def _ready(self) -> bool:
        """Whether the Maildir exists (it may be created after the daemon starts)."""
        missing = [d for d in ("new", "cur") if not (self.path / d).is_dir()]
        if missing:
            message = (
                f"{self.path} is not a Maildir (no {'/ or '.join(missing)}/) — create it "
                f"(mkdir -p {self.path}/{{new,cur,tmp}}) or fix feedback: in campaignd.yaml"
            )
            if self.stats.last_error != message:
                log.error("feedback %s", message)
                self.stats.failed(message)
            self.stats.state = "error"
            return False
        if self._observer is None:
            self._start_watching()
        self.stats.state = "watching"
        return True

    def _start_watching(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        loop = asyncio.get_running_loop()
        wake = self._wake

        class _Handler(FileSystemEventHandler):
            # Called on watchdog's thread: only hand the news to the event loop.
            def on_created(self, event: Any) -> None:
                loop.call_soon_threadsafe(wake.set)

            def on_moved(self, event: Any) -> None:
                loop.call_soon_threadsafe(wake.set)

        observer = Observer()
        try:
            observer.schedule(_Handler(), str(self.path / "new"), recursive=False)
            observer.start()
        except OSError as exc:  # inotify limits: the rescan timer still works
            log.warning("feedback %s: cannot watch for new mail (%s); rescanning every %.0fs",
                        self.name, exc, self.rescan)  # fmt: skip
            return
        self._observer = observer

    async def _stop_watching(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            await asyncio.to_thread(observer.join, 5.0)

    # ------------------------------------------------------------ one pass

    async def scan(self) -> int:
        """Handle every file in ``new/`` once; returns how many were filed into ``cur/``."""
        new, cur = self.path / "new", self.path / "cur"
        try:
            entries = sorted(os.scandir(new), key=lambda e: e.name)
        except OSError as exc:
            self.stats.failed(f"cannot list {new}: {exc.strerror or exc}")
            return 0
        moved = 0
        seen: set[tuple[str, int, int]] = set()
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue  # filed away by someone else meanwhile
            if not entry.is_file():
                continue
            key = (entry.name, st.st_size, st.st_mtime_ns)
            seen.add(key)
            if key in self._left:
                continue
            if await self._one(Path(entry.path), cur / cur_name(entry.name), key, st.st_size):
                moved += 1
        self._left &= seen  # forget files that are gone
        return moved

    async def _one(self, path: Path, target: Path, key: tuple[str, int, int], size: int) -> bool:
        if size > MAX_MAIL:
            self._leave(key, f"{path.name} is {size} bytes — not a feedback mail, left in new/")
            return False
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return False
        except OSError as exc:
            self.stats.failed(f"cannot read {path}: {exc.strerror or exc}")
            return False
        try:
            handled = await self.handle(raw, self.name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The database is away, say: the file stays and the next pass tries again.
            log.exception("feedback %s: handling %s failed", self.name, path.name)
            self.stats.failed(f"handling {path.name} failed: {exc}")
            return False
        self.stats.mail(handled)
        if not handled:
            self._left.add(key)
            return False
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return False  # a mail client filed it first; it was handled all the same
        except OSError as exc:
            # Applied but not movable: dedupe keys make the next pass harmless.
            self.stats.failed(f"cannot move {path.name} to cur/: {exc.strerror or exc}")
            return False
        return True

    def _leave(self, key: tuple[str, int, int], why: str) -> None:
        if key not in self._left:
            log.warning("feedback %s: %s", self.name, why)
            self.stats.mail(False)
        self._left.add(key)
