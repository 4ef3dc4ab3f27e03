"""A campaign whose template is broken or missing: ``preview`` and ``plan`` print the problem
(exit 1, no traceback), ``lint`` calls it an error, and every lint line of ``validate`` says
where to fix it as file:line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from campaignd.ctl.main import main
from tests.rootfiles import make_root

UNKNOWN_FILTER = (
    "subject: Hi {{ first_name|shout }}\ntext: |\n  Hi!\n  Unsubscribe: {{ unsubscribe_url }}\n"
)
BROKEN = {
    "unknown-filter": {"templates.d/hello.yaml": UNKNOWN_FILTER},
    "bad-yaml": {"templates.d/hello.yaml": "subject: [oops\n"},
    "missing": {"templates.d/hello.yaml": None},
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("files", BROKEN.values(), ids=BROKEN.keys())
@pytest.mark.parametrize("command", ["preview", "plan"])
def test_preview_and_plan_of_a_campaign_with_a_broken_template_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, files: dict[str, str | None]
) -> None:
    root = make_root(tmp_path, files)
    code, out, err = run(capsys, "--config", str(root), command, "launch")
    assert code == 1, (out, err)
    assert "hello" in err and "templates.d/hello.yaml" in err, err
    assert "Traceback" not in out + err and "KeyError" not in out + err
    assert sys.exc_info() == (None, None, None)


@pytest.mark.parametrize("files", BROKEN.values(), ids=BROKEN.keys())
def test_lint_calls_a_campaign_with_a_broken_template_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str | None]
) -> None:
    marketing = (
        "kind: marketing\npostal_address: 'Acme Inc, 1 Main St'\n"
        "audience: [lists/people.csv]\nservices: [sink]\ntemplate: hello\n"
    )
    root = make_root(tmp_path, {**files, "campaigns.d/launch.yaml": marketing})
    code, out, err = run(capsys, "--config", str(root), "lint", "launch")
    assert code == 1, (out, err)
    assert "hello" in out + err and "Traceback" not in out + err


def line_of(path: Path, key: str) -> int:
    lines = path.read_text().splitlines()
    return next(n for n, line in enumerate(lines, start=1) if line.startswith(f"{key}:"))


def test_validate_lint_lines_name_the_file_and_line_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The static check sees {{ unsubscribe_url }}; only the rendered sample shows it is never
    # output — a finding about the template, so it points into the template's text: part.
    hidden = (
        "subject: News\n"
        "# the body\n"
        "text: |\n  Hi {{ first_name }}. {{ postal_address }}\n"
        "  {% if false %}{{ unsubscribe_url }}{% endif %}\n"
    )
    campaign = (
        "name: Launch\nkind: marketing\npostal_address: 'Acme Inc, 1 Main St'\n"
        "audience: [lists/people.csv]\nservices: [sink]\ntemplate: hello\n"
    )
    service = (
        'from: "Acme <outreach@acme.example>"\nhost: 127.0.0.1\nport: 2525\nsecurity: none\n'
        "return_path: bounces@elsewhere.example\n"
    )
    root = make_root(
        tmp_path,
        {
            "templates.d/hello.yaml": hidden,
            "campaigns.d/launch.yaml": campaign,
            "services.d/sink.yaml": service,
        },
    )
    code, _, err = run(capsys, "--config", str(root), "validate")
    assert code == 1
    lines = [line for line in err.splitlines() if "lint error" in line]
    assert lines, err
    text_line = line_of(root / "templates.d/hello.yaml", "text")
    services_line = line_of(root / "campaigns.d/launch.yaml", "services")
    unsub = [line for line in lines if "body has no unsubscribe link" in line]
    assert unsub and unsub[0].endswith(f"(templates.d/hello.yaml:{text_line})"), lines
    align = [line for line in lines if "alignment:" in line]
    assert align and align[0].endswith(f"(campaigns.d/launch.yaml:{services_line})"), lines
    public = [line for line in lines if "public_url is not set" in line]
    assert public and public[0].endswith("(campaignd.yaml:1)"), lines  # no such file yet
    for line in lines:
        assert line.startswith("campaigns.d/launch.yaml: lint error: "), line
    code, out, _ = run(capsys, "--config", str(root), "validate", "--json")
    data = json.loads(out)
    wheres = {item["where"] for item in data["lint"]}
    assert f"templates.d/hello.yaml:{text_line}" in wheres
    assert f"campaigns.d/launch.yaml:{services_line}" in wheres
