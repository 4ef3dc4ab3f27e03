"""``campaignctl preview``: the exact message one recipient would get, without sending it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime

from ..config.load import LoadResult
from ..config.secrets import resolve_secret
from ..errors import CampaigndError, ConfigError
from ..plan.audience import (
    AudienceReport,
    NoHistory,
    NoSuppressions,
    Recipient,
    build_audience,
    parse_address,
)
from ..plan.audience_address import EmailNotValidError, explain_invalid
from ..plan.campaign import campaign_or_error
from ..render.compose import Composer
from ..render.message import RenderedMessage
from ..tokens.links import LinkSigner

# Previews must not create key files; without a configured secret the links are signed with a
# throwaway key and say so.
_PREVIEW_KEY = b"campaignd-preview-only-not-a-real-key"


def preview_signer(result: LoadResult) -> LinkSigner:
    ref = result.config.settings.secret_ref("secret")
    if ref is not None:
        try:
            return LinkSigner(resolve_secret(ref).encode())
        except CampaigndError:
            pass
    key_file = result.config.root / "state" / "secret.key"
    if key_file.is_file() and os.access(key_file, os.R_OK):
        return LinkSigner(key_file.read_bytes().strip())
    return LinkSigner(_PREVIEW_KEY)


@dataclass(frozen=True)
class Rendered:
    """One campaign message rendered for one audience row, and what it was rendered with."""

    message: RenderedMessage
    recipient: Recipient
    step: int
    template_id: str
    service_id: str


def render_for(
    result: LoadResult,
    campaign_id: str,
    *,
    recipient: str | None,
    step: int,
    service_id: str | None = None,
) -> Rendered:
    """The message ``recipient``'s row (default: the first valid row) would get at ``step``
    through ``service_id`` (default: the campaign's first service) — preview and send-test."""
    config = result.config
    campaign = campaign_or_error(result, campaign_id)
    if not 1 <= step <= len(campaign.steps):
        raise ConfigError(
            f"campaign {campaign_id!r} has {len(campaign.steps)} step(s) — use --step 1"
            + (f"..{len(campaign.steps)}" if len(campaign.steps) > 1 else "")
        )
    if service_id is None:
        service_id = campaign.services[0]
    if service_id not in config.services:
        known = ", ".join(sorted(config.services)) or "none"
        hint = " — `campaignctl validate` says what is wrong with it"
        raise ConfigError(
            f"no valid service {service_id!r} in {config.root}/services.d (valid: {known})"
            + (hint if service_id in campaign.services else "")
        )
    audience = build_audience(
        campaign,
        config.root,
        history=NoHistory(),
        suppressions=NoSuppressions(),
        now=datetime.now(UTC),
    )
    wanted = recipient.strip().lower() if recipient else None
    chosen = None
    for r in audience:
        if wanted is None or r.key == wanted or r.email.lower() == wanted:
            chosen = r
            break
    if chosen is None:
        report = audience.report
        if wanted:
            assert recipient is not None
            raise ConfigError(
                f"{recipient} is not in the audience of {campaign_id!r}"
                + _why_not(recipient, report)
            )
        raise ConfigError(f"campaign {campaign_id!r} has no recipients after filters")
    composer = Composer(config, preview_signer(result))
    template_id = composer.template_for(campaign_id, step, chosen.key)
    message = composer.compose(
        campaign_id=campaign_id,
        step=step,
        template_id=template_id,
        service_id=service_id,
        recipient_key=chosen.key,
        fields=chosen.fields,
        to_address=chosen.email,
        send_time=datetime.now(UTC),
    )
    return Rendered(message, chosen, step, template_id, service_id)


def _why_not(address: str, report: AudienceReport) -> str:
    """Why an address is not in the audience, as far as the report knows."""
    try:
        key = parse_address(address).key
    except EmailNotValidError as exc:
        return f": it is not a valid address — {explain_invalid(address, exc)}"
    for problem in report.invalid_rows:
        if problem.address.strip().lower() == key:
            return f": its row is invalid — {problem}"
    return (
        f" after validation, filters and suppressions ({report.invalid} invalid, "
        f"{report.filtered} filtered, {report.duplicates} duplicates) — check the list "
        "and the campaign's filters (`campaignctl plan` counts them)"
    )


def preview_message(
    result: LoadResult,
    campaign_id: str,
    *,
    recipient: str | None,
    step: int,
    raw: bool = False,
) -> str:
    r = render_for(result, campaign_id, recipient=recipient, step=step)
    if raw:
        return r.message.data.decode("utf-8", "replace")
    head = (
        f"# campaign {campaign_id}, step {step}, template {r.template_id}, "
        f"service {r.service_id}, recipient {r.recipient.email}\n"
    )
    return head + r.message.as_text()
