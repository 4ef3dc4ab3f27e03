"""``campaignctl send-test CAMPAIGN --to ADDR``: one real message of a campaign, to yourself.

The message is the one ``preview`` renders for the chosen audience row (the same path), with the
campaign's real headers (List-Unsubscribe, List-Id, Reply-To, …), the subject prefixed
``[test] ``, ``To:`` set to ADDR, signed by the service's DKIM key when the service signs, and
sent by ``delivery.servicetest`` over ``delivery.smtp`` — the daemon's own SMTP client. Nothing
touches the database: no message row, no history, no counts; opens and clicks of the copy find
no message and are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config.load import LoadResult
from ..errors import ConfigError
from ..plan.audience_address import EmailNotValidError, explain_invalid, parse_address
from ..render.headers import header_address, one_line, replace_header, unstructured
from .preview import render_for

SUBJECT_PREFIX = "[test] "


@dataclass(frozen=True)
class TestMessage:
    campaign_id: str
    step: int
    template_id: str
    service_id: str
    recipient: str
    """The audience row the message was rendered for (its email)."""
    to: str
    """Where the copy goes (RCPT TO and the To header)."""
    mail_from: str
    message_id: str
    subject: str
    data: bytes
    dkim: str | None
    """``selector._domainkey.domain`` of the signature, or None when the service does not sign."""

    def describe(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign_id,
            "step": self.step,
            "template": self.template_id,
            "service": self.service_id,
            "recipient": self.recipient,
            "to": self.to,
            "mail_from": self.mail_from,
            "message_id": self.message_id,
            "subject": self.subject,
            "dkim": self.dkim,
        }


def build_test_message(
    result: LoadResult,
    campaign_id: str,
    *,
    to: str,
    recipient: str | None = None,
    step: int = 1,
    service_id: str | None = None,
) -> TestMessage:
    """The signed bytes and envelope of the test copy; ``ConfigError`` says why not."""
    from ..delivery.dkim import signer_for
    from ..delivery.worker import envelope_sender

    try:
        target = parse_address(to)
    except EmailNotValidError as exc:
        raise ConfigError(f"--to {to!r} is not an address mail can go to: "
                          f"{explain_invalid(to, exc)}") from None  # fmt: skip
    config = result.config
    if service_id is not None and service_id in config.services:
        service = config.services[service_id]
        if service.transport == "outbox":
            raise ConfigError(
                f"service {service_id!r} is an outbox (it writes .eml files, it sends nothing) "
                "— pass --service with an SMTP service"
            )
    rendered = render_for(
        result, campaign_id, recipient=recipient, step=step, service_id=service_id
    )
    sid = rendered.service_id
    service = config.services[sid]
    if service.transport == "outbox":
        raise ConfigError(
            f"service {sid!r} (the campaign's first) is an outbox: it writes .eml files and "
            "sends nothing — pass --service with an SMTP service"
        )
    subject = one_line(SUBJECT_PREFIX + rendered.message.subject)
    data = replace_header(rendered.message.data, "Subject", unstructured(subject, len("Subject: ")))
    # The copy is addressed to its reader; the row's address stays in the body where the
    # template put it.
    data = replace_header(data, "To", header_address(target.email))
    dkim_name = None
    if service.dkim is not None:
        try:
            signer = signer_for(config, sid)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if signer is not None:
            data = signer.sign(data)
            dkim_name = signer.dns_name
    campaign = config.campaigns[campaign_id]
    return TestMessage(
        campaign_id=campaign_id,
        step=rendered.step,
        template_id=rendered.template_id,
        service_id=sid,
        recipient=rendered.recipient.email,
        to=target.smtp_address,
        mail_from=envelope_sender(config, campaign, service, sid),
        message_id=rendered.message.message_id,
        subject=subject,
        data=data,
        dkim=dkim_name,
    )
