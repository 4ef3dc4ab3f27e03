"""lint.py: alignment, one-click unsubscribe, postal address, and the DNS records explained."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from campaignd.config.load import load_root
from campaignd.ctl.deliverability import (
    Finding,
    aligned,
    check_dkim_record,
    check_dmarc,
    check_spf,
    lint_campaign,
)
from campaignd.ctl.main import main as ctl
from campaignd.delivery.dkim import DkimSigner

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
SIGNER = DkimSigner("acme.example", "s1", PEM)


def levels(findings: list[Finding], topic: str | None = None) -> list[str]:
    return [f.level for f in findings if topic is None or f.topic == topic]


def write_root(root: Path, *, service: str = "", template: str | None = None, settings: str = "",
               campaign: str = "") -> Path:  # fmt: skip
    (root / "dkim.pem").write_bytes(PEM)
    files = {
        "campaignd.yaml": settings or "http: {public_url: 'https://mail.acme.example'}\n",
        "services.d/relay.yaml": 'from: "Acme <news@acme.example>"\nhost: 127.0.0.1\n' + service,
        "templates.d/hello.yaml": template
        or (
            "subject: Hi\ntext: |\n  Hello {{ first_name }}\n  {{ postal_address }}\n"
            "  Unsubscribe: {{ unsubscribe_url }}\n"
        ),
        "campaigns.d/news.yaml": (
            "audience: lists/people.csv\nservices: [relay]\ntemplate: hello\n"
            "postal_address: Acme Inc, 1 Main St, Springfield\n" + campaign
        ),
        "lists/people.csv": "email,first_name\nann@example.com,Ann\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def dkim_line(key: Path, domain: str = "acme.example") -> str:
    return f"dkim: {{domain: {domain}, selector: s1, private_key_file: {key}}}\n"


def test_aligned_by_organisational_domain() -> None:
    assert aligned("mail.acme.example", "acme.example")
    assert not aligned("mail.acme.example", "acme.example", strict=True)
    assert not aligned("acme-mail.example", "acme.example")


def test_a_signing_aligned_marketing_campaign_passes(tmp_path: Path) -> None:
    root = write_root(
        tmp_path,
        service=dkim_line(tmp_path / "dkim.pem")
        + "return_path: 'bounces+{token}@mail.acme.example'\n",
    )
    findings = lint_campaign(load_root(root), "news")
    assert set(levels(findings)) == {"ok"}, findings
    assert any("one-click" in f.message for f in findings)


def test_misalignment_and_missing_unsubscribe_and_address(tmp_path: Path) -> None:
    root = write_root(
        tmp_path,
        service=(f"dkim: {{domain: esp-mail.example, selector: s1, private_key_file: "
                 f"{tmp_path / 'dkim.pem'}}}\nreturn_path: 'rp@esp-bounces.example'\n"),
        template="subject: Hi\ntext: |\n  Hello {{ first_name }} {{ unsubscribe_url }}\n",
        settings="http: {public_url: 'http://mail.acme.example'}\n",
    )  # fmt: skip
    findings = lint_campaign(load_root(root), "news")
    assert levels(findings, "alignment") == ["error", "error"]
    assert "DMARC fails" in findings[1].message
    assert levels(findings, "postal-address") == ["error"]
    assert "warning" in levels(findings, "unsubscribe")  # http, not https
    assert ctl(["--config", str(root), "lint", "news"]) == 1


def test_an_unusable_key_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a key")
    root = write_root(
        tmp_path,
        service=dkim_line(tmp_path / "bad.pem"),
    )
    findings = lint_campaign(load_root(root), "news")
    assert any(f.level == "error" and "dkim key unusable" in f.message for f in findings)


def test_without_dkim_the_relay_must_sign(tmp_path: Path) -> None:
    root = write_root(tmp_path)
    findings = lint_campaign(load_root(root), "news")
    assert levels(findings, "dkim") == ["warning"]
    assert ctl(["--config", str(root), "lint", "news", "--json"]) == 0


@pytest.mark.parametrize(
    ("records", "level", "says"),
    [
        ([], "error", "no SPF record"),
        (["v=spf1 include:_spf.relay.example -all"], "ok", "include:_spf.relay.example"),
        (["v=spf1 ip4:192.0.2.0/24 ~all"], "ok", "soft-fail"),
        (["v=spf1 a mx ?all"], "warning", "neutral"),
        (["v=spf1 +all"], "error", "everyone"),
        (["v=spf1 -all", "v=spf1 a -all"], "error", "2 SPF records"),
        (["google-site-verification=abc"], "error", "no SPF record"),
    ],
)
def test_spf(records: list[str], level: str, says: str) -> None:
    [finding] = check_spf("acme.example", records)
    assert finding.level == level and says in finding.message


def test_dkim_record() -> None:
    name = "s1._domainkey.acme.example"
    [ok] = check_dkim_record(name, [SIGNER.dns_record()], signer=SIGNER)
    assert ok.level == "ok"
    [missing] = check_dkim_record(name, [], signer=SIGNER)
    assert missing.level == "error" and SIGNER.dns_record() in missing.message
    other = DkimSigner("acme.example", "s1", rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    [wrong] = check_dkim_record(name, [other.dns_record()], signer=SIGNER)
    assert wrong.level == "error" and "another key" in wrong.message
    [revoked] = check_dkim_record(name, ["v=DKIM1; k=rsa; p="], signer=SIGNER)
    assert "revoked" in revoked.message


@pytest.mark.parametrize(
    ("records", "level", "says"),
    [
        ([], "error", "v=DMARC1; p=none"),
        (["v=DMARC1; p=none; rua=mailto:d@acme.example"], "warning", "only report"),
        (["v=DMARC1; p=reject; adkim=s"], "ok", "strict alignment for DKIM"),
        (["v=DMARC1; p=quarantine"], "ok", "p=quarantine"),
        (["v=DMARC1; p=whatever"], "error", "not a policy"),
    ],
)
def test_dmarc(records: list[str], level: str, says: str) -> None:
    [finding] = check_dmarc("_dmarc.acme.example", records)
    assert finding.level == level and says in finding.message
