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
import hashlib
import html as htmllib
import re
import secrets
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any, Final

import idna
import jinja2
import jinja2.meta
from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import SandboxedEnvironment

from .config.model import Template
from .errors import RenderError, TemplateError

__all__ = [
    "BUILTIN_VARIABLES",
    "MAX_PART_BYTES",
    "PreparedTemplate",
    "RenderContext",
    "RenderedMessage",
    "TemplateProblem",
    "Tracking",
    "check_template",
    "choose_template",
    "legacy_to_jinja",
    "make_message_id",
    "template_fields",
    "track_html",
]

MAX_PART_BYTES: Final = 1 << 20
"""Largest subject / text / html source accepted, in UTF-8 bytes."""

BUILTIN_VARIABLES: Final = frozenset(
    {
        "email",
        "receiver_email",
        "sender",
        "send_time",
        "campaign",
        "step",
        "unsubscribe_url",
        "postal_address",
    }
)
"""Variables campaignd sets; they win over recipient columns of the same name."""

PARTS: Final = ("subject", "text", "html")

# ---------------------------------------------------------------- templates


_LEGACY = re.compile(r"\{\$\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")


def legacy_to_jinja(source: str) -> str:
    """``{$name}`` (an older mail-merge syntax) → ``{{ name }}``; line numbers are kept."""
    if "{$" not in source:
        return source
    return _LEGACY.sub(r"{{ \1 }}", source)


def _environment(*, autoescape: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=True,  # a text body ending in a newline keeps it
        auto_reload=False,
    )


_TEXT_ENV: Final = _environment(autoescape=False)
_HTML_ENV: Final = _environment(autoescape=True)
_JINJA_GLOBALS: Final = frozenset(_TEXT_ENV.globals)


def _env_for(part: str) -> SandboxedEnvironment:
    return _HTML_ENV if part == "html" else _TEXT_ENV


def _sources(t: Template) -> Iterator[tuple[str, str]]:
    for part in PARTS:
        source = getattr(t, part)
        if source:
            yield part, source


@dataclass(frozen=True)
class TemplateProblem:
    part: str
    """``subject``, ``text``, ``html``, ``reply_to`` or ``headers``."""
    line: int | None
    """1-based line inside that part, when the problem has one."""
    message: str


# Filters whose string arguments name attributes; a leading underscore there reaches internals.
_ATTRIBUTE_FILTERS: Final = frozenset(
    {"attr", "map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max"}
)


def _escapes(ast: nodes.Template) -> Iterator[tuple[int, str]]:
    """(line, what) for every static attempt to reach Python internals.

    The sandbox refuses these at render time anyway; finding them at validate time turns a
    per-recipient failure into one config error before anything is sent.
    """
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            yield node.lineno, f".{node.attr}"
        elif isinstance(node, nodes.Getitem):
            key = node.arg.value if isinstance(node.arg, nodes.Const) else None
            if isinstance(key, str) and key.startswith("_"):
                yield node.lineno, f"[{key!r}]"
        elif isinstance(node, nodes.Filter) and node.name in _ATTRIBUTE_FILTERS:
            args = [*node.args, *(kw.value for kw in node.kwargs)]
            for arg in args:
                if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                    if arg.value.startswith("_"):
                        yield node.lineno, f"|{node.name}({arg.value!r})"
                elif node.name == "attr":
                    yield node.lineno, "|attr() with a computed name"


