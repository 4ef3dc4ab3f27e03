"""``campaignctl lint --dns`` through dnspython against a small DNS server on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from campaignd.config.load import load_root
from campaignd.ctl.deliverability import DnsError, dns_resolver, lint_campaign
from campaignd.ctl.main import main as ctl
from tests.unit.ctl.test_deliverability import PEM, SIGNER, dkim_line, write_root


class TxtServer:
    """Answers TXT queries for the names it knows, NXDOMAIN for the rest (UDP, one thread)."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = {k.rstrip(".").lower(): v for k, v in records.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.asked: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return  # closed
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            self.asked.append(name)
            texts = self.records.get(name)
            if texts is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                # Long values split into 255-byte strings, as zone files do.
                rdatas = [
                    " ".join(f'"{t[i : i + 255]}"' for i in range(0, len(t), 255)) for t in texts
                ]
                response.answer.append(
                    dns.rrset.from_text(
                        question.name, 300, dns.rdataclass.IN, dns.rdatatype.TXT, *rdatas
                    )
                )
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dns_server() -> Iterator[TxtServer]:
    server = TxtServer(
        {
            "acme.example": ["v=spf1 ip4:192.0.2.0/24 include:_spf.relay.example -all"],
            "mail.acme.example": ["v=spf1 a -all"],
            "s1._domainkey.acme.example": [SIGNER.dns_record()],
            "_dmarc.acme.example": ["v=DMARC1; p=quarantine; rua=mailto:dmarc@acme.example"],
        }
    )
    yield server
    server.close()


def test_every_record_found_and_explained(dns_server: TxtServer, tmp_path: Path) -> None:
    root = write_root(
        tmp_path,
        service=dkim_line(tmp_path / "dkim.pem")
        + "return_path: 'bounces+{token}@mail.acme.example'\n",
    )
    (tmp_path / "dkim.pem").write_bytes(PEM)
    resolver = dns_resolver(f"127.0.0.1:{dns_server.port}")
    findings = lint_campaign(load_root(root), "news", resolver=resolver)
    by_topic = {f.topic: f for f in findings if f.topic in ("spf", "dkim", "dmarc")}
    assert {t: f.level for t, f in by_topic.items()} == {"spf": "ok", "dkim": "ok", "dmarc": "ok"}
    assert "mail.acme.example" in by_topic["spf"].message  # the envelope (return_path) domain
    assert "p=quarantine" in by_topic["dmarc"].message
    assert {"mail.acme.example", "s1._domainkey.acme.example", "_dmarc.acme.example"} <= set(
        dns_server.asked
    )
    args = ["--config", str(root), "lint", "news", "--nameserver", f"127.0.0.1:{dns_server.port}"]
    assert ctl(args) == 0


def test_missing_records_fail_and_dmarc_falls_back_to_the_organisation(
    dns_server: TxtServer, tmp_path: Path
) -> None:
    root = write_root(
        tmp_path,
        service=dkim_line(tmp_path / "dkim.pem"),
        settings="http: {public_url: 'https://mail.acme.example'}\n",
    )
    (root / "services.d" / "relay.yaml").write_text(
        'from: "Acme <news@news.acme.example>"\nhost: 127.0.0.1\n'
        + dkim_line(tmp_path / "dkim.pem")
    )
    dns_server.records["s1._domainkey.acme.example"] = ["v=DKIM1; k=rsa; p="]
    resolver = dns_resolver(f"127.0.0.1:{dns_server.port}")
    findings = lint_campaign(load_root(root), "news", resolver=resolver)
    by_topic = {f.topic: f for f in findings if f.topic in ("spf", "dkim", "dmarc")}
    assert (
        by_topic["spf"].level == "error"
        and "news.acme.example has no SPF" in by_topic["spf"].message
    )
    assert by_topic["dkim"].level == "error" and "revoked" in by_topic["dkim"].message
    # No _dmarc.news.acme.example: the organisational domain's policy applies.
    assert by_topic["dmarc"].level == "ok"
    assert dns_server.asked.index("_dmarc.news.acme.example") < dns_server.asked.index(
        "_dmarc.acme.example"
    )


def test_a_dead_server_is_a_lookup_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never answers
        resolver = dns_resolver(f"127.0.0.1:{port}", timeout=0.3)
        with pytest.raises(DnsError):
            resolver("acme.example")
