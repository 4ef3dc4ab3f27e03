"""List-Id (RFC 2919) on marketing mail: its default, the campaign's override, header safety
and DKIM coverage."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from campaignd.config.load import load_root
from campaignd.config.model import LIST_ID_RE, Campaign, Template
from campaignd.delivery.dkim import DkimSigner
from campaignd.render.compose import Composer
from campaignd.render.headers import list_id
from campaignd.tokens.links import LinkSigner
from tests.rootfiles import make_root

WHEN = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
# Marketing mail shows the sender's postal address (config/check.py refuses it otherwise).
TEMPLATE = {
    "templates.d/hello.yaml": (
        'subject: "Hello {{ first_name }}"\n'
        "text: |\n  Hi {{ first_name }},\n  Unsubscribe: {{ unsubscribe_url }}\n"
        "  {{ postal_address }}\n"
    )
}


def _campaign(kind: str, extra: str = "") -> str:
    return (
        f"name: Q4 outreach\nkind: {kind}\npostal_address: 1 Main St\n"
        f"audience: [lists/people.csv]\nservices: [sink]\ntemplate: hello\n{extra}"
    )


def _compose(root: Path, campaign_id: str = "launch") -> bytes:
    result = load_root(root)
    assert result.ok, [str(p) for p in result.problems]
    composer = Composer(result.config, LinkSigner(b"k" * 32))
    return composer.compose(
        campaign_id=campaign_id,
        step=1,
        template_id="hello",
        service_id="sink",
        recipient_key="ann@example.com",
        fields={"email": "ann@example.com", "first_name": "Ann"},
        to_address="ann@example.com",
        send_time=WHEN,
    ).data


def _headers(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_marketing_mail_has_a_list_id_from_campaign_id_and_sender_domain(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"campaigns.d/launch.yaml": _campaign("marketing"), **TEMPLATE})
    data = _compose(root)
    msg = _headers(data)
    assert msg.get_all("List-Id") == ["Q4 outreach <launch.acme.example>"]
    # beside the one-click pair, in the header block (never in the body)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nList-Id: " in head


def test_transactional_mail_has_none(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"campaigns.d/launch.yaml": _campaign("transactional"), **TEMPLATE})
    assert _headers(_compose(root))["List-Id"] is None


def test_the_campaign_overrides_it_and_the_campaign_from_sets_the_domain(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "campaigns.d/launch.yaml": _campaign("marketing", "list_id: <news.acme.example>\n"),
            "campaigns.d/other.yaml": _campaign("marketing", 'from: "B <b@Bücher.example>"\n'),
            **TEMPLATE,
        },
    )
    assert _headers(_compose(root))["List-Id"] == "Q4 outreach <news.acme.example>"
    assert _headers(_compose(root, "other"))["List-Id"] == (
        "Q4 outreach <other.xn--bcher-kva.example>"
    )


@pytest.mark.parametrize(
    "bad",
    ["news", "news.acme.example\r\nBcc: x@y.example", "a b.example", "ann@acme.example",
     "<news.acme.example", ".acme.example", "x" * 250 + ".example"],
)  # fmt: skip
def test_an_override_that_is_not_a_list_id_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="not a list id"):
        Campaign.model_validate(
            {"audience": ["a.csv"], "services": ["s"], "template": "t", "list_id": bad}
        )


def test_a_template_cannot_set_list_id_itself() -> None:
    with pytest.raises(ValidationError, match="list_id: in the campaign"):
        Template(subject="s", text="t", headers={"List-ID": "<x.acme.example>"})


LIST_IDS = st.from_regex(r"[a-z0-9_-]{1,20}(\.[a-z0-9-]{1,20}){1,3}", fullmatch=True)


@given(st.text(max_size=80), st.text(max_size=40), st.one_of(st.none(), LIST_IDS))
def test_list_id_is_always_one_header_line(name: str, domain: str, override: str | None) -> None:
    value = list_id("launch", name, f"x@{domain}", override)
    assert "\r" not in value and "\n" not in value and value.isascii()
    ident = value.rpartition("<")[2]
    assert ident.endswith(">") and LIST_ID_RE.fullmatch(ident[:-1])
    if override is not None:
        assert ident[:-1] == override
    parsed = email.message_from_bytes(
        f"List-Id: {value}\r\n\r\n".encode(), policy=email.policy.default
    )
    assert list(parsed.keys()) == ["List-Id"]


def test_dkim_signs_list_id(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"campaigns.d/launch.yaml": _campaign("marketing"), **TEMPLATE})
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = DkimSigner("acme.example", "s1", pem, "ed25519-sha256")
    signed = signer.sign(_compose(root))
    record = signer.dns_record().encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
    header = _headers(signed)["DKIM-Signature"]
    tags = dict(t.strip().split("=", 1) for t in str(header).split(";") if "=" in t)
    assert "list-id" in tags["h"].replace(" ", "").split(":")
    # and a changed List-Id breaks the signature
    tampered = signed.replace(b"<launch.acme.example>", b"<other.acme.example>")
    assert not dkim.verify(tampered, dnsfunc=lambda name, timeout=5: record)
