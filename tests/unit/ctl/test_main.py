"""campaignctl's offline commands on the repository's example root and on broken roots."""

from __future__ import annotations

import json
from email import message_from_string
from pathlib import Path

import jsonschema
import pytest

from campaignd.ctl.main import main
from tests.rootfiles import make_root

REPO = Path(__file__).resolve().parents[3]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_example_root_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", str(REPO), "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["errors"] == 0
    assert data["loaded"]["campaigns"] == ["onboarding", "product-launch"]
    assert {"local-sink", "acme-relay"} <= set(data["loaded"]["services"])


def test_validate_reports_file_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    launch = "audience: x\nservices: [nope]\ntemplate: hello\n"
    root = make_root(tmp_path, {"campaigns.d/launch.yaml": launch})
    code, _, err = run(capsys, "--config", str(root), "validate")
    assert code == 1
    assert "campaigns.d/launch.yaml:" in err
    assert "nope" in err and "invalid:" in err


def test_schema_validates_the_example_files(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    code, out, _ = run(capsys, "schema")
    schemas = json.loads(out)
    assert code == 0 and set(schemas) >= {"settings", "service", "template", "campaign"}
    kinds = {"services.d": "service", "templates.d": "template", "campaigns.d": "campaign"}
    checked = 0
    for folder, kind in kinds.items():
        for path in sorted((REPO / folder).glob("*.yaml")):
            # as an editor sees it: YAML dates are plain strings to yaml-language-server
            data = json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))
            jsonschema.validate(data, schemas[kind])
            checked += 1
    assert checked >= 7
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"host": "x", "nonsense": 1}, schemas["service"])


def test_preview_renders_the_first_recipient(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--config", str(REPO), "preview", "product-launch", "--raw")
    assert code == 0
    msg = message_from_string(out)
    assert msg["To"] and msg["Subject"] and msg["Message-ID"]
    assert msg["List-Unsubscribe"] and msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.is_multipart()


def test_preview_of_an_unknown_recipient_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path)
    code, _, err = run(
        capsys, "--config", str(root), "preview", "launch", "--recipient", "zed@example.com"
    )
    assert code == 1
    assert "zed@example.com" in err


def test_plan_json_has_the_spec_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--config", str(REPO), "plan", "product-launch", "--json")
    assert code == 0
    data = json.loads(out)
    for key in ("audience", "invalid", "duplicates", "filtered", "suppressed",
                "missing_fields", "days", "finish"):  # fmt: skip
        assert key in data, key
    assert data["audience"] > 0
    assert sum(d["messages"] for d in data["days"]) == data["messages"]
    assert data["finish"] is not None


def test_plan_counts_invalid_duplicates_and_missing_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(
        tmp_path,
        {
            "lists/people.csv": (
                "email,first_name\nann@example.com,Ann\nANN@example.com,Ann\n"
                "not-an-address,X\nbob@example.org,\n"
            )
        },
    )
    code, out, _ = run(capsys, "--config", str(root), "plan", "launch", "--json")
    data = json.loads(out)
    assert code == 0
    assert (data["audience"], data["invalid"], data["duplicates"]) == (2, 1, 1)
    assert data["missing_fields"] == {"first_name": 1}


def test_plan_of_a_broken_campaign_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, {"campaigns.d/launch.yaml": "audience: [x]\nservices: [sink]\n"})
    code, _, err = run(capsys, "--config", str(root), "plan", "launch")
    assert code == 1
    assert "launch" in err


def test_validate_runs_the_deliverability_lint_without_dns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the envelope sender's domain is not the From domain and nothing DKIM-signs: DMARC fails
    service = (
        'from: "Acme <outreach@acme.example>"\nhost: 127.0.0.1\nport: 2525\nsecurity: none\n'
        "return_path: bounces@elsewhere.example\n"
    )
    root = make_root(tmp_path, {"services.d/sink.yaml": service})
    code, _, err = run(capsys, "--config", str(root), "validate")
    assert code == 1
    assert "campaigns.d/launch.yaml: lint error: alignment:" in err
    assert "elsewhere.example" in err
    code, out, _ = run(capsys, "--config", str(root), "validate", "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["lint"][0]["campaign"] == "launch"
