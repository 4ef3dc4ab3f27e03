"""ESP webhooks (SPEC §5, §7): ``POST /hooks/{provider}`` for ses, sendgrid, mailgun, postmark.

No bearer token: the providers cannot send one. Instead every request is verified the
provider's way (``feedback.webhooks``) before a single event is read; a missing or wrong
signature is answered 401 and changes nothing. Verified events go down the one event path
(``feedback.apply`` through the daemon's feedback runner, ``ports.FeedbackPort``) as
*authenticated*, and their dedupe keys make a provider's retry — or a replayed request —
change nothing.

SNS (SES) signs with a certificate it serves over HTTPS; it is fetched through ``FETCH`` (an
injectable coroutine, so tests serve a locally made certificate) and cached per URL. The
same fetch confirms an SNS subscription: SNS sends a signed ``SubscriptionConfirmation`` whose
``SubscribeURL`` we GET once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aiohttp import ClientError, ClientResponseError, ClientSession, ClientTimeout, web

from ..config.secrets import resolve_secret
from ..errors import SecretError
from ..feedback.esp import BadPayload, BadSignature, load_json, text
from ..feedback.event import FeedbackEvent
from ..feedback.ses import check_sns_url
from ..feedback.webhooks import (
    ConfirmSubscription,
    mailgun_events,
    postmark_events,
    sendgrid_events,
    ses_events,
    verify_postmark,
)
from .common import DAEMON
from .ports import FeedbackPort

if TYPE_CHECKING:
    from ..config.model import Webhooks

__all__ = ["CERTS", "FETCH", "PROVIDERS", "Fetch", "add_routes", "https_get"]

log = logging.getLogger("campaignd.hooks")

PROVIDERS: Final = ("ses", "sendgrid", "mailgun", "postmark")
MAX_CERT: Final = 64 * 1024

Fetch = Callable[[str], Awaitable[bytes]]
FETCH: web.AppKey[Fetch] = web.AppKey("hooks-fetch")
"""How SNS certificates and subscription URLs are fetched (tests put a local one here)."""
CERTS: web.AppKey[dict[str, bytes]] = web.AppKey("hooks-certs")


async def https_get(url: str) -> bytes:
    """GET ``url`` with certificate verification (aiohttp's default), at most ``MAX_CERT``."""
    async with (
        ClientSession(timeout=ClientTimeout(total=15)) as session,
        session.get(url, allow_redirects=False) as resp,
    ):
        resp.raise_for_status()
        body = await resp.content.read(MAX_CERT + 1)
    if len(body) > MAX_CERT:
        raise ValueError(f"{url} answered more than {MAX_CERT} bytes")
    return body


def add_routes(app: web.Application) -> None:
    """Register ``/hooks/{provider}``; ``app[DAEMON]`` must be set (``web.api.make_app``)."""
    app.router.add_post("/hooks/{provider}", hook)
    app.setdefault(FETCH, https_get)
    app[CERTS] = {}


def _answer(status: int, **data: Any) -> web.Response:
    return web.json_response(data, status=status)


async def hook(request: web.Request) -> web.Response:
    provider = request.match_info["provider"]
    view = request.app[DAEMON]
    runner = view.feedback
    if runner is None or view.config is None:
        return _answer(503, error="campaignd is starting; try again")
    hooks = view.config.settings.webhooks
    spec = getattr(hooks, provider, None) if provider in PROVIDERS else None
    if spec is None:
        return _answer(
            404,
            error=f"no webhook {provider!r} — configure webhooks.{provider} in campaignd.yaml "
            f"(one of {', '.join(PROVIDERS)})",
        )
    body = await request.read()
    now = datetime.now(UTC)
    try:
        found = await _verify_and_map(request, provider, hooks, body, now, runner)
    except BadSignature as exc:
        # Not logged as an error: anyone can POST here; the count matters, not each attempt.
        log.warning("webhook %s refused from %s: %s", provider, request.remote, exc)
        return _answer(401, error=f"signature check failed: {exc}")
    except BadPayload as exc:
        return _answer(400, error=str(exc))
    except Unreachable as exc:
        # SNS retries a 5xx later, which is what we want while we cannot reach it ourselves.
        log.warning("webhook %s: %s", provider, exc)
        resp = _answer(503, error=str(exc))
        resp.headers["Retry-After"] = "60"
        return resp
    except (SecretError, ValueError) as exc:
        # The operator's configuration, not the provider's request: say so loudly.
        log.error("webhook %s cannot be verified: %s", provider, exc)
        return _answer(500, error=f"webhooks.{provider} is misconfigured: {exc}")
    if isinstance(found, ConfirmSubscription):
        try:
            await _fetch(request, found.url)
        except BadSignature as exc:
            return _answer(400, error=f"the subscription could not be confirmed: {exc}")
        except Unreachable as exc:
            log.warning("webhook %s: %s", provider, exc)
            return _answer(503, error=str(exc))
        log.info("SNS subscription to %s confirmed", found.topic_arn)
        return _answer(200, subscribed=found.topic_arn)
    results = await runner.apply(found, authenticated=True)
    tally = {"applied": 0, "duplicate": 0, "counted": 0, "unmatched": 0}
    for r in results:
        tally[r.result] += 1
    return _answer(200, events=len(results), **tally)


async def _verify_and_map(
    request: web.Request,
    provider: str,
    hooks: Webhooks,
    body: bytes,
    now: datetime,
    runner: FeedbackPort,
) -> list[FeedbackEvent] | ConfirmSubscription:
    if provider == "sendgrid":
        assert hooks.sendgrid is not None
        key = _secret(hooks.sendgrid.secret_ref("public_key"), "sendgrid", "public_key")
        return sendgrid_events(body, request.headers, public_key=key, now=now)
    if provider == "postmark":
        assert hooks.postmark is not None
        auth = _secret(hooks.postmark.secret_ref("basic_auth"), "postmark", "basic_auth")
        # Credentials before parsing: an unauthenticated body is not even read as JSON.
        verify_postmark(request.headers.get("Authorization"), basic_auth=auth)
        return postmark_events(
            _object(body), request.headers.get("Authorization"), basic_auth=auth, now=now
        )
    if provider == "mailgun":
        assert hooks.mailgun is not None
        key = _secret(hooks.mailgun.secret_ref("signing_key"), "mailgun", "signing_key")
        return mailgun_events(_object(body), signing_key=key, now=now, verp=runner.verp())
    assert hooks.ses is not None
    message = _object(body)
    url = check_sns_url(text(message, "SigningCertURL") or "", suffix=".pem")
    certs = request.app[CERTS]
    if url not in certs:
        # Fetched before verifying (the signature needs it); only SNS hosts are ever asked.
        certs[url] = await _fetch(request, url)
    return ses_events(
        message, lambda u: certs[u], topic_arn=hooks.ses.topic_arn, now=now, verp=runner.verp()
    )


class Unreachable(Exception):
    """An SNS URL could not be fetched for a reason of ours or the network's (not the sender's)."""


async def _fetch(request: web.Request, url: str) -> bytes:
    """GET an SNS URL (a certificate, a subscription). What the sender controls — a URL that
    is not found, too big, not an answer — is a BadSignature: nothing can be verified with it.
    A network failure or an SNS outage is ``Unreachable``: the request may be genuine."""
    try:
        return await request.app[FETCH](url)
    except ClientResponseError as exc:
        if 400 <= exc.status < 500:
            raise BadSignature(f"{url} answered {exc.status}") from None
        raise Unreachable(f"{url} answered {exc.status}; try again later") from None
    except ValueError as exc:  # too big, or a URL aiohttp cannot even form
        raise BadSignature(str(exc)[:200]) from None
    except (OSError, ClientError, TimeoutError) as exc:
        raise Unreachable(
            f"cannot fetch {url}: {type(exc).__name__}: {str(exc)[:200]}; try again later"
        ) from None


def _object(body: bytes) -> dict[str, Any]:
    data = load_json(body)
    if not isinstance(data, dict):
        raise BadPayload("the webhook body is not a JSON object")
    return data


def _secret(ref: Any, provider: str, name: str) -> str:
    if ref is None:
        raise ValueError(f"add {name}_env, {name}_file or {name}_credential to webhooks.{provider}")
    return resolve_secret(ref)
