"""Template checks (SPEC §3 "templates.d"): what makes a template unusable as a whole, found at
load time so it is one config error instead of a failure per recipient. Also the Jinja2
environments and the template header lines, which rendering reuses as they are.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import functools
import html
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Final

import jinja2
import jinja2.meta
from jinja2 import StrictUndefined, nodes
from jinja2.runtime import Context
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


# ---------------------------------------------------------------- the render budget

MAX_RENDER_SECONDS: Final = 2.0
"""CPU time one message's rendering may take before it is cut off (all parts together)."""
MAX_RENDERED_CHARS: Final = 4 << 20
"""Longest rendered part, in characters: far beyond any mail a receiver accepts whole."""
MAX_LOOP_STEPS: Final = 200_000
"""``range()`` iterations one message's rendering may take in all, nested loops included."""
MAX_INT_ARGUMENT: Final = 100_000
"""Largest integer a template may hand a call or a size-making filter (``center``, ``indent``,
``lipsum``, ``ljust``…): beyond it the result is a memory bomb, never a mail."""
MAX_LIPSUM: Final = 20
_SIZE_FILTERS: Final = frozenset({"center", "indent", "slice", "format", "wordwrap", "truncate"})


class RenderBudgetExceeded(TemplateError):
    """A render ran past its time, output or loop budget: that message fails, with this reason."""


class RenderBudget:
    """The limits of one message's rendering; the sandbox's hooks charge it as they run.

    Set per thread by ``budgeted``. ``cancel`` (from another thread) makes the next hook raise:
    a render abandoned after its hard timeout stops at its next loop step or call.
    """

    __slots__ = ("cancelled", "deadline", "seconds", "steps")

    def __init__(self, seconds: float = MAX_RENDER_SECONDS) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.steps = 0
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > MAX_LOOP_STEPS:
            raise RenderBudgetExceeded(
                f"the template loops more than {MAX_LOOP_STEPS:,} times for one message"
            )
        if self.cancelled or (self.steps & 0xFF == 0 and time.monotonic() > self.deadline):
            self.expired()

    def check(self) -> None:
        if self.cancelled or time.monotonic() > self.deadline:
            self.expired()

    def expired(self) -> None:
        raise RenderBudgetExceeded(
            f"rendering one message took longer than {self.seconds:g} s — the template loops "
            "or builds text without bound"
        )


_current = threading.local()


class _Unlimited(RenderBudget):
    """Outside ``budgeted`` (parsing, a test rendering a bare template): limits, no clock."""

    def check(self) -> None:
        return None

    def step(self, n: int = 1) -> None:
        return None


_UNLIMITED: Final = _Unlimited(0.0)


def current_budget() -> RenderBudget:
    budget: RenderBudget | None = getattr(_current, "budget", None)
    return budget if budget is not None else _UNLIMITED


@contextlib.contextmanager
def budgeted(budget: RenderBudget) -> Iterator[RenderBudget]:
    """Charge every hook of the sandbox that runs in this thread to ``budget``."""
    before = getattr(_current, "budget", None)
    _current.budget = budget
    try:
        yield budget
    finally:
        _current.budget = before


def render_chunks(chunks: Iterable[str], part: str) -> str:
    """Join a template's output, cut off when it grows past the size or time budget."""
    budget = current_budget()
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_RENDERED_CHARS:
            raise RenderBudgetExceeded(
                f"the {part} part grows past {MAX_RENDERED_CHARS >> 20} MiB for one message"
            )
        out.append(chunk)
        # An abandoned render stops at its next chunk; the clock is read every 64 chunks
        # (the expressions that produce a chunk charge their own steps and calls).
        if budget.cancelled:
            budget.expired()
        if len(out) & 0x3F == 0:
            budget.check()
    return "".join(out)


def _too_big(value: object) -> bool:
    return type(value) is int and abs(value) > MAX_INT_ARGUMENT


