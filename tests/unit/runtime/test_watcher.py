"""The watcher in-process, with real inotify: which files count, debouncing, the rescan."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from campaignd.config.load import config_stamps
from campaignd.runtime.watcher import Watcher, classify


def test_classify_keeps_to_config_and_audience_files(tmp_path: Path) -> None:
    root = tmp_path
    lists = {str(root / "lists/a.csv"), "/srv/shared/b.csv"}
    assert classify(root, lists, str(root / "campaignd.yaml")) == "config"
    assert classify(root, lists, str(root / "campaigns.d/news.yaml")) == "config"
    assert classify(root, lists, str(root / "templates.d/body.html.j2")) == "config"
    assert classify(root, lists, str(root / "services.d")) == "config"  # a directory event
    assert classify(root, lists, str(root / "lists/a.csv")) == "audience"
    assert classify(root, lists, "/srv/shared/b.csv") == "audience"
    for quiet in (
        "campaigns.d/.news.yaml.swp",
        "campaigns.d/news.yaml~",
        "state/campaignd.db-wal",
        "lists/other.csv",
        "daemon.log",
        ".git/index",
    ):
        assert classify(root, lists, str(root / quiet)) is None, quiet


def _root(tmp_path: Path) -> Path:
    for d in ("services.d", "templates.d", "campaigns.d", "lists"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "campaignd.yaml").write_text("timezone: UTC\n")
    return tmp_path


async def _watcher(root: Path, **kw: Any) -> tuple[Watcher, asyncio.Queue[str]]:
    events: asyncio.Queue[str] = asyncio.Queue()
    watcher = Watcher(
        root,
        reload=lambda why: events.put_nowait(f"reload:{why}"),
        audience_changed=lambda: events.put_nowait("audience"),
        stamps=lambda: config_stamps(root),
        **kw,
    )
    watcher.loaded(config_stamps(root))
    await watcher.start()
    return watcher, events


async def test_a_burst_of_file_changes_is_one_reload(tmp_path: Path) -> None:
    root = _root(tmp_path)
    watcher, events = await _watcher(root, debounce=0.3, max_delay=5.0, rescan=60)
    try:
        for i in range(25):  # like a git pull: many files, one after the other
            (root / "campaigns.d" / f"c{i}.yaml").write_text(f"name: c{i}\n")
            (root / "templates.d" / f"t{i}.yaml").write_text("subject: x\n")
        assert await asyncio.wait_for(events.get(), 10) == "reload:files changed"
        # nothing else was pending: a second reload could only come from a new change
        (root / "services.d" / "s.yaml").write_text("host: a\n")
        assert await asyncio.wait_for(events.get(), 10) == "reload:files changed"
        assert watcher.reloads == 2
    finally:
        await watcher.stop()


async def test_reading_the_files_and_writing_elsewhere_does_not_reload(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "campaigns.d" / "c.yaml").write_text("name: c\n")
    watcher, events = await _watcher(root, debounce=0.1, max_delay=1.0, rescan=60)
    try:
        (root / "campaigns.d" / "c.yaml").read_text()  # the daemon's own load reads them
        (root / "state").mkdir()
        (root / "state" / "campaignd.db").write_bytes(b"x" * 100)
        (root / "campaigns.d" / ".c.yaml.swp").write_text("vim")
        # a change that does count, written last: the first event must be this one
        (root / "lists" / "a.csv").write_text("email\n")
        watcher.watch_audience([root / "lists" / "a.csv"])
        (root / "lists" / "a.csv").write_text("email\nx@example.com\n")
        assert await asyncio.wait_for(events.get(), 10) == "audience"
        assert watcher.reloads == 0
    finally:
        await watcher.stop()


async def test_an_audience_file_outside_the_root_is_watched(tmp_path: Path) -> None:
    root = _root(tmp_path / "root")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "people.csv").write_text("email\n")
    watcher, events = await _watcher(root, debounce=0.1, max_delay=1.0, rescan=60)
    try:
        watcher.watch_audience([shared / "people.csv"])
        (shared / "people.csv").write_text("email\nnew@example.com\n")
        assert await asyncio.wait_for(events.get(), 10) == "audience"
    finally:
        await watcher.stop()


async def test_the_rescan_finds_a_change_no_event_reported(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "campaigns.d" / "c.yaml").write_text("name: c\n")
    watcher, events = await _watcher(root, observe=False, rescan=0.1)  # the OS says nothing
    try:
        assert await asyncio.wait_for(events.get(), 10) == "audience"  # a rescan, no change
        (root / "campaigns.d" / "c.yaml").write_text("name: changed\n")
        while (got := await asyncio.wait_for(events.get(), 10)) == "audience":
            pass
        assert got == "reload:rescan"
    finally:
        await watcher.stop()


# ---------------------------------------------------------------- the daemon
