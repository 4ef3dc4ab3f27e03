"""Feedback from a real Maildir through the runner into a real database (SPEC §7).

Files are delivered as an MDA does (written to tmp/, renamed into new/); the safety-net rescan
is set to a minute, so anything that lands within seconds was seen through watchdog.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path

import pytest

from campaignd.config.model import Campaign, Config, MaildirSource, Service, Settings
from campaignd.feedback.maildir import MaildirReader, cur_name
from campaignd.queue.store import Outcome, Store
from campaignd.runtime.feedback_runner import FeedbackRunner
from campaignd.tokens.links import LinkSigner
from campaignd.tokens.verp import codec_for
from tests.integration.store.factory import T0, WORKER, seed

from .samples import personalize
from .waits import eventually, holds

KEY = b"maildir-test-key"
PATTERN = "bounces+{token}@mail.acme.example"
_names = count(1)


def deliver(maildir: Path, raw: bytes) -> Path:
    """Like an MDA: write into tmp/, then rename into new/ (so new/ only holds whole files)."""
    name = f"{time.time_ns()}.{os.getpid()}_{next(_names)}.test"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(raw)
    target = maildir / "new" / name
    tmp.rename(target)
    return target


def make_maildir(path: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def config_for(root: Path, maildir: Path) -> Config:
    service = Service.model_validate(
        {"from": "Acme <outreach@acme.example>", "return_path": PATTERN}
    )
    campaign = Campaign.model_validate(
        {"audience": "lists/x.csv", "services": ["relay"], "template": "t", "kind": "transactional"}
    )
    return Config(
        root=root,
        settings=Settings(feedback=(MaildirSource(maildir=str(maildir)),)),
        services={"relay": service},
        campaigns={"launch": campaign},
    )


@pytest.fixture
async def sent(sqlite_store: Store) -> dict[str, int]:
    await seed(sqlite_store, n=3)
    got = await sqlite_store.claim(
        worker=WORKER, now=T0, lease=60, limit=10, campaign_ids=["launch"]
    )
    await sqlite_store.record(
        [Outcome(id=c.id, status="sent", service="relay", at=T0, message_id=f"<m{c.id}@acme.test>")
         for c in got]
    )  # fmt: skip
    return {c.recipient: c.id for c in got}


@pytest.fixture
async def runner(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[FeedbackRunner]:
    config = config_for(tmp_path, make_maildir(tmp_path / "Maildir"))
    pauses: list[tuple[str, str]] = []
    r = FeedbackRunner(
        sqlite_store, lambda: config, signer=LinkSigner(KEY), on_pause=lambda *a: pauses.append(a),
        clock=lambda: T0 + 600, rescan=60.0,
    )  # fmt: skip
    await r.start()
    try:
        yield r
    finally:
        await r.close()


async def test_bounce_reply_and_unmatched_mail(
    runner: FeedbackRunner, sqlite_store: Store, sent: dict[str, int], tmp_path: Path
) -> None:
    maildir = tmp_path / "Maildir"
    a, b = sent["user0@example.com"], sent["user1@example.com"]
    started = time.monotonic()
    bounce = deliver(
        maildir, personalize("mangled-verp-bounce.eml", verp=codec_for(KEY, PATTERN).address(a))
    )
    reply = deliver(maildir, personalize("thunderbird-reply.eml", message_id=f"m{b}@acme.test"))
    junk = deliver(maildir, personalize("unrelated.eml"))

    async def landed() -> bool:
        rows = [await sqlite_store.get_message(i) for i in (a, b)]
        return bool(rows[0] and rows[0].status == "bounced" and rows[1] and rows[1].replied_at)

    await eventually("the bounce and the reply to be applied", landed)
    assert time.monotonic() - started < 3.0  # watchdog, not the 60 s rescan
    await eventually("handled mail to move to cur/", lambda: holds(not bounce.exists()))
    assert sorted(p.name for p in (maildir / "cur").iterdir()) == sorted(
        cur_name(p.name) for p in (bounce, reply)
    )
    assert junk.exists()  # unmatched: left in new/, never deleted
    assert await sqlite_store.suppressed(["user0@example.com"]) == {"user0@example.com"}
    status = await runner.status()
    assert status["unmatched"] == 1
    [source] = status["sources"]
    assert (source["state"], source["handled"], source["unmatched"]) == ("watching", 2, 1)

    # The same bounce delivered again: filed away, nothing applied twice.
    counts = (await sqlite_store.counts("launch")).counts
    again = deliver(
        maildir, personalize("mangled-verp-bounce.eml", verp=codec_for(KEY, PATTERN).address(a))
    )
    await eventually("the copy to be filed", lambda: holds(not again.exists()))
    assert (await sqlite_store.counts("launch")).counts == counts
    assert len(await sqlite_store.list_suppressions()) == 1


async def test_a_maildir_made_later_and_the_rescan_safety_net(tmp_path: Path) -> None:
    seen: list[bytes] = []

    async def handle(raw: bytes, source: str) -> bool:
        seen.append(raw)
        return b"keep" not in raw

    reader = MaildirReader(tmp_path / "late", handle, rescan=0.3)
    task = asyncio.create_task(reader.run())
    try:
        await eventually(
            "the missing Maildir to be reported", lambda: holds(reader.stats.state == "error")
        )
        assert "not a Maildir" in (reader.stats.last_error or "")
        maildir = make_maildir(tmp_path / "late")
        deliver(maildir, b"Subject: one\n\nhello\n")
        kept = deliver(maildir, b"Subject: keep\n\nkeep me\n")
        await eventually("both mails to be read", lambda: holds(len(seen) == 2))
        assert reader.stats.state == "watching"
        assert next((maildir / "cur").iterdir()).name.endswith(":2,S")
        # Left in new/ and not read again while it is unchanged …
        assert await reader.scan() == 0 and len(seen) == 2 and kept.exists()
        # … but rewritten in place (no "created" event for watchdog), the rescan finds it.
        kept.write_bytes(b"Subject: now it matches\n\nhello\n")
        await eventually("the rescan to file it", lambda: holds(not kept.exists()), within=3)
        assert len(seen) == 3 and reader.stats.handled == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_cur_names_keep_flags() -> None:
    assert cur_name("123.abc.host") == "123.abc.host:2,S"
    assert cur_name("123.abc.host:2,F") == "123.abc.host:2,FS"
    assert cur_name("123.abc.host:2,S") == "123.abc.host:2,S"


async def test_a_reload_that_changes_feedback_replaces_the_readers(
    sqlite_store: Store, tmp_path: Path
) -> None:
    first, second = make_maildir(tmp_path / "one"), make_maildir(tmp_path / "two")
    current = [config_for(tmp_path, first)]
    runner = FeedbackRunner(sqlite_store, lambda: current[0], signer=LinkSigner(KEY),
                            on_pause=lambda *a: None, rescan=60.0)  # fmt: skip
    await runner.start()
    try:
        [old] = runner.readers.values()
        assert old.name == f"maildir:{first}"
        reloaded = config_for(tmp_path, second)
        current[0] = Config(
            root=tmp_path, settings=reloaded.settings, services=reloaded.services,
            campaigns=reloaded.campaigns, generation=2,
        )  # fmt: skip
        await eventually(
            "the new Maildir's reader",
            lambda: holds([r.name for r in runner.readers.values()] == [f"maildir:{second}"]),
        )
        await eventually("the old reader to stop", lambda: holds(old.stats.state == "stopped"))
    finally:
        await runner.close()
