"""``|join`` and ``|replace`` build their result in one C call that the render budget's hooks
cannot interrupt: sizes made big from recipient data are measured first and refused, in
milliseconds and without the memory; ordinary uses render as Jinja renders them."""

from __future__ import annotations

import time

import pytest

from campaignd.config.templates import (
    HTML_ENV,
    MAX_RENDERED_CHARS,
    TEXT_ENV,
    RenderBudget,
    RenderBudgetExceeded,
    budgeted,
)

DATA = {"first_name": "User12", "users": [{"n": "a"}, {"n": "b"}]}
ENVS = [TEXT_ENV, HTML_ENV]


def render(env: object, source: str) -> str:
    template = env.from_string(source)  # type: ignore[attr-defined]
    with budgeted(RenderBudget()):
        out: str = template.render(**DATA)
    return out


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize(
    "source",
    [
        "{{ range(50000)|join(first_name * 1000) }}",
        "{{ [first_name * 1000000] * 5|join }}",
        "{{ ([first_name * 100000] * 100)|join(', ') }}",
        "{{ (first_name * 100000)|replace('U', first_name * 1000) }}",
        "{{ first_name|replace('', first_name * 1000000) }}",
        "{{ (first_name * 1000)|replace('U', 'x' * 1000)|replace('x', 'y' * 100) }}",
    ],
)
def test_data_made_bombs_are_refused_before_they_are_built(env: object, source: str) -> None:
    started = time.monotonic()
    with pytest.raises(RenderBudgetExceeded, match=r"would make|repetition"):
        render(env, source)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("env", ENVS)
def test_ordinary_joins_and_replaces_are_unchanged(env: object) -> None:
    assert render(env, "{{ [1, 2, 3]|join(', ') }}") == "1, 2, 3"
    assert render(env, "{{ users|join(', ', attribute='n') }}") == "a, b"
    assert render(env, "{{ range(3)|join }}") == "012"
    assert render(env, "{{ 'a-b-c'|replace('-', '+') }}") == "a+b+c"
    assert render(env, "{{ 'abcb'|replace('b', 'X', 1) }}") == "aXcb"
    assert render(env, "{{ 'aXa'|replace('', '.') }}") == ".a.X.a."
    # just under the limit is still fine
    n = MAX_RENDERED_CHARS // 10 - 1
    assert render(env, "{{ range(10)|join('')|replace('0', '-') }}") == "-123456789"
    assert render(env, f"{{{{ ('x' * {n})|replace('x', 'x') }}}}") == "x" * n
