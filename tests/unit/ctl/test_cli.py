"""campaignctl's finish: pure helpers (verdicts, TSV, header replacement) and the offline
commands' text and --json output on throwaway roots."""

from __future__ import annotations

import email
import email.policy
import io
import json
from pathlib import Path

import pytest

from campaignd.ctl.main import main
from campaignd.ctl.remote import _import_source, control_verdict
from campaignd.render.headers import replace_header
from tests.integration.smtp.servers import refused_port
from tests.rootfiles import make_root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("action", "state", "ok", "why"),
    [
        ("resume", "sending", True, None),
        ("resume", "waiting", True, None),
        ("resume", "stopped", False, "stop is final"),
        ("resume", "completed", False, "final"),
        ("pause", "paused", True, None),
        ("pause", "stopped", False, "nothing to pause"),
        ("pause", "completed", False, "nothing to pause"),
        ("stop", "stopped", True, None),
        ("stop", "completed", True, "nothing left to stop"),
    ],
)
def test_control_verdicts(action: str, state: str, ok: bool, why: str | None) -> None:
    got_ok, got_why = control_verdict(action, state)
    assert got_ok is ok
    assert (got_why is None) if why is None else (got_why is not None and why in got_why)


def test_replace_header_swaps_a_folded_field_and_keeps_the_rest() -> None:
    data = b"From: a@x.example\r\nSubject: one\r\n two\r\nTo: b@x.example\r\n\r\nSubject: body\r\n"
    out = replace_header(data, "Subject", "[test] one two")
    assert out == (
        b"From: a@x.example\r\nSubject: [test] one two\r\nTo: b@x.example\r\n\r\nSubject: body\r\n"
    )
    assert replace_header(b"From: a@x.example\r\n\r\nhi", "To", "c@x.example") == (
        b"From: a@x.example\r\nTo: c@x.example\r\n\r\nhi"
    )
    with pytest.raises(ValueError, match="new header line"):
        replace_header(data, "Subject", "x\r\nBcc: evil@x.example")
    folded = replace_header(data, "Subject", "a\r\n b")
    msg = email.message_from_bytes(folded, policy=email.policy.default)
    assert msg["Subject"] == "a b" and list(msg.keys()) == ["From", "Subject", "To"]


def test_import_source_spools_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stdin:
        buffer = io.BytesIO(b"email\nann@example.com\n")

    monkeypatch.setattr("sys.stdin", Stdin())
    source = _import_source("-")
    assert not isinstance(source, str)
    fh, size = source
    with fh:
        assert size == 22 and fh.read() == b"email\nann@example.com\n"
    assert "no such file" in str(_import_source("/nonexistent/x.csv"))
    assert "is a directory" in str(_import_source("/"))


def test_plan_text_counts_the_rest_explains_never_and_lists_editions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = "".join(f"bad{i}\n" for i in range(13))
    root = make_root(
        tmp_path,
        {
            "lists/people.csv": f"email,first_name\nann@example.com,Ann\n{bad}x@y.test,X\n",
            "campaigns.d/launch.yaml": (
                "kind: transactional\naudience: [lists/people.csv]\nservices: [sink]\n"
                "template: hello\nschedule: {cron: '0 9 * * tue'}\n"
                "window: {days: [tue], hours: '10:00-11:00', timezone: UTC}\n"
            ),
        },
    )
    code, out, _ = run(capsys, "--config", str(root), "plan", "launch")
    assert code == 0
    assert out.count("  invalid: ") == 10 and "… and 4 more invalid rows" in out
    assert "recurring: cron '0 9 * * tue'" in out
    editions = out.split("next editions: ")[1].splitlines()[0].split(", ")
    assert len(editions) == 5 and all("T09:00:00" in e for e in editions)
    assert "estimated finish: 20" in out
    data = json.loads(run(capsys, "--config", str(root), "plan", "launch", "--json")[1])
    assert data["schedule"]["next_editions"] == editions
    assert any("reserved domain" in s for s in data["invalid_samples"])


def test_plan_says_why_it_never_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    window = "window: {days: [], hours: '10:00-11:00', timezone: UTC}\n"
    campaign = "kind: transactional\naudience: [lists/people.csv]\nservices: [sink]\n"
    root = make_root(tmp_path, {"campaigns.d/launch.yaml": campaign + "template: hello\n" + window})
    code, out, _ = run(capsys, "--config", str(root), "plan", "launch")
    assert code == 0
    finish = out.split("estimated finish: ")[1].strip()
    assert finish.startswith("never — 2 messages cannot be scheduled: the window never opens")
    assert "(its days list is empty)" in finish and "see notes" not in out


def test_plan_of_an_empty_audience_says_there_is_nothing_to_send(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, {"lists/people.csv": "email,first_name\nbad,X\n"})
    code, out, _ = run(capsys, "--config", str(root), "plan", "launch")
    assert code == 0 and "estimated finish: nothing to send" in out
    assert "(see notes)" not in out


def test_lint_of_a_broken_campaign_lists_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, {"campaigns.d/launch.yaml": "audience: [x]\nservices: [sink]\n"})
    code, out, err = run(capsys, "--config", str(root), "lint", "launch")
    assert code == 1
    assert "campaigns.d/launch.yaml:1:1: no template" in err and "listed above" in err
    code, out, _ = run(capsys, "--config", str(root), "lint", "launch", "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and "no template" in data["problems"][0]["message"]


def test_preview_json_and_a_reserved_recipient(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path)
    code, out, _ = run(capsys, "--config", str(root), "preview", "launch", "--json")
    data = json.loads(out)
    assert code == 0 and data["recipient"] == "ann@example.com" and data["subject"] == "Hello Ann"
    assert email.message_from_string(data["message"])["Subject"] == "Hello Ann"
    code, _, err = run(
        capsys, "--config", str(root), "preview", "launch", "--recipient", "ann@box.invalid"
    )
    assert code == 1 and "box.invalid is a reserved domain" in err


def test_campaigns_from_the_files_when_the_daemon_is_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(
        tmp_path,
        {
            "campaigns.d/held.yaml": (
                "audience: [lists/people.csv]\nservices: [sink]\ntemplate: hello\n"
                "kind: transactional\npaused: true\n"
            ),
            "campaigns.d/broken.yaml": "audience: [x]\n",
        },
    )
    api = ["--api", f"http://127.0.0.1:{refused_port()}"]
    code, out, err = run(capsys, "--config", str(root), "campaigns", *api)
    assert code == 0 and "source: config files in" in err and "not running" in err
    rows = {line.split("\t")[0]: line.split("\t") for line in out.splitlines()[1:]}
    assert rows["held"][1] == "paused" and rows["held"][4] == "paused: true in the file"
    assert rows["launch"][1] == "not started" and rows["broken"][1] == "invalid"
    data = json.loads(run(capsys, "--config", str(root), "campaigns", *api, "--json")[1])
    assert data["source"].startswith("config files") and len(data["campaigns"]) == 3


def test_control_commands_say_why_when_the_daemon_is_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path)
    api = ["--api", f"http://127.0.0.1:{refused_port()}"]
    with pytest.raises(SystemExit) as info:
        main(["--config", str(root), "pause", "launch", *api, "--json"])
    assert info.value.code == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and "is campaignd running?" in data["error"]
