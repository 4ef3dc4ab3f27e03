"""delivery/dkim.py: signatures that dkimpy verifies against the test's own DNS record."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from campaignd.config.model import Config
from campaignd.delivery.dkim import DkimSigner

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()

MESSAGE = (
    b"From: Acme <outreach@acme.example>\r\n"
    b"To: jdoe@agency.example\r\n"
    b"Subject: Quick question about Agency\r\n"
    b"Date: Tue, 01 Dec 2026 09:02:09 +0000\r\n"
    b"Message-ID: <campaignd.4711.c@mail.acme.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"List-Unsubscribe: <https://mail.acme.example/u/abc>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"X-Campaign-Tag: q4\r\n"
    b"\r\n"
    b"Hi Jane,\r\nquick question about your site.\r\n"
)


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def dns_for(public: bytes, k: str) -> Callable[..., bytes]:
    """A dnsfunc answering only our selector's name, as a resolver would."""
    record = f"v=DKIM1; k={k}; p={base64.b64encode(public).decode()}".encode()

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"s2026._domainkey.acme.example." else b""

    return lookup


RSA_DNS = dns_for(
    RSA_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ),
    "rsa",
)
ED_DNS = dns_for(
    ED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    "ed25519",
)
SIGNERS = {
    "rsa": (DkimSigner("acme.example", "s2026", pem(RSA_KEY)), RSA_DNS),
    "ed25519": (
        DkimSigner("acme.example", "s2026", pem(ED_KEY), algorithm="ed25519-sha256"),
        ED_DNS,
    ),
}


def tag(signed: bytes, name: str) -> str:
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    value = re.search(rf"[;\s]{name}=([^;]*)", header)
    assert value is not None
    return "".join(value.group(1).split())


@pytest.mark.parametrize("kind", sorted(SIGNERS))
def test_signature_verifies(kind: str) -> None:
    signer, dns = SIGNERS[kind]
    signed = signer.sign(MESSAGE)
    assert signed.startswith(b"DKIM-Signature: ")
    assert signed.endswith(MESSAGE)
    assert dkim.verify(signed, dnsfunc=dns)
    assert tag(signed, "a") == ("rsa-sha256" if kind == "rsa" else "ed25519-sha256")
    assert tag(signed, "c") == "relaxed/relaxed"
    assert (tag(signed, "d"), tag(signed, "s")) == ("acme.example", "s2026")


def test_signs_the_listed_headers_present_and_from_twice() -> None:
    signed = SIGNERS["rsa"][0].sign(MESSAGE)
    assert tag(signed, "h").split(":") == [
        "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
        "list-unsubscribe", "list-unsubscribe-post", "from",
    ]  # fmt: skip
    short = b"From: a@acme.example\r\nSubject: hi\r\nReply-To: b@acme.example\r\n\r\nbody\r\n"
    signed = SIGNERS["rsa"][0].sign(short)
    assert tag(signed, "h").split(":") == ["from", "subject", "reply-to", "from"]
    assert dkim.verify(signed, dnsfunc=RSA_DNS)


@pytest.mark.parametrize("kind", sorted(SIGNERS))
@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"quick question", b"quick questions"),
        lambda m: m.replace(b"Subject: Quick", b"Subject: Slow"),
        lambda m: m.replace(b"https://mail.acme.example/u/abc", b"https://evil.example/u"),
        lambda m: m.replace(b"To: jdoe@", b"To: other@"),
        lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: ceo@acme.example\r\n\r\n", 1),
        lambda m: m + b"P.S. appended\r\n",
    ],
)
def test_tampering_breaks_verification(kind: str, tamper: Callable[[bytes], bytes]) -> None:
    signer, dns = SIGNERS[kind]
    signed = signer.sign(MESSAGE)
    assert tamper(signed) != signed
    assert not dkim.verify(tamper(signed), dnsfunc=dns)


def test_relaxed_canonicalisation_survives_relay_whitespace() -> None:
    signer, dns = SIGNERS["rsa"]
    signed = signer.sign(MESSAGE)
    refolded = signed.replace(b"Subject: Quick question", b"Subject:   Quick  question")
    assert dkim.verify(refolded, dnsfunc=dns)
    # An unsigned header may change on the way; only the signed ones are locked.
    assert dkim.verify(signed.replace(b"X-Campaign-Tag: q4", b"X-Campaign-Tag: q5"), dnsfunc=dns)


def test_another_key_in_dns_fails() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_dns = dns_for(
        other.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "rsa",
    )
    assert not dkim.verify(SIGNERS["rsa"][0].sign(MESSAGE), dnsfunc=other_dns)


def test_bare_lf_messages_and_pkcs1_keys() -> None:
    pkcs1 = RSA_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    lf = MESSAGE.replace(b"\r\n", b"\n")
    signed = DkimSigner("acme.example", "s2026", pkcs1).sign(lf)
    assert b"\r\n" not in signed  # the signature folds like the message it joins
    assert dkim.verify(signed, dnsfunc=RSA_DNS)