def check_template(template_id: str, t: Template) -> list[TemplateProblem]:
    """Every problem that makes the template unusable as a whole (for ``campaignctl validate``)."""
    problems: list[TemplateProblem] = []
    for part, source in _sources(t):
        size = len(source.encode("utf-8", "surrogatepass"))
        if size > MAX_PART_BYTES:
            problems.append(
                TemplateProblem(
                    part,
                    None,
                    f"{part} is {size / (1 << 20):.1f} MiB — templates are capped at 1 MiB; "
                    "link large assets instead",
                )
            )
            continue
        try:
            ast = _env_for(part).parse(legacy_to_jinja(source))
        except jinja2.TemplateSyntaxError as exc:
            problems.append(
                TemplateProblem(
                    part,
                    exc.lineno,
                    f"{part}: template syntax error: {exc.message} — check the {{{{ }}}} and "
                    "{% %} pairs around this line",
                )
            )
            continue
        for line, what in _escapes(ast):
            problems.append(
                TemplateProblem(
                    part,
                    line,
                    f"{part}: {what} reaches Python internals, which the sandbox forbids — "
                    "use only the recipient's fields and the built-in variables",
                )
            )
    try:
        _template_headers(template_id, t)
    except _HeaderProblem as exc:
        problems.append(TemplateProblem(exc.part, None, str(exc)))
    return problems


def template_fields(t: Template) -> frozenset[str]:
    """Recipient-row fields the template refers to (built-ins and Jinja globals excluded).

    Fields used only with ``| default(…)`` are included: the plan reports them as missing, and
    the operator decides. Parts that do not parse contribute nothing (``check_template`` says why).
    """
    names: set[str] = set()
    for part, source in _sources(t):
        try:
            ast = _env_for(part).parse(legacy_to_jinja(source))
        except jinja2.TemplateSyntaxError:
            continue
        names |= jinja2.meta.find_undeclared_variables(ast)
    return frozenset(names - BUILTIN_VARIABLES - _JINJA_GLOBALS)


def choose_template(campaign_id: str, recipient_key: str, templates: Sequence[str]) -> str:
    """The A/B variant for a recipient: a stable hash, so a restart never reshuffles anyone."""
    if not templates:
        raise ValueError(f"campaign {campaign_id!r}: a step without templates")
    if len(templates) == 1:
        return templates[0]
    digest = hashlib.blake2b(
        f"{campaign_id}\x00{recipient_key}".encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return templates[int.from_bytes(digest, "big") % len(templates)]


def make_message_id(domain: str) -> str:
    """A fresh ``<random@domain>``; 128 random bits, so unique without coordination."""
    domain = _header_domain(domain, fallback=_NO_DOMAIN)
    if not _DOMAIN.fullmatch(domain):
        domain = _NO_DOMAIN
    return f"<{secrets.token_hex(16)}@{domain}>"


# ---------------------------------------------------------------- header encoding


# Everything that could end or break a header line, or that terminals and MUAs treat as one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*(?: [A-Za-z0-9][A-Za-z0-9'-]*)*")
_ADDRESS = re.compile(r'([^\x00-\x20\x7f<>()\[\]\\,;:"@]+)@([^\x00-\x20\x7f<>()\[\]\\,;:"@]+)')
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f<>\"]|[^\x00-\x7f]")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_NO_DOMAIN = "campaignd.invalid"
_WORD_BYTES = 39  # 39 bytes → 52 base64 chars → a 64-char encoded word, one per folded line
_MAX_NAME_BYTES = 300  # a longer display name is a data error; it is cut, not refused
_FOLD_AT = 78


def _one_line(value: str) -> str:
    """Control characters → one space each run; ends trimmed (the parser drops them anyway)."""
    return _CONTROL.sub(" ", value).strip()


def _utf8_cut(raw: bytes, end: int) -> int:
    """The largest index ≤ ``end`` that does not split a UTF-8 sequence."""
    if end >= len(raw):
        return len(raw)
    while 0x80 <= raw[end] < 0xC0:
        end -= 1
    return end


def _encoded_words(value: str) -> str:
    """RFC 2047 ``B`` words, each a whole number of characters, folded one per line."""
    raw = value.encode("utf-8")
    words = []
    start = 0
    while start < len(raw):
        end = _utf8_cut(raw, start + _WORD_BYTES)
        words.append(
            "=?utf-8?b?" + binascii.b2a_base64(raw[start:end], newline=False).decode() + "?="
        )
        start = end
    return "\r\n ".join(words)


