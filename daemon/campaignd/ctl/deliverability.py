"""``campaignctl lint CAMPAIGN [--dns]``: will receivers accept this campaign's mail? (SPEC §4)

Since 2024 Gmail and Yahoo require of bulk senders: SPF and DKIM, a DMARC record, the From
domain aligned with the DKIM or the SPF (envelope) domain, one-click unsubscribe (RFC 8058) and
— by law for marketing mail — a postal address. ``lint`` checks what the files say and what a
rendered message carries; with ``--dns`` it also looks up SPF, the DKIM selector record and
DMARC and explains them.

The checks are pure functions of the loaded config, a rendered sample and TXT answers; DNS goes
through a ``Resolver`` (dnspython by default), so tests answer from their own server.
Alignment is judged by organisational domain, approximated as the last two labels (a public
suffix list would be exact for ``co.uk``-style domains; the difference only makes lint stricter).
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parseaddr
from functools import partial
from typing import Any, Literal

from ..config.load import LoadResult
from ..config.model import Campaign, Config, Service
from ..config.secrets import resolve_secret
from ..delivery.dkim import DkimSigner
from ..errors import CampaigndError
from ..plan.audience import NoHistory, NoSuppressions, build_audience
from ..plan.campaign import campaign_or_error
from ..render.compose import Composer, base_url, sender_of

__all__ = [
    "DnsError",
    "Finding",
    "Level",
    "Resolver",
    "aligned",
    "check_dkim_record",
    "check_dmarc",
    "check_spf",
    "dns_resolver",
    "lint_campaign",
    "org_domain",
]

Level = Literal["ok", "info", "warning", "error"]
Resolver = Callable[[str], list[str]]
"""TXT records at a name (each record's strings joined); [] when the name has none."""


class DnsError(CampaigndError, OSError):
    """A lookup failed (timeout, no server answered): nothing can be said about the record."""


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    topic: str  # alignment, unsubscribe, postal-address, dkim, spf, dmarc, render
    message: str
    template: str | None = None
    """The template the finding is about (its file is where to fix it); None: the campaign."""

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "topic": self.topic, "message": self.message}


def domain_of(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2].lower().rstrip(".")


def org_domain(domain: str) -> str:
    labels = domain.lower().rstrip(".").split(".")
    return ".".join(labels[-2:])


