"""campaignctl send-test: one real, DKIM-signed message of a campaign through its service to a
recording server — rendered for the chosen row, ``[test] `` subject, nothing recorded."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from campaignd.ctl.main import main
from campaignd.delivery.dkim import DkimSigner
from tests.rootfiles import make_root

from .conftest import MakeServer
from .servers import RecordingServer

TO = "ops@acme.example"


def make_key(tmp_path: Path) -> tuple[Path, bytes]:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem)
    record = DkimSigner("acme.example", "s1", pem, "ed25519-sha256").dns_record().encode()
    return path, record


def root_for(tmp_path: Path, server: RecordingServer, *, dkim_key: Path | None) -> Path:
    service = (
        f'from: "Acme <outreach@acme.example>"\nhost: 127.0.0.1\nport: {server.port}\n'
        "security: none\ntimeout: 5s\nreturn_path: bounces@acme.example\n"
    )
    if dkim_key is not None:
        service += (
            f"dkim: {{domain: acme.example, selector: s1, algorithm: ed25519-sha256, "
            f"private_key_file: {dkim_key}}}\n"
        )
    return make_root(
        tmp_path / "root",
        {
            "services.d/sink.yaml": service,
            "campaigns.d/launch.yaml": (
                "name: Launch\nkind: marketing\npostal_address: 1 Main St\n"
                "audience: [lists/people.csv]\nservices: [sink]\ntemplate: hello\n"
            ),
            "lists/people.csv": (
                "email,first_name,company\nann@example.com,Ann,Acme\nbob@example.org,Bob,\n"
                "cy@example.net,Cy,Cyan\n"
            ),
            "templates.d/hello.yaml": (
                "subject: 'Hello {{ first_name }} from {{ company | default(\"your team\") }}'\n"
                "text: |\n  Hi {{ first_name }} <{{ email }}>\n"
                "  Unsubscribe: {{ unsubscribe_url }}\n  {{ postal_address }}\n"
            ),
        },
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_signed_copy_for_the_chosen_row_reaches_the_server(
    tmp_path: Path, make_server: MakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_server()
    key, record = make_key(tmp_path)
    root = root_for(tmp_path, server, dkim_key=key)
    argv = ["--config", str(root), "send-test", "launch", "--to", TO]
    code, out, err = run(capsys, *argv, "--recipient", "BOB@example.org")
    assert code == 0, err
    [received] = server.messages
    assert received.rcpt_tos == [TO] and received.mail_from == "bounces@acme.example"
    assert dkim.verify(received.data, dnsfunc=lambda name, timeout=5: record)
    msg = email.message_from_bytes(received.data, policy=email.policy.default)
    assert msg["Subject"] == "[test] Hello Bob from your team"
    assert msg["To"] == TO
    assert msg["List-Id"] == "Launch <launch.acme.example>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Unsubscribe"].startswith("<http")
    body = msg.get_body(("plain",))
    assert body is not None and "Hi Bob <bob@example.org>" in body.get_content()
    signed = str(msg["DKIM-Signature"]).replace(" ", "").replace("\n", "")
    assert "h=from:to:subject:" in signed and "list-id" in signed
    # the server's reply is printed; the report says who and how
    assert "message: 250" in out and "send-test sink: 127.0.0.1:" in out
    assert "rendered for bob@example.org" in out and "DKIM-signed (s1._domainkey" in out
    # nothing recorded: no database, no state directory
    assert not (root / "state").exists() and not list(root.rglob("*.db"))

    # default row: the first valid one; --json says the same things for a script
    code, out, _ = run(capsys, *argv, "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["recipient"] == "ann@example.com"
    assert (
        data["subject"] == "[test] Hello Ann from Acme"
        and data["dkim"] == "s1._domainkey.acme.example"
    )
    assert [s["name"] for s in data["steps"]][-3:] == ["mail", "rcpt", "data"]
    assert len(server.messages) == 2


def test_a_refusal_is_printed_and_exits_1(
    tmp_path: Path, make_server: MakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_server()
    server.reply("rcpt", "550 5.7.1 relaying denied", address=TO)
    root = root_for(tmp_path, server, dkim_key=None)
    code, out, _ = run(capsys, "--config", str(root), "send-test", "launch", "--to", TO)
    assert code == 1
    assert "550 5.7.1 relaying denied" in out and "result: FAILED at rcpt" in out
    assert "not DKIM-signed" in out
    assert server.messages == []


def test_refusals_before_any_connection_say_why(
    tmp_path: Path, make_server: MakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_server()
    root = root_for(tmp_path, server, dkim_key=None)
    base = ["--config", str(root), "send-test", "launch"]
    code, _, err = run(capsys, *base, "--to", "me@mailbox.test")
    assert code == 1 and "reserved domain" in err and "mailbox.test" in err
    code, _, err = run(capsys, *base, "--to", TO, "--recipient", "zed@example.com")
    assert code == 1 and "zed@example.com is not in the audience" in err
    code, _, err = run(capsys, *base, "--to", TO, "--step", "2")
    assert code == 1 and "has 1 step(s)" in err
    code, _, err = run(capsys, *base, "--to", TO, "--service", "nope")
    assert code == 1 and "no valid service 'nope'" in err
    assert server.sessions == 0 and server.messages == []


def test_an_empty_cell_fails_the_copy_naming_the_field(
    tmp_path: Path, make_server: MakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_server()
    root = root_for(tmp_path, server, dkim_key=None)
    (root / "templates.d" / "hello.yaml").write_text(
        "subject: 'Hello {{ first_name }} from {{ company }}'\n"
        "text: '{{ unsubscribe_url }} {{ postal_address }}'\n"
    )
    argv = [
        "--config",
        str(root),
        "send-test",
        "launch",
        "--to",
        TO,
        "--recipient",
        "bob@example.org",
    ]
    code, _, err = run(capsys, *argv)
    assert code == 1 and "'company' is missing (or its cell is empty) for bob@example.org" in err
    assert server.sessions == 0
