"""Templates → the exact bytes of one message (SPEC §3 "templates.d", "Rendering").

Pure: no I/O, no asyncio. The worker builds one ``PreparedTemplate`` per (campaign, step,
template, service) and calls ``render`` per recipient. Everything that does not depend on the
recipient — compiled Jinja2 templates, the From / Reply-To / custom header lines, the MIME
scaffolding — is built once; per message only the Jinja output, Subject, To, Date, Message-ID and
List-Unsubscribe are encoded and joined as bytes. Building an ``EmailMessage`` per recipient
costs several times more than the whole of ``render`` here; the tests parse our output with the
stdlib parser to prove the bytes are what ``EmailMessage`` would mean.

Header safety: recipient data never creates a header line. In a rendered Subject or a ``name``
display name, control characters (CR, LF, NUL, the rest of C0/C1, U+2028/U+2029) are replaced —
each run by one space; in display names every whitespace run becomes one space — and the ends
are trimmed: a stray newline in a spreadsheet cell must not fail the send. A To address that is
not a plain ``local@domain`` is a ``RenderError``. Non-ASCII text goes out as RFC 2047 encoded
words; bodies as 7bit when they can, else quoted-printable, always ``charset="utf-8"``.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment

from ..config.model import Template
from ..config.templates import (
    CONTROL_CHARS,
    HTML_ENV,
    TEXT_ENV,
    RenderBudget,
    RenderBudgetExceeded,
    budgeted,
    check_template,
    current_budget,
    legacy_to_jinja,
    render_chunks,
    rendered_gaps,
    template_headers,
)
from ..errors import NotCompliant, RenderCutOff, RenderError, TemplateError
from .headers import MESSAGE_ID, URL_UNSAFE, display_name, header_address, one_line, unstructured
from .tracking import Tracking, track_html

# ---------------------------------------------------------------- bodies


def mime_body(text: str, boundary: bytes | None) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, encoded bytes with CRLF line ends, ending in CRLF or not)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    raw = text.encode("utf-8")
    if (
        raw.isascii()
        and b"\x00" not in raw
        and (len(raw) <= 998 or max(map(len, raw.split(b"\n"))) <= 998)
        and (boundary is None or boundary not in raw)
    ):
        return b"7bit", raw.replace(b"\n", b"\r\n")
    # Quoted-printable output never contains "=_", so it can never contain the boundary either.
    qp = binascii.b2a_qp(raw, quotetabs=False, istext=True, header=False)
    return b"quoted-printable", qp.replace(b"\n", b"\r\n")


# ---------------------------------------------------------------- tracking


@dataclass(frozen=True)
class RenderContext:
    """What the worker knows about a send besides the recipient's row."""

    campaign_id: str
    campaign_name: str
    step: int
    """1-based, as operators count steps."""
    sender: str
    """The From header value, e.g. ``Acme <outreach@acme.example>``."""
    marketing: bool
    """Adds List-Unsubscribe and List-Unsubscribe-Post (RFC 8058 one-click)."""
    postal_address: str = ""
    """The campaign's ``postal_address``, available to templates as ``postal_address``."""
    list_id: str = ""
    """The ``List-Id`` value of marketing mail (``render.headers.list_id``); empty: none."""
    require_compliance: bool = False
    """Refuse (``NotCompliant``) a marketing message whose body lacks the unsubscribe link or
    the postal address. The daemon and preview set it; it is the load check's last line."""


@dataclass(frozen=True)
class RenderedMessage:
    data: bytes
    """The whole RFC 5322 message with CRLF line ends, ready for SMTP DATA."""
    message_id: str
    subject: str
    """As a reader sees it (decoded, control characters replaced)."""

    def as_text(self) -> str:
        """Headers and decoded parts, readable (``campaignctl preview``)."""
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        out = [f"{name}: {value}" for name, value in msg.items()]
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                content = part.get_content()
                out += ["", f"--- {part.get_content_type()} ---", content.replace("\r\n", "\n")]
        return "\n".join(out).rstrip("\n") + "\n"


def _compile(env: SandboxedEnvironment, source: str | None) -> jinja2.Template | None:
    return env.from_string(legacy_to_jinja(source)) if source else None


_MISSING = re.compile(r"'([^']+)' is undefined")