def _bounded_range(*args: int) -> Iterator[int]:
    if any(_too_big(a) for a in args):
        raise RenderBudgetExceeded(f"range() over more than {MAX_INT_ARGUMENT:,} values")
    budget = current_budget()
    for i in range(*args):
        budget.step()
        yield i


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > MAX_LIPSUM or max > 200:
        raise RenderBudgetExceeded(f"lipsum() is capped at {MAX_LIPSUM} paragraphs of 200 words")
    from jinja2.utils import generate_lorem_ipsum

    return generate_lorem_ipsum(n, html, min, max)


def _size_of(value: object) -> int:
    """About how many characters ``value`` becomes in the output, without building it."""
    if isinstance(value, str):
        return len(value)
    try:
        return 3 * len(value)  # type: ignore[arg-type]
    except TypeError:
        return 8


def _bounded_join(func: Callable[..., Any]) -> Callable[..., Any]:
    """``|join`` builds its result in one C call that no hook interrupts: a separator or
    items made big from the data (``range(50000)|join(first_name * 1000)``: 300 MB) are
    measured first and refused."""

    @functools.wraps(func)  # keeps jinja's pass_eval_context mark
    def bounded(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = list(value)  # a bounded range charges its steps here
        size = len(str(d)) * max(len(items) - 1, 0)
        if attribute is None:
            size += sum(_size_of(i) for i in items)
        if size > MAX_RENDERED_CHARS:
            raise RenderBudgetExceeded(f"|join would make {size:,} characters for one message")
        return func(eval_ctx, items, d, attribute)

    return bounded


def _bounded_replace(func: Callable[..., Any]) -> Callable[..., Any]:
    """``|replace`` chained (each one ten times bigger) reaches gigabytes in a few C calls."""

    @functools.wraps(func)
    def bounded(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> Any:
        text, old_, new_ = str(s), str(old), str(new)
        hits = text.count(old_) if old_ else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        size = len(text) + hits * max(len(new_) - len(old_), 0)
        if size > MAX_RENDERED_CHARS:
            raise RenderBudgetExceeded(f"|replace would make {size:,} characters for one message")
        return func(eval_ctx, s, old, new, count)

    return bounded


def _size_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if any(_too_big(a) for a in (*args, *kwargs.values())):
            raise RenderBudgetExceeded(
                f"|{name} given a number over {MAX_INT_ARGUMENT:,}: the result would not fit a mail"
            )
        return func(*args, **kwargs)

    return bounded


class BoundedSandbox(SandboxedEnvironment):
    """The sandbox, plus limits on what a template can make the daemon compute.

    Jinja's sandbox stops templates reaching Python internals but not from spending the
    daemon's CPU and memory: ``range`` loops nest, ``'x' * 10**9`` and ``|center(10**9)`` build
    a gigabyte in one call. Every call, loop step, multiplication and output chunk is charged to
    the thread's ``RenderBudget``; big numbers are refused before the work starts.
    """

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _bounded_range
        self.globals["lipsum"] = _bounded_lipsum
        for name in _SIZE_FILTERS:
            self.filters[name] = _size_filter(name, self.filters[name])
        self.filters["join"] = _bounded_join(self.filters["join"])
        self.filters["replace"] = _bounded_replace(self.filters["replace"])

    def call(
        __self,
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        budget = current_budget()
        budget.step(0)
        budget.check()
        if __obj is not _bounded_range and any(
            _too_big(a) for a in (*args, *(v for k, v in kwargs.items() if not k.startswith("_")))
        ):
            raise RenderBudgetExceeded(
                f"a call given a number over {MAX_INT_ARGUMENT:,}: the result would not fit a mail"
            )
        if (
            getattr(__obj, "__name__", None) in ("format", "format_map")
            and isinstance(getattr(__obj, "__self__", None), str)
            and _WIDE_BRACE.search(__obj.__self__)
        ):
            raise RenderBudgetExceeded("a str.format() width over 100,000 in the template")
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        current_budget().check()
        if operator == "**" and isinstance(right, int) and isinstance(left, int):
            if abs(right) > 64 and abs(left) > 1:
                raise RenderBudgetExceeded("a power with an exponent over 64 in the template")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > MAX_RENDERED_CHARS
                ):
                    raise RenderBudgetExceeded(
                        f"a repetition of {len(seq) * n:,} items in the template"
                    )
        elif operator == "%" and isinstance(left, str):
            values = right if isinstance(right, tuple) else (right,)
            if any(_too_big(v) for v in values) or _WIDE_FORMAT.search(left):
                raise RenderBudgetExceeded("a %-format with a width over 100,000 in the template")
        return super().call_binop(context, operator, left, right)


_WIDE_FORMAT = re.compile(r"%[-+ #0]*\d{6,}")
_WIDE_BRACE = re.compile(r"\{[^{}]*:[^{}]*\d{6,}")


def _environment(*, autoescape: bool) -> SandboxedEnvironment:
    return BoundedSandbox(
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


def _unknown_names(ast: nodes.Template, env: SandboxedEnvironment) -> Iterator[tuple[int, str]]:
    """Filters and tests the sandbox does not have: Jinja compiles them to a runtime error, so
    without this check every message would fail instead of the file."""
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        if isinstance(node, nodes.Filter) and node.name not in env.filters:
            yield node.lineno, f"unknown filter |{node.name}"
        elif isinstance(node, nodes.Test) and node.name not in env.tests:
            yield node.lineno, f"unknown test 'is {node.name}'"


def _const_int(node: nodes.Node) -> int | None:
    """The value of a constant integer expression (``10**10`` included), or None.

    Jinja's own ``as_const`` refuses operators the sandbox intercepts, so fold them here; a
    power too large to compute is reported as just over the limit, which is all callers ask.
    """
    if isinstance(node, nodes.Const):
        return node.value if type(node.value) is int else None
    if isinstance(node, nodes.Neg):
        inner = _const_int(node.node)
        return None if inner is None else -inner
    if isinstance(node, nodes.Pos):
        return _const_int(node.node)
    if isinstance(node, nodes.Mul | nodes.Add | nodes.Sub | nodes.Pow):
        left, right = _const_int(node.left), _const_int(node.right)
        if left is None or right is None:
            return None
        if isinstance(node, nodes.Pow):
            if right < 0:
                return None
            if right > 64 and abs(left) > 1:
                return MAX_INT_ARGUMENT * MAX_INT_ARGUMENT
            return int(left**right)
        if isinstance(node, nodes.Mul):
            return left * right
        return left + right if isinstance(node, nodes.Add) else left - right
    return None


def _bombs(ast: nodes.Template) -> Iterator[tuple[int, str]]:
    """Statically obvious render bombs: what the budget would cut off for every recipient.

    Cheap and partial by design (the budget catches the rest at render time): big constant
    arguments, a constant repetition that is too long, and nested constant loops whose product
    exceeds the loop budget.
    """
    for call in ast.find_all(nodes.Call):
        name = call.node.name if isinstance(call.node, nodes.Name) else None
        big = [v for v in map(_const_int, call.args) if v is not None and _too_big(v)]
        if big:
            yield call.lineno, f"{name or 'a call'}({big[0]:,})"
        elif name == "lipsum" and call.args:
            value = _const_int(call.args[0])
            if value is not None and value > MAX_LIPSUM:
                yield call.lineno, f"lipsum({value:,})"
    for flt in ast.find_all(nodes.Filter):
        if flt.name in _SIZE_FILTERS:
            for arg in flt.args:
                value = _const_int(arg)
                if value is not None and abs(value) > MAX_INT_ARGUMENT:
                    yield flt.lineno, f"|{flt.name}({value:,})"
    for mul in ast.find_all(nodes.Mul):
        for seq, n in ((mul.left, mul.right), (mul.right, mul.left)):
            count = _const_int(n)
            if (
                isinstance(seq, nodes.Const)
                and isinstance(seq.value, str)
                and count is not None
                and len(seq.value) * count > MAX_RENDERED_CHARS
            ):
                yield mul.lineno, f"a repetition of {len(seq.value) * count:,} characters"
    yield from _loop_products(ast, 1)


def _loop_steps(node: nodes.For) -> int | None:
    it = node.iter
    if isinstance(it, nodes.Call) and isinstance(it.node, nodes.Name) and it.node.name == "range":
        bounds = [_const_int(a) for a in it.args]
        if bounds and all(b is not None for b in bounds):
            return (
                len(range(*[b for b in bounds if b is not None][:3])) if len(bounds) <= 3 else None
            )
    return None


def _loop_products(node: nodes.Node, outer: int) -> Iterator[tuple[int, str]]:
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.For):
            steps = _loop_steps(child)
            total = outer * steps if steps is not None else outer
            if steps is not None and total > MAX_LOOP_STEPS:
                yield child.lineno, f"nested loops of {total:,} steps"
                continue
            yield from _loop_products(child, total)
        else:
            yield from _loop_products(child, outer)


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
        env = env_for(part)
        for line, what in _unknown_names(ast, env):
            problems.append(
                TemplateProblem(
                    part,
                    line,
                    f"{part}: {what} — the sandbox has no such name; check the spelling "
                    "(filters and tests: https://jinja.palletsprojects.com/templates/#list-of-"
                    "builtin-filters)",
                )
            )
        for line, what in _bombs(ast):
            problems.append(
                TemplateProblem(
                    part,
                    line,
                    f"{part}: {what} — rendering would exceed the per-message budget "
                    f"({MAX_LOOP_STEPS:,} loop steps, {MAX_RENDERED_CHARS >> 20} MiB, "
                    f"{MAX_RENDER_SECONDS:g} s)",
                )
            )
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
            names |= jinja2.meta.find_undeclared_variables(ast)
        except jinja2.TemplateError:  # syntax, unknown filter: check_template says why
            continue
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


# ---------------------------------------------------------------- marketing compliance
# One definition for `validate` (config/check.py at load, ctl/deliverability.py on a sample)
# and for the daemon (the same load check, and render/message.py on every marketing message).


def missing_unsubscribe(t: Template) -> list[str]:
    """The body parts (``text``, ``html``) that never use ``unsubscribe_url``."""
    missing = []
    for part in ("text", "html"):
        source = getattr(t, part)
        if source is not None and "unsubscribe_url" not in _referenced(part, source):
            missing.append(part)
    return missing


def shows_postal_address(t: Template, postal_address: str) -> bool:
    """Does some body part use ``postal_address`` or spell the address out?"""
    for part in ("text", "html"):
        source = getattr(t, part)
        if source is None:
            continue
        if "postal_address" in _referenced(part, source):
            return True
        readable = html.unescape(source) if part == "html" else source
        if contains_address(readable, postal_address):
            return True
    return False


def contains_address(body: str, postal_address: str) -> bool:
    """The address appears in ``body``, line breaks and runs of spaces not counting."""
    return " ".join(postal_address.split()) in " ".join(body.split())


def rendered_gaps(body: str, unsubscribe_link: str | None, postal_address: str | None) -> list[str]:
    """What a rendered marketing body lacks: ``unsubscribe`` (the link), ``postal-address``.

    ``body`` is the readable text of every part (HTML unescaped), as a recipient sees it.
    """
    gaps = []
    if unsubscribe_link and unsubscribe_link not in body:
        gaps.append("unsubscribe")
    if postal_address and not contains_address(body, postal_address):
        gaps.append("postal-address")
    return gaps


def _referenced(part: str, source: str) -> frozenset[str]:
    try:
        ast = env_for(part).parse(legacy_to_jinja(source))
    except jinja2.TemplateSyntaxError:
        return frozenset()
    try:
        return frozenset(jinja2.meta.find_undeclared_variables(ast))
    except jinja2.TemplateError:
        # An unknown filter fails the compile this needs (check_template reports it); the
        # names read anywhere are close enough not to add a misleading "no unsubscribe link".
        return frozenset(n.name for n in ast.find_all(nodes.Name) if n.ctx == "load")
