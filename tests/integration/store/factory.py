"""Building blocks for store tests: campaigns with enrolled recipients and queued messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from campaignd.queue.store import RecipientIn, Store

T0 = 1_800_000_000.0
"""A fixed 'now' (2027-01-15 08:00 UTC) so times in assertions are exact."""
WORKER = "host-a:100"
OpenStore = Callable[[], Awaitable[Store]]
"""Opens another Store on the test's database (another daemon, or a restart)."""


def person(i: int, domain: str = "example.com") -> RecipientIn:
    email = f"User{i}@{domain}"
    return RecipientIn(
        key=email.lower(),
        email=email,
        smtp_address=email,
        domain=domain,
        fields={"email": email, "first_name": f"Name{i}", "n": str(i)},
        source=f"lists/people.csv:{i + 2}",
        timezone="Europe/Berlin" if i % 2 else None,
    )


async def seed(
    store: Store,
    campaign: str = "launch",
    n: int = 10,
    *,
    state: str = "sending",
    step: int = 1,
    due: float = T0,
    templates: tuple[str, ...] = ("intro",),
    start: int = 0,
) -> list[str]:
    """A campaign in ``state`` with ``n`` recipients queued for ``step``; returns their keys."""
    await store.ensure_campaign(campaign, state=state)
    people = [person(i) for i in range(start, start + n)]
    await store.add_recipients(campaign, people)
    items = [(p.key, templates[i % len(templates)]) for i, p in enumerate(people)]
    await store.enqueue(campaign, 0, step, items, due=due)
    return [p.key for p in people]