class PreparedTemplate:
    """One template compiled and framed for one (campaign, step, sender); render per recipient.

    Safe to share between threads and tasks: ``render`` mutates nothing.
    """

    def __init__(self, template_id: str, template: Template, ctx: RenderContext) -> None:
        self.template_id = template_id
        self.ctx = ctx
        problems = check_template(template_id, template)
        if problems:
            first = problems[0]
            raise TemplateError(f"template {template_id}: {first.message}")
        from_line, rest_lines = template_headers(template_id, template, ctx.sender)
        self._from = from_line
        self._rest = rest_lines + "MIME-Version: 1.0\r\n"
        self._subject = TEXT_ENV.from_string(legacy_to_jinja(template.subject))
        self._text = TEXT_ENV.from_string(legacy_to_jinja(template.text)) if template.text else None
        self._html = HTML_ENV.from_string(legacy_to_jinja(template.html)) if template.html else None
        self._globals = dict(TEXT_ENV.globals)
        self._constants: dict[str, Any] = {
            "sender": ctx.sender,
            "campaign": ctx.campaign_name,
            "step": ctx.step,
            "postal_address": ctx.postal_address,
        }
        # "=_" cannot occur in quoted-printable, and 7bit bodies are checked for the marker.
        boundary = "=_" + secrets.token_hex(12)
        self._marker = ("--" + boundary).encode()
        self._multipart = self._text is not None and self._html is not None
        if self._multipart:
            self._top = (
                f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            ).encode()
            self._open = b"--" + boundary.encode() + b"\r\n"
            self._close = b"\r\n--" + boundary.encode() + b"--\r\n"

    def render(
        self,
        recipient: Mapping[str, str],
        *,
        to_address: str,
        message_id: str,
        send_time: datetime,
        unsubscribe_url: str | None,
        tracking: Tracking | None = None,
    ) -> RenderedMessage:
        """The message for one recipient, or a ``RenderError`` naming template, field and who.

        ``send_time`` without a zone is taken as UTC. ``tracking`` rewrites the HTML part's
        links and adds the open pixel after rendering (the text part is never touched).
        """
        who = to_address
        if self.ctx.marketing and unsubscribe_url is None:
            raise RenderError(
                f"template {self.template_id}: campaign {self.ctx.campaign_id} is marketing "
                "mail but no unsubscribe URL was given — set http.public_url in campaignd.yaml",
                template=self.template_id,
                recipient=who,
                field="unsubscribe_url",
            )
        if unsubscribe_url is not None and URL_UNSAFE.search(unsubscribe_url):
            raise RenderError(
                f"template {self.template_id}: unsubscribe URL {unsubscribe_url!r} has spaces, "
                "quotes or non-ASCII — check http.public_url",
                template=self.template_id,
                recipient=who,
                field="unsubscribe_url",
            )
        if not MESSAGE_ID.fullmatch(message_id):
            raise RenderError(
                f"template {self.template_id}: {message_id!r} is not a Message-ID like <id@domain>",
                template=self.template_id,
                recipient=who,
            )
        try:
            address = header_address(to_address)
        except ValueError:
            raise RenderError(
                f"template {self.template_id}: {to_address!r} is not a plain address like "
                "ann@example.com — fix it in the list",
                template=self.template_id,
                recipient=who,
            ) from None
        if send_time.tzinfo is None:
            send_time = send_time.replace(tzinfo=UTC)

        # Built-ins last: a list column must never pose as, say, the unsubscribe link.
        variables: dict[str, Any] = {
            **self._globals,
            **recipient,
            **self._constants,
            "email": to_address,
            "receiver_email": to_address,
            "send_time": send_time,
            "unsubscribe_url": unsubscribe_url,
        }
        if unsubscribe_url is None:
            del variables["unsubscribe_url"]

        budget = current_budget()
        if not isinstance(budget, RenderBudget) or budget.seconds <= 0:
            budget = RenderBudget()
        try:
            with budgeted(budget):
                subject = one_line(self._run(self._subject, variables, "subject"))
                text = self._run(self._text, variables, "text") if self._text is not None else None
                html = self._run(self._html, variables, "html") if self._html is not None else None
            if self.ctx.require_compliance and self.ctx.marketing:
                self._comply(text, html, unsubscribe_url, who)
            if html is not None and tracking is not None:
                html = track_html(html, tracking)
        except jinja2.UndefinedError as exc:
            raise self._missing(exc, who) from None
        except RenderBudgetExceeded as exc:
            raise RenderCutOff(
                f"template {self.template_id}: rendering cut off: {exc}",
                template=self.template_id,
                recipient=who,
            ) from None
        except RenderError:
            raise
        except Exception as exc:  # the sandbox, a filter given the wrong type, …
            raise RenderError(
                f"template {self.template_id}: rendering for {who} failed: {exc}",
                template=self.template_id,
                recipient=who,
            ) from exc

        name = recipient.get("name")
        # Parsers collapse whitespace in display names, so we do it first: what we log is
        # what the reader's mail client shows.
        name = " ".join(CONTROL_CHARS.sub(" ", name).split()) if name else ""
        to = f"{display_name(name)} <{address}>" if name else address
        headers = [
            "Message-ID: ",
            message_id,
            "\r\nDate: ",
            format_datetime(send_time),
            "\r\n",
            self._from,
            "To: ",
            to,
            "\r\nSubject: ",
            unstructured(subject, len("Subject: ")),
            "\r\n",
            self._rest,
        ]
        if unsubscribe_url is not None and self.ctx.marketing:
            headers += [
                "List-Unsubscribe: <",
                unsubscribe_url,
                ">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            ]
        if self.ctx.marketing and self.ctx.list_id:
            headers += ["List-Id: ", self.ctx.list_id, "\r\n"]
        try:
            head = "".join(headers).encode("utf-8")
            data = self._assemble(head, text, html)
        except UnicodeError as exc:  # lone surrogates cannot come from a UTF-8 list, but …
            raise RenderError(
                f"template {self.template_id}: the text for {who} is not valid Unicode ({exc})",
                template=self.template_id,
                recipient=who,
            ) from exc
        return RenderedMessage(data=data, message_id=message_id, subject=subject)

    @staticmethod
    def _run(template: jinja2.Template, variables: dict[str, Any], part: str) -> str:
        # Template.render would copy the variables and the globals again per call.
        chunks = template.root_render_func(template.new_context(variables, shared=True))
        return render_chunks(chunks, part)

    def _comply(self, text: str | None, html: str | None, link: str | None, who: str) -> None:
        postal = self.ctx.postal_address
        body = "\n".join(p for p in (text, html) if p is not None)
        gaps = rendered_gaps(body, link, postal)
        if gaps and html is not None:  # an escaped address reads right in a mail client
            import html as html_module

            gaps = rendered_gaps("\n".join([text or "", html_module.unescape(html)]), link, postal)
        if gaps:
            what = " and ".join(
                "the unsubscribe link" if g == "unsubscribe" else "the postal address" for g in gaps
            )
            raise NotCompliant(
                f"template {self.template_id}: the message for {who} lacks {what} — marketing "
                "mail is never sent without them; add {{ unsubscribe_url }} and "
                "{{ postal_address }} outside any condition",
                template=self.template_id,
                recipient=who,
            )

    def _assemble(self, head: bytes, text: str | None, html: str | None) -> bytes:
        if not self._multipart:
            kind = b"text/plain" if text is not None else b"text/html"
            body = text if text is not None else html
            assert body is not None
            cte, payload = mime_body(body, None)
            if not payload.endswith(b"\r\n"):
                payload += b"\r\n"
            return b"".join(
                [
                    head,
                    b'Content-Type: %s; charset="utf-8"\r\nContent-Transfer-Encoding: %s\r\n\r\n'
                    % (kind, cte),
                    payload,
                ]
            )
        assert text is not None and html is not None
        text_cte, text_payload = mime_body(text, self._marker)
        html_cte, html_payload = mime_body(html, self._marker)
        return b"".join(
            [
                head,
                self._top,
                self._open,
                b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: ',
                text_cte,
                b"\r\n\r\n",
                text_payload,
                b"\r\n",
                self._open,
                b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: ',
                html_cte,
                b"\r\n\r\n",
                html_payload,
                self._close,
            ]
        )

    def _missing(self, exc: jinja2.UndefinedError, who: str) -> RenderError:
        m = _MISSING.fullmatch(str(exc))
        tid = self.template_id
        if m is None:
            return RenderError(
                f"template {tid}: rendering for {who} failed: {exc}", template=tid, recipient=who
            )
        name = m.group(1)
        if name == "unsubscribe_url":
            message = (
                f"template {tid}: uses {{{{ unsubscribe_url }}}} but campaign "
                f"{self.ctx.campaign_id} is transactional, so there is no unsubscribe link — "
                "remove it from the template or set kind: marketing"
            )
        else:
            message = (
                f"template {tid}: field {name!r} is missing (or its cell is empty) for {who} — "
                f"add a {name} column to the list, fill it in, or write "
                f"{{{{ {name} | default('…') }}}}"
            )
        return RenderError(message, template=tid, recipient=who, field=name)