def test_ed25519_seed_as_dknewkey_writes_it() -> None:
    seed = ED_KEY.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    signer = DkimSigner("acme.example", "s2026", base64.b64encode(seed) + b"\n", "ed25519-sha256")
    assert dkim.verify(signer.sign(MESSAGE), dnsfunc=ED_DNS)


@pytest.mark.parametrize("kind", sorted(SIGNERS))
def test_dns_record_is_what_verifiers_need(kind: str) -> None:
    signer, _ = SIGNERS[kind]
    assert signer.dns_name == "s2026._domainkey.acme.example"
    record = signer.dns_record().encode()
    assert dkim.verify(signer.sign(MESSAGE), dnsfunc=lambda name, timeout=5: record)


def _small_rsa_pem() -> bytes:
    """A 512-bit RSA key: cryptography refuses to generate one, so it is built from primes."""

    def prime(start: int) -> int:
        n = start | 1
        while not all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23)):
            n += 2
        return n

    p, q = prime(3 * 2**254 + 12345), prime(3 * 2**254 + 2**200 + 777)
    e = 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q)
    )
    return pem(numbers.private_key(unsafe_skip_rsa_key_validation=True))


ENCRYPTED = RSA_KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.BestAvailableEncryption(b"passphrase"),
)


@pytest.mark.parametrize(
    ("key", "algorithm", "message"),
    [
        (b"", "rsa-sha256", "not a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n",
         "rsa-sha256", "not a PEM private key"),
        (b"/etc/campaignd/dkim/s2026.pem", "rsa-sha256", "not a PEM private key"),
        (ENCRYPTED, "rsa-sha256", "encrypted with a passphrase"),
        (pem(ED_KEY), "rsa-sha256", "not an RSA key"),
        (pem(RSA_KEY), "ed25519-sha256", "not an Ed25519 key"),
        (pem(ec.generate_private_key(ec.SECP256R1())), "rsa-sha256", "not an RSA key"),
        (b"c2hvcnQ=", "ed25519-sha256", "neither a PEM private key nor a base64"),
        (_small_rsa_pem(), "rsa-sha256", "512 bits"),
    ],
)  # fmt: skip
def test_unusable_keys_are_explained(key: bytes, algorithm: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        DkimSigner("acme.example", "s2026", key, algorithm)  # type: ignore[arg-type]
    assert "s2026._domainkey.acme.example" in str(caught.value)


@pytest.mark.parametrize(
    ("domain", "selector"),
    [("acme.example; x=1", "s2026"), ("acme.example", "s 2026"), ("", "s"), ("a..b", "s")],
)
def test_domain_and_selector_must_be_dns_names(domain: str, selector: str) -> None:
    with pytest.raises(ValueError, match="not a DNS name"):
        DkimSigner(domain, selector, pem(RSA_KEY))


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="algorithm"):
        DkimSigner("acme.example", "s2026", pem(RSA_KEY), "rsa-sha1")  # type: ignore[arg-type]


def test_messages_that_cannot_be_signed() -> None:
    signer = SIGNERS["rsa"][0]
    with pytest.raises(ValueError, match="without a From header"):
        signer.sign(b"To: a@x.example\r\nSubject: hi\r\n\r\nbody\r\n")
    with pytest.raises(ValueError, match="malformed"):
        signer.sign(b"From: a@acme.example\r\nthis is not a header\r\n\r\nbody\r\n")


# ---------------------------------------------------------------- signer_for: once per generation


def _config(tmp_path: Path, key_file: Path, generation: int = 1) -> Config:
    from campaignd.config.model import Config, Service

    service = Service.model_validate(
        {
            "from": "Acme <outreach@acme.example>",
            "dkim": {
                "domain": "acme.example",
                "selector": "s2026",
                "private_key_file": str(key_file),
            },
        }
    )
    return Config(root=tmp_path, services={"relay": service}, generation=generation)


def test_signer_for_reads_the_key_once_per_generation(tmp_path: Path) -> None:
    from campaignd.delivery.dkim import signer_for

    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem(RSA_KEY))
    first = signer_for(_config(tmp_path, key_file), "relay")
    assert first is not None and dkim.verify(first.sign(MESSAGE), dnsfunc=RSA_DNS)
    key_file.write_text("garbage")  # changed on disk: the generation's key stays in use
    assert signer_for(_config(tmp_path, key_file), "relay") is first
    with pytest.raises(ValueError, match=r"services.d/relay.yaml: dkim: .*not a PEM private key"):
        signer_for(_config(tmp_path, key_file, generation=2), "relay")
    key_file.unlink()  # the failure is remembered for the generation, not retried per message
    with pytest.raises(ValueError, match="not a PEM private key"):
        signer_for(_config(tmp_path, key_file, generation=2), "relay")
    with pytest.raises(ValueError, match="cannot read"):
        signer_for(_config(tmp_path, key_file, generation=3), "relay")


def test_signer_for_a_service_without_dkim(tmp_path: Path) -> None:
    from campaignd.config.model import Config, Service
    from campaignd.delivery.dkim import signer_for

    config = Config(root=tmp_path, services={"plain": Service.model_validate({"from": "a@b.c"})})
    assert signer_for(config, "plain") is None
