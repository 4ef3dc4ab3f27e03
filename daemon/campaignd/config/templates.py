"""Template checks (SPEC §3 "templates.d"): what makes a template unusable as a whole, found at
load time so it is one config error instead of a failure per recipient. Also the Jinja2
environments and the template header lines, which rendering reuses as they are.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Final

import jinja2
import jinja2.meta
from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import SandboxedEnvironment

from ..errors import TemplateError
from .model import Template

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


TEXT_ENV: Final = _environment(autoescape=False)
HTML_ENV: Final = _environment(autoescape=True)
_JINJA_GLOBALS: Final = frozenset(TEXT_ENV.globals)


def env_for(part: str) -> SandboxedEnvironment:
    return HTML_ENV if part == "html" else TEXT_ENV


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
            ast = env_for(part).parse(legacy_to_jinja(source))
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
        template_headers(template_id, t)
    except HeaderProblem as exc:
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
            ast = env_for(part).parse(legacy_to_jinja(source))
        except jinja2.TemplateSyntaxError:
            continue
        names |= jinja2.meta.find_undeclared_variables(ast)
    return frozenset(names - BUILTIN_VARIABLES - _JINJA_GLOBALS)


# Everything that could end or break a header line, or that terminals and MUAs treat as one.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


# Beyond what the model already reserves: more recipients (a Cc would leak the list to every
# reply-all), MIME structure, and headers that only the relay or the signer may write.
_NOT_TEMPLATE_HEADERS: Final = frozenset(
    {"cc", "bcc", "return-path", "received", "dkim-signature", "arc-seal", "sender"}
)


class HeaderProblem(TemplateError):
    def __init__(self, message: str, part: str) -> None:
        super().__init__(message)
        self.part = part


def template_headers(template_id: str, t: Template, sender: str | None = None) -> tuple[str, str]:
    """(From line, Reply-To + custom header lines), encoded and folded by the stdlib once.

    Config values, not recipient data, so the stdlib is affordable here; it refuses CR/LF.
    """

    def one(msg: EmailMessage, name: str, value: str, part: str, address: bool) -> None:
        where = f"template {template_id}" if part != "from" else "the sender (from:)"
        if CONTROL_CHARS.search(value):
            raise HeaderProblem(
                f"{where}: {name} contains a line break or control character — "
                "write it on one line",
                part,
            )
        try:
            msg[name] = value
            header = msg[name]
        except (ValueError, TypeError) as exc:
            raise HeaderProblem(f"{where}: {name} {value!r} is not usable: {exc}", part) from exc
        addresses = getattr(header, "addresses", None)
        if address and (not addresses or not all(a.username and a.domain for a in addresses)):
            raise HeaderProblem(
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
            raise HeaderProblem(
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
