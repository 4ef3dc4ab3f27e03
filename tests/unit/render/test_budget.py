"""Rendering is bounded: a template cannot freeze the daemon or send non-compliant mail."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import pytest

from campaignd.config.model import Template
from campaignd.config.templates import RenderBudget, budgeted
from campaignd.delivery.offloop import RenderThread
from campaignd.errors import NotCompliant, RenderCutOff
from campaignd.render.message import PreparedTemplate, RenderContext

CTX = RenderContext(
    "news", "News", 1, "Acme <o@acme.example>", True, "Acme Inc, 1 Main St", require_compliance=True
)
UNSUB = "https://acme.example/u/tok"
WHEN = datetime(2026, 1, 5, 9, tzinfo=UTC)


def render(text: str, fields: dict[str, str] | None = None, ctx: RenderContext = CTX) -> str:
    t = Template(subject="Hi", text=text + "\n{{ unsubscribe_url }} {{ postal_address }}")
    prepared = PreparedTemplate("t", t, ctx)
    out = prepared.render(
        fields or {},
        to_address="ann@example.com",
        message_id="<1@acme.example>",
        send_time=WHEN,
        unsubscribe_url=UNSUB,
    )
    return out.data.decode()


# Bombs driven by recipient data, so the load-time check cannot see the numbers.
BOMBS = [
    "{{ lipsum(n|int) }}",
    "{% for i in range(n|int) %}{% for j in range(n|int) %}{% endfor %}{% endfor %}",
    "{{ 'x' * (n|int) * (n|int) }}",
    "{{ 'x' | center(n|int * 100) }}",
    "{{ 'x'.ljust(n|int * 100) }}",
    "{{ '%9999999d' % 1 }}",
    "{{ '{:>9999999}'.format(1) }}",
    "{% for i in range(n|int) %}{% for j in range(n|int) %}{{ i }}{% endfor %}{% endfor %}",
    "{% macro f(k) %}{{ f(k) }}{% endmacro %}{{ f(1) }}",
]


@pytest.mark.parametrize("bomb", BOMBS)
def test_a_bomb_fails_its_message_quickly_with_a_reason(bomb: str) -> None:
    began = time.monotonic()
    with pytest.raises(Exception) as caught:
        render(bomb, {"n": "100000"})
    took = time.monotonic() - began
    assert took < 2.5, took
    assert "template t" in str(caught.value)
    assert caught.type.__name__ in ("RenderCutOff", "RenderError")


def test_a_slow_render_is_cut_at_its_deadline() -> None:
    # Many cheap method calls: only the clock stops this one.
    slow = "{% for a in s %}{% for b in s %}{{ 'x'.upper() }}{% endfor %}{% endfor %}"
    began = time.monotonic()
    with budgeted(RenderBudget(0.2)), pytest.raises(RenderCutOff, match=r"longer than 0\.2 s"):
        render(slow, {"s": "y" * 400})
    assert time.monotonic() - began < 1.5


def test_output_is_capped() -> None:
    with pytest.raises(RenderCutOff, match="text part grows past 4 MiB"):
        render("{% for i in range(90000) %}{{ s }}{% endfor %}", {"s": "y" * 99})


def test_ordinary_templates_render_as_before() -> None:
    out = render("{% for i in range(3) %}{{ i }}{% endfor %} {{ lipsum(2, false) | length > 0 }}")
    assert "012 True" in out


def test_a_conditional_unsubscribe_link_is_never_sent_without_it() -> None:
    t = Template(
        subject="Hi",
        text="{% if vip == 'y' %}{{ unsubscribe_url }}{% endif %} {{ postal_address }}",
    )
    prepared = PreparedTemplate("t", t, CTX)
    kw = {"to_address": "a@b.example", "message_id": "<1@acme.example>", "send_time": WHEN}
    assert UNSUB in prepared.render({"vip": "y"}, unsubscribe_url=UNSUB, **kw).data.decode()
    with pytest.raises(NotCompliant, match="lacks the unsubscribe link"):
        prepared.render({"vip": "n"}, unsubscribe_url=UNSUB, **kw)
    t2 = Template(
        subject="Hi", text="{{ unsubscribe_url }}{% if vip == 'y' %}{{ postal_address }}{% endif %}"
    )
    with pytest.raises(NotCompliant, match="lacks the postal address"):
        PreparedTemplate("t", t2, CTX).render({"vip": "n"}, unsubscribe_url=UNSUB, **kw)


async def test_a_render_that_ignores_its_budget_is_abandoned_not_awaited() -> None:
    thread = RenderThread(hard_limit=0.3)
    release = threading.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    began = time.monotonic()
    with pytest.raises(RenderCutOff, match=r"cut off after 0\.3 s"):
        await thread.run(lambda: release.wait(30), what="template stuck")
    assert time.monotonic() - began < 1.5
    assert ticks >= 10  # the event loop went on meanwhile
    # the next render runs on a fresh thread at once
    assert await thread.run(lambda: 42, what="template ok") == 42
    assert thread.abandoned == 1
    release.set()
    task.cancel()
