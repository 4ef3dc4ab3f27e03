"""DKIM signing for services whose relay does not sign (``dkim:`` in services.d, SPEC §3).

RFC 6376 with relaxed/relaxed canonicalisation, which survives the header refolding and
trailing-whitespace changes relays make. Signed: the headers that identify and present the
message and its unsubscribe offer, those present only — an absent header in ``h=`` would
forbid adding it later, and nothing we send is meant to be locked that way — plus ``From``
twice, so a second From added on the way breaks the signature (RFC 6376 §8.15).

Keys are PEM: RSA (PKCS#1 or PKCS#8, at least 1024 bits, RFC 8301) for ``rsa-sha256``, and
Ed25519 (PKCS#8, or the base64 seed ``dknewkey`` writes) for ``ed25519-sha256`` (RFC 8463).
A key that cannot be used is a ``ValueError`` naming the domain and selector at start-up,
never a failure at the first send.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, cast

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

if TYPE_CHECKING:
    from ..config.model import Config, Dkim

__all__ = ["SIGNED_HEADERS", "Algorithm", "DkimSigner", "signer_for"]

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

SIGNED_HEADERS: Final = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
    "reply-to",
)
MIN_RSA_BITS: Final = 1024  # RFC 8301 §3.2: verifiers must not accept smaller keys
# Tag values go into d= and s= verbatim; anything outside this would break the tag list.
_LABELS: Final = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


class DkimSigner:
    """Signs outgoing messages for one (domain, selector, key)."""

    def __init__(
        self,
        domain: str,
        selector: str,
        private_key_pem: bytes,
        algorithm: Algorithm = "rsa-sha256",
    ) -> None:
        where = f"dkim key for {selector}._domainkey.{domain}"
        for name, value in (("domain", domain), ("selector", selector)):
            if not _LABELS.match(value) or ".." in value:
                raise ValueError(f"dkim {name} {value!r} is not a DNS name")
        if algorithm not in ("rsa-sha256", "ed25519-sha256"):
            raise ValueError(
                f"{where}: algorithm {algorithm!r} is not rsa-sha256 or ed25519-sha256"
            )
        self.domain = domain
        self.selector = selector
        self.algorithm: Algorithm = algorithm
        self._key, self._public = _load_key(private_key_pem, algorithm, where)

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_record(self) -> str:
        """The TXT record receivers must find at ``dns_name`` to verify our signatures."""
        k = "rsa" if self.algorithm == "rsa-sha256" else "ed25519"
        return f"v=DKIM1; k={k}; p={base64.b64encode(self._public).decode('ascii')}"

    def sign(self, message: bytes) -> bytes:
        """``message`` with a DKIM-Signature header prepended.

        ValueError when the message has no From header or its header block is not RFC 5322.
        """
        try:
            header_list, _ = dkim.rfc822_parse(message)
        except dkim.MessageFormatError as exc:
            raise ValueError(f"cannot DKIM-sign a malformed message: {exc}") from None
        present = {bytes(name).lower().decode("ascii", "replace") for name, _ in header_list}
        if "from" not in present:
            raise ValueError("cannot DKIM-sign a message without a From header")
        include = [h.encode("ascii") for h in SIGNED_HEADERS if h in present] + [b"from"]
        linesep = b"\r\n" if b"\r\n" in message else b"\n"
        try:
            signature = dkim.sign(
                message,
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                self._key,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=self.algorithm.encode("ascii"),
                include_headers=include,
                linesep=linesep,
            )
        except dkim.DKIMException as exc:
            raise ValueError(f"DKIM signing failed for {self.dns_name}: {exc}") from None
        return cast(bytes, signature) + message


def _load_key(data: bytes, algorithm: Algorithm, where: str) -> tuple[bytes, bytes]:
    """(key as dkimpy takes it, public key bytes for the DNS record) or an operator's error."""
    data = data.strip()
    if algorithm == "ed25519-sha256" and b"-----BEGIN" not in data:
        return _raw_ed25519(data, where)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(
            f"{where} is encrypted with a passphrase — store it unencrypted, readable only by "
            "campaignd (openssl pkey -in KEY -out KEY.plain), or pass it as a systemd credential"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(
            f"{where} is not a PEM private key ({exc}) — expected '-----BEGIN PRIVATE KEY-----' "
            "or '-----BEGIN RSA PRIVATE KEY-----'"
        ) from None
    if algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(
                f"{where} is not an RSA key but algorithm is rsa-sha256 — use an RSA key "
                "or set algorithm: ed25519-sha256"
            )
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(
                f"{where} has {key.key_size} bits; receivers ignore RSA keys under "
                f"{MIN_RSA_BITS} bits (RFC 8301) — make a 2048-bit key"
            )
        # dkimpy's own parser reads PKCS#1 most reliably; PKCS#8 input is converted.
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem, public
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(
            f"{where} is not an Ed25519 key but algorithm is ed25519-sha256 — make one with "
            "openssl genpkey -algorithm ed25519, or set algorithm: rsa-sha256"
        )
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw), _ed25519_public(raw)


def _raw_ed25519(data: bytes, where: str) -> tuple[bytes, bytes]:
    """dknewkey's format: the 32-byte seed in base64, no PEM armour."""
    try:
        seed = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != 32:
        raise ValueError(
            f"{where} is neither a PEM private key nor a base64 Ed25519 seed — expected "
            "'-----BEGIN PRIVATE KEY-----' (openssl genpkey -algorithm ed25519)"
        )
    return base64.b64encode(seed), _ed25519_public(seed)


def _ed25519_public(seed: bytes) -> bytes:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ---------------------------------------------------------------- per config generation


@dataclass(frozen=True, slots=True)
class _Loaded:
    generation: int
    spec: Dkim
    signer: DkimSigner | None
    error: str | None


_LOADED: dict[tuple[str, str], _Loaded] = {}
_LOCK = threading.Lock()


def signer_for(config: Config, service_id: str) -> DkimSigner | None:
    """The signer of a service with ``dkim:``, its key resolved once per config generation.

    None when the service does not sign. A key that cannot be read or used raises
    ``ValueError`` (``SecretError`` is one) with the operator's fix — the same error until the
    next generation, so a broken key file is read once, not once per message; fixing it takes
    a reload (SIGHUP, or any change to the config root).
    """
    from ..config.secrets import resolve_secret

    service = config.services[service_id]
    spec = service.dkim
    if spec is None:
        return None
    cache_key = (str(config.root), service_id)
    with _LOCK:
        found = _LOADED.get(cache_key)
        if found is None or found.generation != config.generation or found.spec != spec:
            signer: DkimSigner | None = None
            error: str | None = None
            ref = spec.secret_ref("private_key")
            try:
                if ref is None:  # the model forbids it; kept for a clear message
                    raise ValueError("dkim has no private_key_file/_credential/_env")
                pem = resolve_secret(ref).encode("utf-8")
                signer = DkimSigner(spec.domain, spec.selector, pem, spec.algorithm)
            except ValueError as exc:
                error = f"services.d/{service_id}.yaml: dkim: {exc}"
            found = _Loaded(config.generation, spec, signer, error)
            _LOADED[cache_key] = found
    if found.signer is None:
        raise ValueError(found.error or f"services.d/{service_id}.yaml: dkim key unusable")
    return found.signer
