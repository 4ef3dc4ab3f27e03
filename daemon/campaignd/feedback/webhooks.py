"""ESP webhooks (SPEC §7): verify, then map to ``FeedbackEvent``s — one entry point each.

Every function raises ``BadSignature`` (answer 401, change nothing) before it reads a single
event, ``BadPayload`` (answer 400) for a signed body that is not the provider's format, and
``ValueError`` for a configured key that cannot be one (an operator's mistake, logged). Secrets
arrive resolved (``config.secrets.resolve_secret``); nothing here reads files or the network —
SNS certificates come through the caller's ``fetch_cert``.

| provider | call | POST body given as |
|---|---|---|
| ses (via SNS) | ``ses_events(message, fetch_cert, topic_arn=, now=, verp=)`` | parsed JSON |
| sendgrid | ``sendgrid_events(body, headers, public_key=, now=)`` | raw bytes (signed as is) |
| mailgun | ``mailgun_events(payload, signing_key=, now=, verp=)`` | parsed JSON |
| postmark | ``postmark_events(payload, authorization, basic_auth=, now=)`` | parsed JSON |

``ses_events`` returns ``ConfirmSubscription`` for an SNS subscription handshake: the caller
GETs its ``url`` (an SNS endpoint, already checked) once.
"""

from __future__ import annotations

from .esp import BadPayload, BadSignature, load_json
from .mailgun import mailgun_events, verify_mailgun
from .postmark import postmark_events, verify_postmark
from .sendgrid import load_sendgrid_key, sendgrid_events, verify_sendgrid
from .ses import ConfirmSubscription, ses_events, verify_sns

__all__ = [
    "BadPayload",
    "BadSignature",
    "ConfirmSubscription",
    "load_json",
    "load_sendgrid_key",
    "mailgun_events",
    "postmark_events",
    "sendgrid_events",
    "ses_events",
    "verify_mailgun",
    "verify_postmark",
    "verify_sendgrid",
    "verify_sns",
]
