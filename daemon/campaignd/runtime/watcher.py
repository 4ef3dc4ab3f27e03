"""Live reload: watchdog observes the config root and the audience files in use.

Events arrive on watchdog's thread and are handed to the event loop, where bursts are
debounced: a ``git pull`` touching twenty files is one reload, run once the tree has been quiet
for ``debounce`` (or ``max_delay`` after the burst began, so a file rewritten non-stop still
gets loaded). A periodic rescan compares the files' stamps with those taken before the last
load, so an event the OS dropped (inotify queue overflow, a network file system, no inotify at
all) delays a change by at most ``rescan`` seconds.

The watcher decides nothing: it says "the config changed" or "an audience file changed", and
the daemon reloads or the conductor re-reads the lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from ..config.load import DIRS, SETTINGS_NAMES, FileStamp, ignored

log = logging.getLogger("campaignd.watch")

Kind = Literal["config", "audience"]
DEBOUNCE = 0.5
MAX_DELAY = 3.0
RESCAN = 10.0
# Reads (opened, closed without writing) are left out: loading the files must not trigger
# another load.
_WRITES = {
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    EVENT_TYPE_CLOSED,
}
_CONFIG_DIRS = {dirname for dirname, _ in DIRS.values()}


def classify(root: Path, audience: Iterable[str], path: str) -> Kind | None:
    """What a change to ``path`` means: a config file, an audience file in use, or nothing
    (the database, the outbox, editor leftovers, .git)."""
    p = Path(path)
    if ignored(p.name):
        return None
    if path in audience:
        return "audience"
    try:
        parts = p.relative_to(root).parts
    except ValueError:
        return None
    if not parts:
        return None
    if parts[0] in _CONFIG_DIRS or (len(parts) == 1 and parts[0] in SETTINGS_NAMES):
        return "config"
    return None


class _Handler(FileSystemEventHandler):
    def __init__(self, owner: Watcher) -> None:
        self.owner = owner

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _WRITES:
            return
        if event.is_directory and event.event_type == EVENT_TYPE_MODIFIED:
            return  # comes with the event of the file created or deleted in it (or a swap file)
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                self.owner._from_thread(os.fsdecode(raw))


class Watcher:
    def __init__(
        self,
        root: Path,
        *,
        reload: Callable[[str], object],
        audience_changed: Callable[[], object],
        stamps: Callable[[], Mapping[str, FileStamp]],
        debounce: float = DEBOUNCE,
        max_delay: float = MAX_DELAY,
        rescan: float = RESCAN,
        observe: bool = True,
    ) -> None:
        self.root = root.resolve()
        self._reload = reload
        self._audience_changed = audience_changed
        self._stamps = stamps
        self.debounce = debounce
        self.max_delay = max_delay
        self.rescan = rescan
        self.observe = observe
        self._baseline: Mapping[str, FileStamp] | None = None
        self._audience: frozenset[str] = frozenset()
        # (directory, recursive) → (its inode when watched, watchdog's watch)
        self._watches: dict[tuple[str, bool], tuple[int, Any]] = {}
        self._kinds: set[Kind] = set()
        self._changed = asyncio.Event()
        self._last = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: Any = None
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0
        """Reloads this watcher asked for (tests read it)."""

    # ------------------------------------------------------------ control

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # watchdog logs every inotify event at debug level: with the log file in a watched
        # directory (the config root, say) each line would make another event, and another.
        logging.getLogger("watchdog").setLevel(max(logging.INFO, log.getEffectiveLevel()))
        if self.observe:
            try:
                observer = Observer()
                observer.start()
                self._observer = observer
            except OSError as exc:
                log.warning(
                    "cannot watch %s (%s): changes are found by a rescan every %.0fs",
                    self.root,
                    exc,
                    self.rescan,
                )
            self._sync()
        self._task = asyncio.create_task(self._run(), name="watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            await asyncio.to_thread(observer.join, 5.0)

    def loaded(self, stamps: Mapping[str, FileStamp]) -> None:
        """The config as of ``stamps`` (taken before the load read the files) is in force."""
        self._baseline = dict(stamps)

    def watch_audience(self, paths: Iterable[Path]) -> None:
        """The audience files the campaigns use now (called after every load)."""
        self._audience = frozenset(str(p.resolve()) for p in paths)
        self._sync()

    def _sync(self) -> None:
        """Watch the root itself, each config directory with what is below it, and the
        directories of the audience files — not the whole root: it may hold a virtualenv, a
        .git and the database, whose churn is no business of ours."""
        if self._observer is None:
            return
        wanted = {(str(self.root), False)}
        wanted |= {(str(self.root / d), True) for d in _CONFIG_DIRS}
        wanted |= {(str(Path(f).parent), False) for f in self._audience}
        inodes: dict[tuple[str, bool], int] = {}
        for key in wanted:
            with contextlib.suppress(OSError):
                inodes[key] = os.stat(key[0]).st_ino
        for key, (inode, watch) in list(self._watches.items()):
            # Gone, or replaced (a checkout recreated the directory): its watch is dead.
            if inodes.get(key) != inode:
                del self._watches[key]
                with contextlib.suppress(KeyError, OSError):
                    self._observer.unschedule(watch)
        for key, inode in inodes.items():
            if key in self._watches:
                continue
            try:
                watch = self._observer.schedule(_Handler(self), key[0], recursive=key[1])
            except OSError as exc:
                log.warning("cannot watch %s (%s): the rescan covers it", key[0], exc)
                continue
            self._watches[key] = (inode, watch)

    # ------------------------------------------------------------ events

    def _from_thread(self, path: str) -> None:
        kind = classify(self.root, self._audience, path)
        if kind is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._note, kind)

    def _note(self, kind: Kind) -> None:
        self._kinds.add(kind)
        self._last = asyncio.get_running_loop().time()
        self._changed.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=self.rescan)
            except TimeoutError:
                self._check_stamps()
                continue
            first = loop.time()
            while True:  # debounce: until quiet, or max_delay after the first event
                self._changed.clear()
                wait = min(self._last + self.debounce, first + self.max_delay) - loop.time()
                if wait <= 0:
                    break
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=wait)
                except TimeoutError:
                    break
            kinds, self._kinds = self._kinds, set()
            self._sync()  # a config directory may have appeared
            if "config" in kinds:
                self._ask_reload("files changed")
            elif "audience" in kinds:
                self._audience_changed()

    def _check_stamps(self) -> None:
        try:
            now = self._stamps()
        except Exception:  # a rescan must never kill the watcher
            log.exception("config rescan failed")
            return
        if self._baseline is not None and dict(now) != dict(self._baseline):
            changed = sorted(set(now.items()) ^ set(self._baseline.items()))
            names = sorted({Path(p).name for p, _ in changed})
            log.info("rescan: %s changed without a file event", ", ".join(names[:5]))
            self._ask_reload("rescan")
        self._audience_changed()  # the conductor compares the lists' stamps itself

    def _ask_reload(self, why: str) -> None:
        self.reloads += 1
        self._reload(why)