def _fold_plain(value: str, used: int) -> str | None:
    """Fold printable ASCII at single spaces; None if that cannot be done cleanly."""
    if used + len(value) <= _FOLD_AT:
        return value
    if "  " in value:
        return None  # a fold there could leave a whitespace-only line
    lines: list[str] = []
    current = ""
    width = _FOLD_AT - used
    for word in value.split(" "):
        if len(word) > 900:
            return None
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current, width = word, _FOLD_AT - 1
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\r\n ".join(lines)


def _unstructured(value: str, used: int) -> str:
    """A header value for Subject-like fields; ``value`` is already one line."""
    if value.isascii() and "=?" not in value:
        folded = _fold_plain(value, used)
        if folded is not None:
            return folded
    return _encoded_words(value)


def _display_name(name: str) -> str:
    """The phrase of ``Name <addr>`` for a one-line, whitespace-collapsed name."""
    if _PLAIN_NAME.fullmatch(name) and len(name) < 60:
        return name
    if name.isascii() and "=?" not in name and len(name) < 60:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    # Encoded words also for ASCII lookalikes of them: the stdlib decodes =?…?= even inside
    # quotes, so quoting would not keep the name as written. One word, even past RFC 2047's 75
    # characters: in a phrase the stdlib (and other lenient parsers) turn the folding space
    # between two encoded words into a space in the name, while every decoder we know accepts
    # a long word. ``_MAX_NAME_BYTES`` keeps the line far below 998.
    raw = name.encode("utf-8")
    if len(raw) > _MAX_NAME_BYTES:
        raw = raw[: _utf8_cut(raw, _MAX_NAME_BYTES)]
    return "=?utf-8?b?" + binascii.b2a_base64(raw, newline=False).decode() + "?="


@lru_cache(maxsize=4096)
def _header_domain(domain: str, fallback: str | None = None) -> str:
    """A domain as it may appear in a header: A-labels for IDN."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        if fallback is not None:
            return fallback
        raise


def _header_address(address: str) -> str:
    """``local@domain`` for To; an IDN domain becomes A-labels.

    A non-ASCII local part stays UTF-8 (RFC 6532): there is no ASCII form of it, and the relay
    must offer SMTPUTF8 to take the message at all.
    """
    m = _ADDRESS.fullmatch(address)
    if m is None or not (address.isascii() or address.isprintable()):
        raise ValueError(address)
    local, domain = m.groups()
    if domain.isascii():
        return address
    try:
        return f"{local}@{_header_domain(domain)}"
    except idna.IDNAError as exc:
        raise ValueError(address) from exc


# Beyond what the model already reserves: more recipients (a Cc would leak the list to every
# reply-all), MIME structure, and headers that only the relay or the signer may write.
_NOT_TEMPLATE_HEADERS: Final = frozenset(
    {"cc", "bcc", "return-path", "received", "dkim-signature", "arc-seal", "sender"}
)


class _HeaderProblem(TemplateError):
    def __init__(self, message: str, part: str) -> None:
        super().__init__(message)
        self.part = part


def _template_headers(template_id: str, t: Template, sender: str | None = None) -> tuple[str, str]:
    """(From line, Reply-To + custom header lines), encoded and folded by the stdlib once.

    Config values, not recipient data, so the stdlib is affordable here; it refuses CR/LF.
    """

    def one(msg: EmailMessage, name: str, value: str, part: str, address: bool) -> None:
        where = f"template {template_id}" if part != "from" else "the sender (from:)"
        if _CONTROL.search(value):
            raise _HeaderProblem(
                f"{where}: {name} contains a line break or control character — "
                "write it on one line",
                part,
            )
        try:
            msg[name] = value
            header = msg[name]
        except (ValueError, TypeError) as exc:
            raise _HeaderProblem(f"{where}: {name} {value!r} is not usable: {exc}", part) from exc
        addresses = getattr(header, "addresses", None)
        if address and (not addresses or not all(a.username and a.domain for a in addresses)):
            raise _HeaderProblem(
                f"{where}: {name} {value!r} is not an address like "
                '"Acme Sales <sales@acme.example>"',
                part,
            )

    head = EmailMessage(policy=email.policy.SMTP)
    if sender is not None:
        one(head, "From", sender, "from", True)
    rest = EmailMessage(policy=email.policy.SMTP)
    if t.reply_to:
        one(rest, "Reply-To", t.reply_to, "reply_to", True)
    for name, value in t.headers.items():
        lower = name.lower()
        if lower in _NOT_TEMPLATE_HEADERS or lower.startswith(("content-", "resent-")):
            raise _HeaderProblem(
                f"template {template_id}: header {name!r} cannot be set by a template — "
                "recipients come from the audience and MIME and trace headers from campaignd "
                "and the relay; remove it from headers",
                "headers",
            )
        one(rest, name, value, "headers", False)

    def lines(msg: EmailMessage) -> str:
        return msg.as_string()[: -len("\r\n")] if len(msg) else ""

    return lines(head), lines(rest)


# ---------------------------------------------------------------- bodies


def _body(text: str, boundary: bytes | None) -> tuple[bytes, bytes]:
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
class Tracking:
    """Open / click tracking of one message's HTML part (SPEC §3 ``track``).

    ``click`` maps a link's target to its signed redirect, or None to leave that link as it is
    (the signer refuses it, or it is too long for a token); ``pixel_url`` is the open pixel.
    ``keep`` lists targets never rewritten — the unsubscribe link must stay a direct link.
    """

    click: Callable[[str], str | None] | None = None
    pixel_url: str | None = None
    keep: Collection[str] = ()


class _LinkFinder(HTMLParser):
    """Start tags of links (``<a href>``, ``<area href>``) with their line and column."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "area") and any(name == "href" for name, _ in attrs):
            text = self.get_starttag_text()
            if text:
                line, col = self.getpos()
                self.found.append((line, col, text))


