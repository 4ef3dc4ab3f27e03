"""``transport: outbox``: write each message as an .eml file instead of sending it (dry runs).

Files appear atomically (written under a dot-name, then linked into place), so a reader never
sees half a message, and a name is never reused even by two daemons writing the same folder.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from datetime import UTC, datetime
from pathlib import Path

from ..config.model import Service, as_path
from .classify import Reply
from .smtp import ConnectionFailed, Envelope


class OutboxTransport:
    """Implements the worker's ``Transport`` by writing ``<outbox>/<timestamp>-<n>.eml``."""

    def __init__(self, service_id: str, service: Service, root: Path) -> None:
        self.service_id = service_id
        self.service = service
        self.root = root
        self.directory = as_path(root, service.outbox or f"outbox/{service_id}")
        self._counter = itertools.count(1)

    async def send(self, env: Envelope) -> Reply:
        try:
            path = await asyncio.to_thread(self._write, env)
        except OSError as exc:
            # An unwritable folder is the service's failure, not the message's: the worker's
            # breaker skips this service and the message stays queued.
            text = f"cannot write to {self.directory}: {exc.strerror or exc}"
            reply = Reply("deferred", None, None, text, close_session=True, stage="connect")
            raise ConnectionFailed(
                self.service_id, reply, peer=str(self.directory), step="connect"
            ) from exc
        return Reply("sent", 250, None, f"written to {self._shown(path)}", stage="eod")

    async def close(self) -> None:
        """Nothing is held open between messages."""

    def _shown(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def _write(self, env: Envelope) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        # What a final MTA adds on delivery, so a dry run shows the envelope (VERP, IDNA) too.
        head = f"Return-Path: <{env.sender}>\r\nX-Original-To: {env.recipient}\r\n"
        content = head.encode("utf-8") + env.data
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        temp = self.directory / f".{stamp}-{os.getpid()}-{next(self._counter)}.tmp"
        temp.write_bytes(content)
        try:
            while True:
                final = self.directory / f"{stamp}-{next(self._counter)}.eml"
                try:
                    os.link(temp, final)  # fails if the name exists: never overwrite a message
                except FileExistsError:
                    continue
                except OSError:  # a filesystem without hard links: the name is unique enough
                    os.replace(temp, final)
                return final
        finally:
            temp.unlink(missing_ok=True)
