"""The store's write path alone: claim, start and outcome for every message, as the dispatcher
drives them, with no SMTP, rendering or limits — what the store costs per message.

Run: ``.venv/bin/python bench/store_write.py [--messages N] [--sessions S] [--database URL]``.
``S`` sessions each start a message, "send" it (one event-loop turn) and record ``sent``, the
way SMTP sessions do; one claimer keeps them fed in batches like the dispatcher. Prints the CPU
time of the whole process per message (main thread and the store's writer thread) and the
commits it took; the figure is printed last. SQLite by default (a file in a temp directory);
``--database postgresql+asyncpg://…`` for a fresh, empty PostgreSQL database you provide.
Compare two versions of the code with ``PYTHONPATH=<checkout>/daemon``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from campaignd.queue.store import Outcome, RecipientIn, Store

T0 = 1_800_000_000.0


async def run(url: str, root: Path, messages: int, sessions: int) -> tuple[float, float, str]:
    store = await Store.open(url, root=root)
    try:
        await store.ensure_campaign("bench", state="sending")
        people = [
            RecipientIn(
                key=f"user{i}@example{i % 50}.com",
                email=f"user{i}@example{i % 50}.com",
                smtp_address=f"user{i}@example{i % 50}.com",
                domain=f"example{i % 50}.com",
                fields={"first_name": f"User{i}"},
                source=f"people.csv:{i + 2}",
            )
            for i in range(messages)
        ]
        await store.add_recipients("bench", people, batch=5000)
        await store.enqueue("bench", 0, 1, [(p.key, "t") for p in people], due=T0, batch=5000)
        queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=sessions * 4)

        async def claimer() -> None:
            while True:
                got = await store.claim(
                    worker="bench:1", now=T0, lease=600, limit=64, campaign_ids=["bench"]
                )
                if not got:
                    break
                for c in got:
                    await queue.put(c.id)
            for _ in range(sessions):
                await queue.put(None)

        async def session() -> None:
            while (mid := await queue.get()) is not None:
                await store.start(mid, "sink")
                await asyncio.sleep(0)  # the SMTP transaction
                await store.record(
                    [Outcome(id=mid, status="sent", service="sink", message_id=f"<{mid}@b>", at=T0)]
                )

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(claimer(), *(session() for _ in range(sessions)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        counts = (await store.counts("bench")).counts
        assert counts["sent"] == messages, counts
        s = store.commit_stats
        info = f"{s.transactions} commits for {s.items} starts and outcomes (largest {s.largest})"
        return cpu, wall, info
    finally:
        await store.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--sessions", type=int, default=16)
    p.add_argument("--database", default="sqlite:///bench.db")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="campaignd-store-bench-") as tmp:
        cpu, wall, info = asyncio.run(run(args.database, Path(tmp), args.messages, args.sessions))
    n = args.messages
    print(f"{n} messages, {args.sessions} sessions, {args.database}: {info}")
    print(f"{n / wall:,.0f} msg/s")
    print(f"store write path: {cpu * 1000 / n:.3f} CPU ms/msg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