# One attribute of a start tag: name, then an optional value (quoted or bare). Walking the tag
# attribute by attribute means an "href=" inside another attribute's quoted value is never taken.
_TAG_NAME = re.compile(r"<[^\s/>]+")
_ATTRIBUTE = re.compile(
    r"""[\s/]*(?P<name>[^\s/>"'=][^\s/>=]*)(?:\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^\s>]+))?"""
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _retarget(tag: str, click: Callable[[str], str | None], keep: Collection[str]) -> str:
    """``tag`` with its href pointed at the click redirect, when the target is trackable."""
    m = _TAG_NAME.match(tag)
    pos = m.end() if m else len(tag)
    while (a := _ATTRIBUTE.match(tag, pos)) is not None and a.end() > pos:
        pos = a.end()
        if a.group("name").lower() != "href" or a.group("value") is None:
            continue
        raw = a.group("value")
        if raw[:1] in "\"'":
            raw = raw[1:-1]
        target = htmllib.unescape(raw).strip()
        if target in keep:
            return tag
        tracked = click(target)
        if tracked is None:
            return tag
        start, end = a.span("value")
        return tag[:start] + '"' + htmllib.escape(tracked, quote=True) + '"' + tag[end:]
    return tag


def track_html(html: str, tracking: Tracking) -> str:
    """The HTML part with its web links sent through click redirects and the open pixel added.

    Only start tags the HTML parser sees are touched (never text, comments or scripts); each
    is rewritten in place, so the rest of the markup stays byte for byte as rendered.
    """
    if tracking.click is not None and "<" in html:
        finder = _LinkFinder()
        finder.feed(html)
        finder.close()
        if finder.found:
            starts = [0]
            starts += [i + 1 for i, ch in enumerate(html) if ch == "\n"]
            pieces: list[str] = []
            done = 0
            for line, col, text in finder.found:
                at = starts[line - 1] + col
                if at < done or html[at : at + len(text)] != text:
                    continue  # the parser's view and the text disagree: leave it alone
                pieces += [html[done:at], _retarget(text, tracking.click, tracking.keep)]
                done = at + len(text)
            html = "".join(pieces) + html[done:]
    if tracking.pixel_url is not None:
        pixel = (
            f'<img src="{htmllib.escape(tracking.pixel_url, quote=True)}" width="1" height="1" '
            'alt="" style="border:0;width:1px;height:1px">'
        )
        ends = list(_BODY_END.finditer(html))
        if ends:
            at = ends[-1].start()
            html = html[:at] + pixel + html[at:]
        else:
            html += pixel
    return html


# ---------------------------------------------------------------- messages


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
        from_line, rest_lines = _template_headers(template_id, template, ctx.sender)
        self._from = from_line
        self._rest = rest_lines + "MIME-Version: 1.0\r\n"
        self._subject = _TEXT_ENV.from_string(legacy_to_jinja(template.subject))
        self._text = (
            _TEXT_ENV.from_string(legacy_to_jinja(template.text)) if template.text else None
        )
        self._html = (
            _HTML_ENV.from_string(legacy_to_jinja(template.html)) if template.html else None
        )
        self._globals = dict(_TEXT_ENV.globals)
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
        if unsubscribe_url is not None and _URL_UNSAFE.search(unsubscribe_url):
            raise RenderError(
                f"template {self.template_id}: unsubscribe URL {unsubscribe_url!r} has spaces, "
                "quotes or non-ASCII — check http.public_url",
                template=self.template_id,
                recipient=who,
                field="unsubscribe_url",
            )
        if not _MESSAGE_ID.fullmatch(message_id):
            raise RenderError(
                f"template {self.template_id}: {message_id!r} is not a Message-ID like <id@domain>",
                template=self.template_id,
                recipient=who,
            )
        try:
            address = _header_address(to_address)
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

        try:
            subject = _one_line(self._run(self._subject, variables))
            text = self._run(self._text, variables) if self._text is not None else None
            html = self._run(self._html, variables) if self._html is not None else None
            if html is not None and tracking is not None:
                html = track_html(html, tracking)
        except jinja2.UndefinedError as exc:
            raise self._missing(exc, who) from None
        except Exception as exc:  # the sandbox, a filter given the wrong type, …
            raise RenderError(
                f"template {self.template_id}: rendering for {who} failed: {exc}",
                template=self.template_id,
                recipient=who,
            ) from exc

        name = recipient.get("name")
        # Parsers collapse whitespace in display names, so we do it first: what we log is
        # what the reader's mail client shows.
        name = " ".join(_CONTROL.sub(" ", name).split()) if name else ""
        to = f"{_display_name(name)} <{address}>" if name else address
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
            _unstructured(subject, len("Subject: ")),
            "\r\n",
            self._rest,
        ]
        if unsubscribe_url is not None and self.ctx.marketing:
            headers += [
                "List-Unsubscribe: <",
                unsubscribe_url,
                ">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            ]
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
    def _run(template: jinja2.Template, variables: dict[str, Any]) -> str:
        # Template.render would copy the variables and the globals again per call.
        return "".join(template.root_render_func(template.new_context(variables, shared=True)))

    def _assemble(self, head: bytes, text: str | None, html: str | None) -> bytes:
        if not self._multipart:
            kind = b"text/plain" if text is not None else b"text/html"
            body = text if text is not None else html
            assert body is not None
            cte, payload = _body(body, None)
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
        text_cte, text_payload = _body(text, self._marker)
        html_cte, html_payload = _body(html, self._marker)
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
                f"template {tid}: field {name!r} is missing for {who} — add a {name} column "
                f"to the list or write {{{{ {name} | default('…') }}}}"
            )
        return RenderError(message, template=tid, recipient=who, field=name)
