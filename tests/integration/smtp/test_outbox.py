"""transport: outbox writes each message as a parseable .eml file, atomically."""

from __future__ import annotations

import asyncio
import email
from email.policy import default
from pathlib import Path

import pytest

from campaignd.delivery.outbox import OutboxTransport
from campaignd.delivery.smtp import ConnectionFailed

from .conftest import envelope
from .servers import service_for


async def test_writes_parseable_eml_files(tmp_path: Path) -> None:
    service = service_for(25, transport="outbox", outbox="outbox/dry")
    outbox = OutboxTransport("dry", service, tmp_path)
    replies = await asyncio.gather(
        *(outbox.send(envelope(f"r{i}@example.com", subject=f"n{i}")) for i in range(20))
    )
    files = sorted((tmp_path / "outbox" / "dry").iterdir())
    assert len(files) == 20 and all(f.suffix == ".eml" for f in files)  # no temp files left
    assert len({f.name for f in files}) == 20
    assert {r.kind for r in replies} == {"sent"} and {r.code for r in replies} == {250}
    first = replies[0].summary()
    assert first.startswith("250 written to outbox/dry/") and first.endswith(".eml")
    name = first.removeprefix("250 written to ")
    parsed = email.message_from_bytes((tmp_path / name).read_bytes(), policy=default)
    assert parsed["Subject"] == "n0" and parsed["To"] == "r0@example.com"
    assert parsed["Return-Path"] == "<outreach@acme.test>"
    assert parsed["X-Original-To"] == "r0@example.com"
    assert parsed.get_content().strip() == "Hello!"
    await outbox.close()


async def test_unwritable_outbox_is_a_connection_failure(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the folder should be")
    service = service_for(25, transport="outbox", outbox="blocked/sub")
    outbox = OutboxTransport("dry", service, tmp_path)
    with pytest.raises(ConnectionFailed, match=r"cannot write to .*blocked/sub"):
        await outbox.send(envelope())
