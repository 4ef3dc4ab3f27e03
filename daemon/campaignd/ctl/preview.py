"""``campaignctl preview``: the exact message one recipient would get, without sending it."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from ..config.load import LoadResult
from ..config.secrets import resolve_secret
from ..errors import CampaigndError, ConfigError
from ..plan.audience import NoHistory, NoSuppressions, build_audience
from ..plan.campaign import campaign_or_error
from ..render.compose import Composer
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


def preview_message(
    result: LoadResult,
    campaign_id: str,
    *,
    recipient: str | None,
    step: int,
    raw: bool = False,
) -> str:
    config = result.config
    campaign = campaign_or_error(result, campaign_id)
    if not 1 <= step <= len(campaign.steps):
        raise ConfigError(
            f"campaign {campaign_id!r} has {len(campaign.steps)} step(s) — use --step 1"
            + (f"..{len(campaign.steps)}" if len(campaign.steps) > 1 else "")
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
            raise ConfigError(
                f"{recipient} is not in the audience of {campaign_id!r} after validation, "
                f"filters and suppressions ({report.invalid} invalid, {report.filtered} "
                f"filtered, {report.duplicates} duplicates) — check the list and filters"
            )
        raise ConfigError(f"campaign {campaign_id!r} has no recipients after filters")
    composer = Composer(config, preview_signer(result))
    service_id = campaign.services[0]
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
    if raw:
        return message.data.decode("utf-8", "replace")
    head = (
        f"# campaign {campaign_id}, step {step}, template {template_id}, "
        f"service {service_id}, recipient {chosen.email}\n"
    )
    return head + message.as_text()
