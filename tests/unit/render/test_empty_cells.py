"""SPEC §3: an empty CSV cell is a missing field — default() applies, else the message fails
naming the field; never a silent blank (issue 14: ``Subject: Hello Quin from``).

The row as the audience reads it is what preview, send-test and enrollment (hence the worker)
render, so these tests go from a CSV file through ``build_audience`` to the message."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from campaignd.config.load import load_root
from campaignd.errors import RenderError
from campaignd.plan.audience import NoHistory, NoSuppressions, build_audience
from campaignd.plan.campaign import build_plan
from campaignd.render.compose import Composer
from campaignd.tokens.links import LinkSigner
from tests.rootfiles import make_root

WHEN = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
LIST = "email,first_name,company,seats\nquin@example.com,Quin,,0\nann@example.com,Ann,  ,3\n"


def subjects(root: Path) -> dict[str, str | RenderError]:
    result = load_root(root)
    assert result.ok, [str(p) for p in result.problems]
    campaign = result.config.campaigns["launch"]
    composer = Composer(result.config, LinkSigner(b"k" * 32))
    out: dict[str, str | RenderError] = {}
    audience = build_audience(
        campaign, root, history=NoHistory(), suppressions=NoSuppressions(), now=WHEN
    )
    for r in audience:
        try:
            out[r.email] = composer.compose(
                campaign_id="launch", step=1, template_id="hello", service_id="sink",
                recipient_key=r.key, fields=r.fields, to_address=r.email, send_time=WHEN,
            ).subject  # fmt: skip
        except RenderError as exc:
            out[r.email] = exc
    return out


def root_with(tmp_path: Path, subject: str) -> Path:
    template = f"subject: {subject!r}\ntext: 'Hi'\n"
    return make_root(tmp_path, {"lists/people.csv": LIST, "templates.d/hello.yaml": template})


@pytest.mark.parametrize("who", ["quin@example.com", "ann@example.com"])  # "" and "  "
def test_an_empty_cell_fails_the_message_naming_the_field(tmp_path: Path, who: str) -> None:
    got = subjects(root_with(tmp_path, "Hello {{ first_name }} from {{ company }}"))[who]
    assert isinstance(got, RenderError)
    assert (got.field, got.recipient) == ("company", who)
    assert f"'company' is missing (or its cell is empty) for {who}" in str(got)


def test_default_covers_an_empty_cell(tmp_path: Path) -> None:
    subject = "Hello {{ first_name }} from {{ company | default('your team') }}"
    assert subjects(root_with(tmp_path, subject)) == {
        "quin@example.com": "Hello Quin from your team",
        "ann@example.com": "Hello Ann from your team",
    }


def test_is_defined_tells_an_empty_cell_from_a_filled_one(tmp_path: Path) -> None:
    subject = "Hi{% if company is defined %} from {{ company }}{% endif %}, {{ seats }} seats"
    # a cell holding 0 is not empty
    assert subjects(root_with(tmp_path, subject))["quin@example.com"] == "Hi, 0 seats"


def test_plan_counts_empty_cells_as_missing_even_with_a_default(tmp_path: Path) -> None:
    root = root_with(tmp_path, "Hello {{ first_name }} from {{ company | default('you') }}")
    plan = build_plan(load_root(root), "launch", now=WHEN).as_json()
    assert plan["missing_fields"] == {"company": 2}