def aligned(a: str, b: str, *, strict: bool = False) -> bool:
    """DMARC identifier alignment (RFC 7489 §3.1): same domain, or same organisational one."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if strict else org_domain(a) == org_domain(b)


# ---------------------------------------------------------------- the files


def lint_campaign(
    result: LoadResult,
    campaign_id: str,
    *,
    resolver: Resolver | None = None,
    now: datetime | None = None,
) -> list[Finding]:
    campaign = result.refused.get(campaign_id) or campaign_or_error(result, campaign_id)
    if campaign_id not in result.config.campaigns:
        # Refused by the load check (not compliant): lint still says what a sample lacks.
        campaigns = {**result.config.campaigns, campaign_id: campaign}
        result = replace(result, config=replace(result.config, campaigns=campaigns))
    config = result.config
    out: list[Finding] = []
    signers: dict[str, DkimSigner] = {}
    for sid in campaign.services:
        service = config.services.get(sid)
        if service is None:
            out.append(Finding("error", "config", f"service {sid!r} is not loaded (see validate)"))
            continue
        out += _alignment(config, campaign, sid, service, signers)
    if campaign.kind == "marketing":
        out += _marketing(result, campaign_id, campaign, now or datetime.now(UTC))
    if resolver is not None:
        out += _dns(config, campaign, signers, resolver)
    return out


def _alignment(
    config: Config, campaign: Campaign, sid: str, service: Service, signers: dict[str, DkimSigner]
) -> list[Finding]:
    out: list[Finding] = []
    sender = sender_of(config, campaign, sid)
    from_domain = domain_of(sender)
    where = f"services.d/{sid}.yaml"
    if not from_domain:
        return [Finding("error", "alignment", f"{sid}: From {sender!r} has no domain")]
    dkim_ok = False
    if service.dkim is None:
        out.append(
            Finding(
                "warning",
                "dkim",
                f"{sid}: campaignd does not sign (no dkim: in {where}) — the relay "
                f"{service.host} must DKIM-sign with d={from_domain}, or add dkim: to sign here",
            )
        )
    else:
        d = service.dkim
        try:
            ref = d.secret_ref("private_key")
            assert ref is not None  # the model requires one
            signers[sid] = DkimSigner(
                d.domain, d.selector, resolve_secret(ref).encode(), d.algorithm
            )
        except ValueError as exc:
            out.append(Finding("error", "dkim", f"{sid}: {where}: dkim key unusable: {exc}"))
        dkim_ok = aligned(d.domain, from_domain)
        if dkim_ok:
            out.append(
                Finding(
                    "ok",
                    "alignment",
                    f"{sid}: DKIM d={d.domain} is aligned with From {from_domain}",
                )
            )
        else:
            out.append(
                Finding(
                    "error",
                    "alignment",
                    f"{sid}: DKIM d={d.domain} is not aligned with the From domain {from_domain} "
                    f"— DMARC passes only through SPF then; sign with a key of {from_domain}",
                )
            )
    envelope = _envelope_domain(service, from_domain)
    spf_ok = aligned(envelope, from_domain)
    if spf_ok:
        out.append(
            Finding(
                "ok",
                "alignment",
                f"{sid}: envelope sender domain {envelope} is aligned "
                f"with From {from_domain} (SPF)",
            )
        )
    else:
        level: Level = "warning" if dkim_ok else "error"
        out.append(
            Finding(
                level,
                "alignment",
                f"{sid}: envelope sender domain {envelope} (return_path) is not aligned with "
                f"From {from_domain}"
                + ("" if dkim_ok else " and nothing else aligns: DMARC fails")
                + f" — use a return_path under {org_domain(from_domain)}",
            )
        )
    if campaign.from_ and domain_of(service.from_) != from_domain:
        out.append(
            Finding(
                "info",
                "alignment",
                f"{sid}: the campaign's from: overrides the service's "
                f"({domain_of(service.from_)} → {from_domain})",
            )
        )
    return out


def _envelope_domain(service: Service, from_domain: str) -> str:
    if service.return_path:
        return service.return_path.rpartition("@")[2].lower().rstrip(".")
    return from_domain


# ---------------------------------------------------------------- a rendered message


def _marketing(
    result: LoadResult, campaign_id: str, campaign: Campaign, now: datetime
) -> list[Finding]:
    from .preview import preview_signer

    config = result.config
    out: list[Finding] = []
    if not campaign.postal_address:
        out.append(
            Finding(
                "error",
                "postal-address",
                f"campaigns.d/{campaign_id}.yaml: marketing mail "
                "needs postal_address (CAN-SPAM, §7 UWG) — add it",
            )
        )
    public = config.settings.http.public_url
    if not public:
        out.append(
            Finding(
                "error",
                "unsubscribe",
                f"http.public_url is not set: unsubscribe links point at {base_url(config)}, "
                "which recipients cannot reach — set it in campaignd.yaml",
            )
        )
    elif not public.startswith("https://"):
        out.append(
            Finding(
                "warning",
                "unsubscribe",
                f"http.public_url {public} is not https — Gmail "
                "and Yahoo expect an https one-click unsubscribe URL",
            )
        )
    sample = _sample_recipient(config, campaign, now)
    # Lint explains what a sample lacks instead of refusing to render it as the daemon does.
    composer = Composer(config, preview_signer(result), require_compliance=False)
    sid = campaign.services[0]
    if sid not in config.services:
        return out
    for n, step in enumerate(campaign.steps, start=1):
        for template_id in step.template:
            what = f"step {n} template {template_id}"
            if config.template_of(campaign_id, template_id) is None:
                # Broken or missing: the campaign cannot send it, and lint says so.
                out.append(
                    Finding(
                        "error",
                        "render",
                        f"{what}: not loaded — fix templates.d/{template_id}.yaml "
                        "(`campaignctl validate` says why)",
                        template_id,
                    )
                )
                continue
            try:
                message = composer.compose(
                    campaign_id=campaign_id,
                    step=n,
                    template_id=template_id,
                    service_id=sid,
                    recipient_key=sample[0].lower(),
                    fields=sample[1],
                    to_address=sample[0],
                    send_time=now,
                )
            except CampaigndError as exc:
                out.append(
                    Finding(
                        "error", "render", f"{what}: cannot render a sample: {exc}", template_id
                    )
                )
                continue
            out += [
                replace(f, template=template_id)
                for f in check_rendered(what, message.data, campaign.postal_address)
            ]
    return out


def _sample_recipient(
    config: Config, campaign: Campaign, now: datetime
) -> tuple[str, dict[str, str]]:
    """The first recipient of the audience; a stand-in when the list cannot be read."""
    try:
        audience = build_audience(
            campaign, config.root, history=NoHistory(), suppressions=NoSuppressions(), now=now
        )
        for r in audience:
            return r.email, dict(r.fields)
    except CampaigndError:
        pass
    return "lint-sample@example.com", {"email": "lint-sample@example.com"}


def check_rendered(what: str, data: bytes, postal_address: str | None) -> list[Finding]:
    """One-click unsubscribe headers, the link in the body, the postal address in the body."""
    msg: Any = email.message_from_bytes(data, policy=email.policy.default)
    out: list[Finding] = []
    unsub = str(msg.get("List-Unsubscribe", ""))
    post = str(msg.get("List-Unsubscribe-Post", ""))
    urls = [u.strip() for u in unsub.replace("<", " ").replace(">", " ").replace(",", " ").split()]
    https = [u for u in urls if u.startswith("https://")]
    if not urls:
        out.append(Finding("error", "unsubscribe", f"{what}: no List-Unsubscribe header"))
    elif not https:
        out.append(Finding("warning", "unsubscribe", f"{what}: List-Unsubscribe has no https URL"))
    if post.strip() != "List-Unsubscribe=One-Click":
        out.append(
            Finding(
                "error",
                "unsubscribe",
                f"{what}: no 'List-Unsubscribe-Post: "
                "List-Unsubscribe=One-Click' header (RFC 8058 one-click)",
            )
        )
    body = _body_text(msg)
    link = next((u for u in urls if u.startswith("http")), None)
    if link and link not in body:
        out.append(
            Finding(
                "error",
                "unsubscribe",
                f"{what}: the body has no unsubscribe link — add "
                "{{ unsubscribe_url }} to the template",
            )
        )
    if postal_address and " ".join(postal_address.split()) not in " ".join(body.split()):
        out.append(
            Finding(
                "error",
                "postal-address",
                f"{what}: the body does not show the postal "
                "address — add {{ postal_address }} to the template",
            )
        )
    if not out:
        out.append(
            Finding(
                "ok",
                "unsubscribe",
                f"{what}: one-click unsubscribe headers, "
                "unsubscribe link and postal address present",
            )
        )
    return out


def _body_text(msg: Any) -> str:
    import html

    parts = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            text = part.get_content()
            parts.append(html.unescape(text) if part.get_content_subtype() == "html" else text)
    return "\n".join(parts)


# ---------------------------------------------------------------- DNS


def _dns(
    config: Config, campaign: Campaign, signers: dict[str, DkimSigner], resolver: Resolver
) -> list[Finding]:
    out: list[Finding] = []
    from_domains: set[str] = set()
    envelopes: set[str] = set()
    for sid in campaign.services:
        service = config.services.get(sid)
        if service is None:
            continue
        from_domain = domain_of(sender_of(config, campaign, sid))
        from_domains.add(from_domain)
        envelopes.add(_envelope_domain(service, from_domain))
        if service.dkim is not None:
            record = f"{service.dkim.selector}._domainkey.{service.dkim.domain}"
            check = partial(check_dkim_record, record, signer=signers.get(sid))
            out += _looked_up("dkim", record, resolver, check)
    for domain in sorted(envelopes):
        out += _looked_up("spf", domain, resolver, partial(check_spf, domain))
    for domain in sorted(from_domains):
        out += _dmarc_lookup(domain, resolver)
    return out


def _looked_up(
    topic: str, name: str, resolver: Resolver, check: Callable[[list[str]], list[Finding]]
) -> list[Finding]:
    try:
        records = resolver(name)
    except DnsError as exc:
        return [Finding("error", topic, f"cannot look up {name}: {exc}")]
    return check(records)


def _dmarc_lookup(domain: str, resolver: Resolver) -> list[Finding]:
    names = [f"_dmarc.{domain}"]
    if org_domain(domain) != domain:
        names.append(f"_dmarc.{org_domain(domain)}")  # RFC 7489 §6.6.3: the org's policy
    for name in names:
        try:
            records = [r for r in resolver(name) if r.lower().startswith("v=dmarc1")]
        except DnsError as exc:
            return [Finding("error", "dmarc", f"cannot look up {name}: {exc}")]
        if records:
            return check_dmarc(name, records)
    return check_dmarc(names[0], [])


def _tags(record: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def check_spf(domain: str, records: Iterable[str]) -> list[Finding]:
    spf = [r for r in records if r.lower().split(" ", 1)[0] == "v=spf1"]
    if not spf:
        return [
            Finding(
                "error",
                "spf",
                f"{domain} has no SPF record — add a TXT record like 'v=spf1 "
                f"include:<your relay's SPF> -all' so receivers know who may send for it",
            )
        ]
    if len(spf) > 1:
        return [
            Finding(
                "error",
                "spf",
                f"{domain} has {len(spf)} SPF records — RFC 7208 makes "
                "that a permanent error; merge them into one",
            )
        ]
    record = spf[0]
    terms = record.split()[1:]
    allowed = [
        t
        for t in terms
        if t.lstrip("+").split(":")[0] in ("include", "ip4", "ip6", "a", "mx", "exists")
    ]
    final = next((t for t in terms if t.lstrip("+-~?") == "all"), None)
    explain = f"{domain}: SPF '{record}' allows " + (", ".join(allowed) or "nothing")
    if final in ("all", "+all"):
        return [Finding("error", "spf", explain + " and then everyone (+all) — use -all or ~all")]
    if final in (None, "?all"):
        return [Finding("warning", "spf", explain + "; others are neutral (no -all/~all)")]
    ending = "fail (-all)" if final == "-all" else "soft-fail (~all)"
    return [Finding("ok", "spf", f"{explain}; others {ending}")]


def check_dkim_record(
    name: str, records: Iterable[str], signer: DkimSigner | None
) -> list[Finding]:
    found = [r for r in records if "p=" in r]
    if not found:
        hint = f": {signer.dns_record()}" if signer is not None else ""
        return [Finding("error", "dkim", f"no DKIM key at {name} — publish a TXT record{hint}")]
    tags = _tags(found[0])
    key = "".join(tags.get("p", "").split())
    if not key:
        return [Finding("error", "dkim", f"{name} has an empty p= (a revoked key)")]
    if signer is not None:
        want = _tags(signer.dns_record())
        if key != want["p"]:
            return [
                Finding(
                    "error",
                    "dkim",
                    f"{name} publishes another key than the one campaignd "
                    f"signs with — publish: {signer.dns_record()}",
                )
            ]
        if tags.get("k", "rsa") != want["k"]:
            return [
                Finding(
                    "error", "dkim", f"{name} says k={tags.get('k', 'rsa')}, the key is {want['k']}"
                )
            ]
    return [Finding("ok", "dkim", f"{name} publishes the DKIM key campaignd signs with")]


def check_dmarc(name: str, records: Iterable[str]) -> list[Finding]:
    found = [r for r in records if r.lower().startswith("v=dmarc1")]
    domain = name.removeprefix("_dmarc.")
    if not found:
        return [
            Finding(
                "error",
                "dmarc",
                f"no DMARC record at {name} — Gmail and Yahoo require one of bulk senders; "
                f"start with TXT 'v=DMARC1; p=none; rua=mailto:dmarc@{domain}'",
            )
        ]
    tags = _tags(found[0])
    policy = tags.get("p", "").lower()
    strict = [n for n, tag in (("DKIM", "adkim"), ("SPF", "aspf")) if tags.get(tag) == "s"]
    notes = f"; strict alignment for {' and '.join(strict)}" if strict else ""
    if policy not in ("none", "quarantine", "reject"):
        return [Finding("error", "dmarc", f"{name}: p={policy or '(missing)'} is not a policy")]
    if policy == "none":
        return [
            Finding(
                "warning",
                "dmarc",
                f"{name}: p=none — receivers only report, nothing is "
                f"enforced; move to quarantine once reports are clean{notes}",
            )
        ]
    return [Finding("ok", "dmarc", f"{name}: p={policy}{notes}")]


def dns_resolver(nameserver: str | None = None, *, timeout: float = 5.0) -> Resolver:
    """TXT lookups with dnspython; ``nameserver`` (``IP`` or ``IP:PORT``) instead of the
    system's resolvers — to ask the authoritative server before a change has propagated."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        host, _, port = (
            nameserver.rpartition(":") if nameserver.count(":") == 1 else (nameserver, "", "")
        )
        resolver.nameservers = [host.strip("[]")]
        if port:
            resolver.port = int(port)
    resolver.lifetime = timeout

    def txt(name: str) -> list[str]:
        try:
            answer = resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise DnsError(str(exc) or type(exc).__name__) from None
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]

    return txt
