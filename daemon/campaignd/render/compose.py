"""From (campaign, step, recipient) to the bytes of one message — shared by preview and the worker.

Prepared templates are cached per (campaign, step, template) and config generation, so the
constant parts of a message are built once, not per recipient.

Tracking (``track: {opens, clicks}``) signs the message's Message-ID into its pixel and click
tokens: the Message-ID is made here, is recorded with the ``sent`` outcome, and is how the
``/o/`` and ``/c/`` handlers find the message again (as replies do).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from functools import lru_cache

from ..config.model import Campaign, Config
from ..errors import TemplateError
from ..tokens.links import LinkSigner, MessageRef, click_url, open_url, unsubscribe_url
from .headers import list_id, make_message_id
from .message import PreparedTemplate, RenderContext, RenderedMessage
from .templates import choose_template
from .tracking import Tracking

# A click token carries its URL and must stay under links.MAX_TOKEN characters once encoded;
# longer targets (rare: tracking-laden URLs of other systems) are left as direct links.
MAX_TRACKED_URL = 4000


def sender_of(config: Config, campaign: Campaign, service_id: str) -> str:
    return campaign.from_ or config.services[service_id].from_


@lru_cache(maxsize=256)
def address_of(sender: str) -> str:
    """The bare address of a From line. Cached: the same few senders are parsed for every
    message (Message-ID domain, MAIL FROM), and parseaddr is not cheap."""
    return parseaddr(sender)[1]


def base_url(config: Config) -> str:
    http = config.settings.http
    return http.public_url or f"http://{http.listen}"


@dataclass
class Composer:
    config: Config
    signer: LinkSigner
    require_compliance: bool = True
    """Refuse marketing messages without the unsubscribe link or postal address (the daemon,
    preview); lint turns it off to report what a sample lacks."""

    def __post_init__(self) -> None:
        self._prepared: dict[tuple[str, int, str, str], PreparedTemplate] = {}

    def template_for(self, campaign_id: str, step: int, recipient_key: str) -> str:
        campaign = self.config.campaigns[campaign_id]
        return choose_template(campaign_id, recipient_key, campaign.steps[step - 1].template)

    def prepared(
        self, campaign_id: str, step: int, template_id: str, service_id: str
    ) -> PreparedTemplate:
        key = (campaign_id, step, template_id, service_id)
        found = self._prepared.get(key)
        if found is None:
            campaign = self.config.campaigns[campaign_id]
            sender = sender_of(self.config, campaign, service_id)
            name = campaign.name or campaign_id
            ctx = RenderContext(
                campaign_id=campaign_id,
                campaign_name=name,
                step=step,
                sender=sender,
                marketing=campaign.kind == "marketing",
                postal_address=campaign.postal_address or "",
                list_id=list_id(campaign_id, name, address_of(sender), campaign.list_id),
                require_compliance=self.require_compliance,
            )
            template = self.config.template_of(campaign_id, template_id)
            if template is None:
                raise TemplateError(
                    f"campaign {campaign_id}: template {template_id!r} is not loaded "
                    f"(see load_errors; fix templates.d/{template_id}.yaml)"
                )
            found = PreparedTemplate(template_id, template, ctx)
            self._prepared[key] = found
        return found

    def compose(
        self,
        *,
        campaign_id: str,
        step: int,
        template_id: str,
        service_id: str,
        recipient_key: str,
        fields: Mapping[str, str],
        to_address: str,
        send_time: datetime,
        message_id: str | None = None,
    ) -> RenderedMessage:
        prepared = self.prepared(campaign_id, step, template_id, service_id)
        campaign = self.config.campaigns[campaign_id]
        # Transactional mail gets a working link too when its template offers one; only
        # marketing mail carries the List-Unsubscribe headers (render decides that).
        token = self.signer.unsubscribe_token(campaign_id, recipient_key)
        unsub = unsubscribe_url(base_url(self.config), token)
        if message_id is None:
            domain = address_of(sender_of(self.config, campaign, service_id)).rpartition("@")[2]
            message_id = make_message_id(domain or "campaignd.local")
        return prepared.render(
            fields,
            to_address=to_address,
            message_id=message_id,
            send_time=send_time,
            unsubscribe_url=unsub,
            tracking=self.tracking(campaign_id, message_id, keep=(unsub,)),
        )

    def tracking(
        self, campaign_id: str, message: MessageRef, *, keep: tuple[str, ...] = ()
    ) -> Tracking | None:
        """The campaign's open pixel and click redirects for one message, if it tracks any."""
        track = self.config.campaigns[campaign_id].track
        if not (track.opens or track.clicks):
            return None
        base = base_url(self.config)
        signer = self.signer

        def click(url: str) -> str | None:
            if len(url) > MAX_TRACKED_URL:
                return None
            try:
                return click_url(base, signer.click_token(message, url))
            except ValueError:  # mailto:, tel:, #anchors, relative links: not web targets
                return None

        return Tracking(
            click=click if track.clicks else None,
            pixel_url=open_url(base, signer.open_token(message)) if track.opens else None,
            keep=frozenset(keep),
        )
