"""The reading half of enrollment: a campaign's lists read, validated, de-duplicated and
filtered into batches the store writes as they are (``EnrollTexts``: two JSON strings).

For a large list it runs in a child process (``run_in_process``): reading a million rows is
seconds of pure Python, and in the daemon's process it would share one interpreter lock with
the writer thread and the event loop, so the API, the sends and the database writes would all
wait on it. The child does all the per-row work, including encoding the rows for SQLite, and
hands over one message per batch; the daemon's own work per batch is a few calls. A small list
runs the same code in a thread (``run``), where starting a process would cost more than
reading it.

The protocol, one message at a time over a ``Channel``:

* ``("batch", texts, dropped, firsts)``: the accepted rows as ``EnrollTexts``, the rows not
  enrolled (``Excluded``, in list order) and, for the duplicates among them, the source of the
  row each repeats when that row is in the same batch;
* ``("done", report)`` at the end, or ``("failed", exception)``;
* asking: ``channel.ask(method, *args)`` answers the suppression and history questions (the
  daemon's store answers; on SQLite the suppression list is read directly on the reader's own
  read-only connection).

The child holds no database write connection and commits nothing: killing it at any moment
loses nothing, and the daemon kills it when enrollment stops early (a failed write, shutdown).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from ..config.model import Campaign
from ..plan.audience import AudienceReport, Excluded, Recipient, build_audience
from ..queue.hot import EnrollTexts, enroll_texts
from ..queue.lookup import SqliteSuppressions
from ..render.templates import choose_template

Batch = tuple[str, EnrollTexts, list[Excluded], dict[str, str]]


@dataclass(frozen=True)
class ReadJob:
    """Everything the reader needs, picklable for the child process."""

    campaign: Campaign
    campaign_id: str
    root: Path
    now: datetime
    required_fields: tuple[str, ...]
    batch_size: int
    suppressions: SqliteSuppressions | None
    """A direct read-only reader of the suppression list (SQLite), else None: ask."""


class Channel(Protocol):
    def send(self, message: tuple[Any, ...]) -> None: ...
    def ask(self, method: str, *args: Any) -> set[str]: ...


class PipeChannel:
    """The child process's end of a ``multiprocessing`` pipe: questions are messages too,
    answered on the same pipe (the daemon answers each before it reads on)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, message: tuple[Any, ...]) -> None:
        self.conn.send(message)

    def ask(self, method: str, *args: Any) -> set[str]:
        self.conn.send(("ask", method, *args))
        answer: set[str] = self.conn.recv()
        return answer


class _Asking:
    """``History`` and ``Suppressions`` for the audience, answered through the channel."""

    def __init__(self, channel: Channel, direct: SqliteSuppressions | None) -> None:
        self.channel = channel
        self.direct = direct

    def suppressed(self, keys: Sequence[str]) -> set[str]:
        if self.direct is not None:
            return self.direct.suppressed(keys)
        return self.channel.ask("suppressed", list(keys))

    def contacted_since(self, keys: Sequence[str], since: datetime) -> set[str]:
        return self.channel.ask("contacted_since", list(keys), since)

    def received_campaigns(self, keys: Sequence[str], campaign_ids: Sequence[str]) -> set[str]:
        return self.channel.ask("received_campaigns", list(keys), list(campaign_ids))


def run_in_process(conn: Connection, job: ReadJob) -> None:
    """The child process's entry point."""
    # One job, then the process ends. Reading makes no reference cycles (each batch's rows are
    # freed by reference counting once sent), so the cycle collector would only walk the
    # batch's objects again and again: about three seconds of a million-row list.
    gc.disable()
    try:
        run(PipeChannel(conn), job)
    finally:
        conn.close()


def run(channel: Channel, job: ReadJob) -> None:
    """Read the audience and send its batches, then ``done`` or ``failed``."""
    try:
        report = read(channel, job)
    except Exception as exc:
        try:
            channel.send(("failed", exc))
        except Exception:
            # Not picklable (then say it in words), or the daemon is gone (nobody to tell).
            with contextlib.suppress(Exception):
                channel.send(("failed", RuntimeError(f"{type(exc).__name__}: {exc}")))
    else:
        channel.send(("done", report))
    finally:
        if job.suppressions is not None:
            job.suppressions.close()


def read(channel: Channel, job: ReadJob) -> AudienceReport:
    asking = _Asking(channel, job.suppressions)
    audience = build_audience(
        job.campaign,
        job.root,
        history=asking,
        suppressions=asking,
        now=job.now,
        required_fields=job.required_fields,
    )
    campaign_id, templates = job.campaign_id, job.campaign.steps[0].template
    # One template (no A/B test) is the common case: no hash per row then.
    only = templates[0] if len(templates) == 1 else None
    size = job.batch_size
    accepted: list[tuple[Recipient, str]] = []
    dropped: list[Excluded] = []
    rows = 0
    for row in audience.rows():
        rows += 1
        if type(row) is Recipient:
            template = (
                only if only is not None else choose_template(campaign_id, row.key, templates)
            )
            accepted.append((row, template))
        else:
            dropped.append(row)  # type: ignore[arg-type]
        if rows >= size:
            channel.send(_batch(accepted, dropped))
            accepted, dropped, rows = [], [], 0
    if rows:
        channel.send(_batch(accepted, dropped))
    return audience.report


def _batch(accepted: list[tuple[Recipient, str]], dropped: list[Excluded]) -> Batch:
    """The batch message; for its duplicates, the source of the row each repeats when that
    row is in this batch too (the daemon asks the store for the others)."""
    repeated: dict[str, str] = {}
    duplicates = {x.key for x in dropped if x.kind == "duplicate" and x.key is not None}
    if duplicates:
        for r, _ in accepted:
            if r.key in duplicates:
                repeated.setdefault(r.key, r.source)
        for x in dropped:
            if x.recipient is not None and x.key in duplicates:
                repeated.setdefault(x.key, x.source)
    return "batch", enroll_texts(accepted), dropped, repeated
