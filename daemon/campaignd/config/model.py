"""Frozen pydantic models of the four file kinds (SPEC §3).

The models hold exactly what a file says, validated; cross-file rules live in ``check.py`` and
file reading in ``load.py``. ``extra="forbid"`` everywhere so a typo is an error, not a no-op.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .secrets import SecretKind, SecretRef
from .values import Duration, HoursT, Percent, Rates, TimeZoneName

DEFAULT_TOKEN_ENV = "CAMPAIGND_API_TOKEN"  # noqa: S105 - a variable name, not a secret
DEFAULT_SECRET_ENV = "CAMPAIGND_SECRET"  # noqa: S105
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# RFC 2919 list-id: a dot-atom with at least one dot (list-label "." namespace), ≤ 255 chars.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
LIST_ID_RE = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})+")

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Condition = Literal["opened", "clicked", "replied", "unsubscribed", "bounced"]


def _one_or_many(value: Any) -> Any:
    """Let a single string stand where a list is expected (``services: smtp-a``)."""
    return [value] if isinstance(value, str) else value


StrList = Annotated[
    tuple[str, ...],
    BeforeValidator(_one_or_many),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _secret_fields(model: BaseModel, name: str) -> SecretRef | None:
    """The one of ``name``, ``name_env``, ``name_file``, ``name_credential`` that is set."""
    found = [
        (kind, getattr(model, f"{name}{suffix}"))
        for kind, suffix in (
            ("literal", ""),
            ("env", "_env"),
            ("file", "_file"),
            ("credential", "_credential"),
        )
        if getattr(model, f"{name}{suffix}") is not None
    ]
    if not found:
        return None
    if len(found) > 1:
        keys = ", ".join(f"{name}{'' if k == 'literal' else '_' + k}" for k, _ in found)
        raise ValueError(f"{keys} are all set — give the secret {name!r} exactly one way")
    kind, value = found[0]
    return SecretRef(name=name, kind=cast(SecretKind, kind), value=str(value))


class _SecretCheck(Frozen):
    """Models with secret fields list them here so a double definition is an error."""

    _secret_names: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _one_way_per_secret(self) -> _SecretCheck:
        for name in self._secret_names:
            _secret_fields(self, name)
        return self

    def secret_ref(self, name: str) -> SecretRef | None:
        return _secret_fields(self, name)

    def secrets(self) -> list[SecretRef]:
        return [ref for n in self._secret_names if (ref := _secret_fields(self, n)) is not None]


# ---------------------------------------------------------------- campaignd.yaml


class HttpSettings(_SecretCheck):
    _secret_names: ClassVar[tuple[str, ...]] = ("token",)

    listen: str = Field("127.0.0.1:8470", description="host:port the API and status page bind")
    public_url: str | None = Field(
        None,
        description="base URL of unsubscribe and tracking links, e.g. https://mail.acme.example",
    )
    token: str | None = Field(None, description="API bearer token (literal: prefer token_env)")
    token_env: str | None = DEFAULT_TOKEN_ENV
    token_file: str | None = None
    token_credential: str | None = None
    client_max_size: int = Field(1 << 20, gt=0, description="largest request body accepted, bytes")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{v!r} is not host:port — write it like 127.0.0.1:8470")
        return v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"{v!r} must be an http(s) URL like https://mail.acme.example")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _one_token(self) -> HttpSettings:
        # token_env has a default; an explicit other way of giving the token wins over it.
        others = [self.token, self.token_file, self.token_credential]
        if any(o is not None for o in others) and self.token_env == DEFAULT_TOKEN_ENV:
            object.__setattr__(self, "token_env", None)
        return self


class MaildirSource(Frozen):
    maildir: str = Field(description="a Maildir folder; new/ is read, handled mail moves to cur/")


class ImapSource(_SecretCheck):
    _secret_names: ClassVar[tuple[str, ...]] = ("password",)

    host: str
    port: int = Field(993, gt=0, lt=65536)
    security: Literal["tls", "starttls", "none"] = "tls"
    tls_ca_file: str | None = None
    username: str
    password: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    password_credential: str | None = None
    folder: str = "INBOX"
    done_folder: str = "campaignd-done"
    poll: Duration = timedelta(minutes=1)


class ImapFeedback(Frozen):
    imap: ImapSource


class SesHook(Frozen):
    topic_arn: str | None = None


class SendgridHook(_SecretCheck):
    _secret_names: ClassVar[tuple[str, ...]] = ("public_key",)
    public_key: str | None = None
    public_key_env: str | None = None
    public_key_file: str | None = None
    public_key_credential: str | None = None


class MailgunHook(_SecretCheck):
    _secret_names: ClassVar[tuple[str, ...]] = ("signing_key",)
    signing_key: str | None = None
    signing_key_env: str | None = None
    signing_key_file: str | None = None
    signing_key_credential: str | None = None


class PostmarkHook(_SecretCheck):
    _secret_names: ClassVar[tuple[str, ...]] = ("basic_auth",)
    basic_auth: str | None = None
    basic_auth_env: str | None = None
    basic_auth_file: str | None = None
    basic_auth_credential: str | None = None


class Webhooks(Frozen):
    ses: SesHook | None = None
    sendgrid: SendgridHook | None = None
    mailgun: MailgunHook | None = None
    postmark: PostmarkHook | None = None


class Settings(_SecretCheck):
    """``campaignd.yaml``: every key has a default, so the file itself is optional."""

    _secret_names: ClassVar[tuple[str, ...]] = ("secret",)

    database: str = Field(
        "sqlite:///state/campaignd.db",
        description="sqlite:///path (relative to the config root) or postgresql+asyncpg://…",
    )
    http: HttpSettings = HttpSettings()
    secret: str | None = Field(None, description="HMAC key for link tokens (prefer secret_env)")
    secret_env: str | None = DEFAULT_SECRET_ENV
    secret_file: str | None = None
    secret_credential: str | None = None
    timezone: TimeZoneName = "UTC"
    feedback: tuple[MaildirSource | ImapFeedback, ...] = ()
    webhooks: Webhooks = Webhooks()
    drain_timeout: Duration = Field(
        timedelta(seconds=30), description="how long SIGTERM waits for in-flight SMTP transactions"
    )

    @model_validator(mode="after")
    def _one_secret(self) -> Settings:
        others = [self.secret, self.secret_file, self.secret_credential]
        if any(o is not None for o in others) and self.secret_env == DEFAULT_SECRET_ENV:
            object.__setattr__(self, "secret_env", None)
        return self

    @field_validator("database")
    @classmethod
    def _database(cls, v: str) -> str:
        if not re.match(r"^(sqlite(\+aiosqlite)?|postgresql(\+asyncpg)?)://", v):
            raise ValueError(
                f"{v!r} is not a supported database URL — use sqlite:///state/campaignd.db "
                "or postgresql+asyncpg://user@host/db"
            )
        return v


# ---------------------------------------------------------------- services.d


class Warmup(Frozen):
    start: int = Field(gt=0, description="messages allowed on day 1")
    growth: float = Field(1.5, gt=1.0, le=10.0, description="multiplied each day")
    until: int = Field(gt=0, description="the cap stops growing here")
    since: date | None = Field(None, description="day 1; default: the first day the service sent")

    @model_validator(mode="after")
    def _order(self) -> Warmup:
        if self.until < self.start:
            raise ValueError(f"until ({self.until}) is below start ({self.start}) — raise until")
        return self


class DomainShaping(Frozen):
    rate: Rates = ()
    max_connections: int | None = Field(None, gt=0)


class RetryPolicy(Frozen):
    backoff: Duration = timedelta(minutes=5)
    max_backoff: Duration = timedelta(hours=4)
    give_up_after: Duration = timedelta(days=2)

    @model_validator(mode="after")
    def _order(self) -> RetryPolicy:
        if self.backoff <= timedelta(0):
            raise ValueError("backoff must be longer than 0s")
        if self.max_backoff < self.backoff:
            raise ValueError("max_backoff is shorter than backoff — raise max_backoff")
        return self


class Dkim(_SecretCheck):
    _secret_names: ClassVar[tuple[str, ...]] = ("private_key",)

    domain: str
    selector: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    private_key: str | None = None
    private_key_env: str | None = None
    private_key_file: str | None = None
    private_key_credential: str | None = None

    @model_validator(mode="after")
    def _has_key(self) -> Dkim:
        if self.secret_ref("private_key") is None:
            raise ValueError(
                "dkim needs its key — add private_key_file, private_key_credential "
                "or private_key_env"
            )
        return self


class Service(_SecretCheck):
    _secret_names: ClassVar[tuple[str, ...]] = ("password",)

    from_: str = Field(alias="from", description='sender, e.g. "Acme <outreach@acme.example>"')
    host: str = "127.0.0.1"
    port: int | None = Field(None, gt=0, lt=65536, description="default 587/465/25 by security")
    security: Literal["starttls", "tls", "none"] = "starttls"
    tls_ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    password_credential: str | None = None
    max_connections: int = Field(4, gt=0, le=1000)
    messages_per_connection: int = Field(100, gt=0)
    timeout: Duration = timedelta(seconds=30)
    rate: Rates = ()
    warmup: Warmup | None = None
    domains: dict[str, DomainShaping] = {}
    retry: RetryPolicy = RetryPolicy()
    transport: Literal["smtp", "outbox"] = "smtp"
    outbox: str | None = Field(None, description="directory for .eml files with transport: outbox")
    dkim: Dkim | None = None
    return_path: str | None = Field(
        None, description='VERP envelope sender like "bounces+{token}@acme.example"'
    )

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"starttls": 587, "tls": 465, "none": 25}[self.security]

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: dict[str, DomainShaping]) -> dict[str, DomainShaping]:
        return {k.lower(): s for k, s in v.items()}

    @field_validator("return_path")
    @classmethod
    def _return_path(cls, v: str | None) -> str | None:
        if v is not None and ("@" not in v or v.count("{token}") > 1):
            raise ValueError(f'{v!r} is not an address like "bounces+{{token}}@acme.example"')
        return v

    @model_validator(mode="after")
    def _outbox(self) -> Service:
        if self.transport == "outbox" and not self.outbox:
            raise ValueError("transport: outbox needs outbox: DIR — the folder for .eml files")
        if self.username and self.secret_ref("password") is None:
            raise ValueError(
                "username is set but no password — add password_env, password_file "
                "or password_credential"
            )
        return self


# ---------------------------------------------------------------- templates.d


class Template(Frozen):
    subject: str
    text: str | None = None
    text_file: str | None = None
    html: str | None = None
    html_file: str | None = None
    reply_to: str | None = None
    headers: dict[str, str] = {}

    @model_validator(mode="after")
    def _bodies(self) -> Template:
        if self.text is not None and self.text_file is not None:
            raise ValueError("text and text_file are both set — keep one")
        if self.html is not None and self.html_file is not None:
            raise ValueError("html and html_file are both set — keep one")
        if not any((self.text, self.text_file, self.html, self.html_file)):
            raise ValueError(
                "the template has no body — add text:, html:, text_file: or html_file:"
            )
        return self

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        reserved = {
            "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
            "content-transfer-encoding", "list-unsubscribe", "list-unsubscribe-post", "reply-to",
            "list-id",
        }  # fmt: skip
        for name in v:
            if not re.match(r"^[!-9;-~]+$", name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() == "list-id":
                raise ValueError(
                    "header 'List-Id' is set by campaignd from the campaign — remove it from "
                    "headers and set list_id: in the campaign instead"
                )
            if name.lower() in reserved:
                raise ValueError(
                    f"header {name!r} is set by campaignd — remove it from headers "
                    "(use subject:, reply_to: or the service's from:)"
                )
        return v


# ---------------------------------------------------------------- campaigns.d


class Filters(Frozen):
    include_domains: StrList = ()
    exclude_domains: StrList = ()
    match: dict[str, StrList] = {}
    exclude_contacted_within: Duration | None = None
    exclude_campaigns: StrList = ()

    @field_validator("include_domains", "exclude_domains")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.lower().lstrip("@") for d in v)


class Window(Frozen):
    days: tuple[Weekday, ...] = WEEKDAYS
    hours: HoursT | None = None
    timezone: str = Field("UTC", description='IANA name, or "recipient"')
    fallback_timezone: TimeZoneName = "UTC"
    except_dates: tuple[date, ...] = ()

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, v: Any) -> Any:
        items = _one_or_many(v)
        return [d.lower()[:3] if isinstance(d, str) else d for d in items] if items else items

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from .values import check_timezone

        return v if v == "recipient" else check_timezone(v)


class Track(Frozen):
    opens: bool = False
    clicks: bool = False


class Guard(Frozen):
    max_bounce_rate: Percent = 0.05
    max_complaint_rate: Percent = 0.003
    min_sample: int = Field(200, gt=0)


class Schedule(Frozen):
    cron: str = Field(description='crontab line, e.g. "0 9 * * tue"')

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(f"{v!r} is not a cron line — write five fields like '0 9 * * tue'")
        return v


class Step(Frozen):
    template: StrList = Field(description="one template, or several rotated across recipients")
    after: Duration | None = Field(
        None, description="after the previous step reached this recipient"
    )
    unless: tuple[Condition, ...] = ()

    @field_validator("unless", mode="before")
    @classmethod
    def _unless(cls, v: Any) -> Any:
        return _one_or_many(v)


class Campaign(Frozen):
    name: str | None = None
    kind: Literal["marketing", "transactional"] = "marketing"
    postal_address: str | None = None
    audience: StrList = Field(description="CSV files with an email column, or text files")
    filters: Filters = Filters()
    services: StrList
    from_: str | None = Field(None, alias="from", description="overrides the service's from:")
    list_id: str | None = Field(
        None,
        description="RFC 2919 List-Id of marketing mail, e.g. q4.acme.example (default: "
        "<campaign id>.<the sender's domain>)",
    )
    start: datetime | None = None
    window: Window | None = None
    track: Track = Track()
    guard: Guard | None = None
    rate: Rates = ()
    enroll: Literal["once", "continuous"] = "once"
    paused: bool = False
    template: StrList | None = Field(None, description="shorthand for a one-step campaign")
    steps: tuple[Step, ...] = ()
    schedule: Schedule | None = None

    @field_validator("audience", "services")
    @classmethod
    def _not_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("the list is empty — name at least one")
        return v

    @field_validator("list_id")
    @classmethod
    def _list_id(cls, v: str | None) -> str | None:
        if v is None:
            return None
        text = v.strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1].strip()
        if len(text) > 255 or not LIST_ID_RE.fullmatch(text):
            raise ValueError(
                f"{v!r} is not a list id like q4-outreach.acme.example (RFC 2919: a name, a "
                "dot and a domain you control; letters, digits and -_. — no spaces or @)"
            )
        return text

    @model_validator(mode="after")
    def _steps(self) -> Campaign:
        if self.template is not None and self.steps:
            raise ValueError("template and steps are both set — move the template into steps")
        if self.template is None and not self.steps:
            raise ValueError("no template — add template: NAME or steps: [{template: NAME}, …]")
        if self.template is not None:
            object.__setattr__(self, "steps", (Step(template=self.template),))
            object.__setattr__(self, "template", None)
        return self

    @property
    def effective_guard(self) -> Guard | None:
        """Marketing campaigns are guarded by default; transactional ones only if asked."""
        if self.guard is not None:
            return self.guard
        return Guard() if self.kind == "marketing" else None


FILE_KINDS: dict[str, type[BaseModel]] = {
    "settings": Settings,
    "service": Service,
    "template": Template,
    "campaign": Campaign,
}


@dataclass(frozen=True)
class Config:
    """One consistent generation of the config root: only objects that validated.

    Templates carry their bodies: ``text_file``/``html_file`` have been read into ``text``/``html``.
    """

    root: Path
    settings: Settings = field(default_factory=Settings)
    services: Mapping[str, Service] = field(default_factory=dict)
    templates: Mapping[str, Template] = field(default_factory=dict)
    campaigns: Mapping[str, Campaign] = field(default_factory=dict)
    generation: int = 1
    pinned: Mapping[str, Mapping[str, Template]] = field(default_factory=dict)
    """Campaign id → the templates it runs with when they differ from ``templates``: a campaign
    kept at its last good version after a reload broke it keeps the templates it was good with
    (a campaign and its templates are last good *together*)."""

    def path(self, value: str) -> Path:
        return as_path(self.root, value)

    def template_of(self, campaign_id: str, template_id: str) -> Template | None:
        """The template a campaign sends: its pinned version, else the current one."""
        pinned = self.pinned.get(campaign_id)
        if pinned is not None and template_id in pinned:
            return pinned[template_id]
        return self.templates.get(template_id)


def model_path_hint(kind: str) -> str:
    return {
        "settings": "campaignd.yaml",
        "service": "services.d/NAME.yaml",
        "template": "templates.d/NAME.yaml",
        "campaign": "campaigns.d/NAME.yaml",
    }[kind]


def as_path(root: Path, value: str) -> Path:
    """Paths in files are relative to the config root unless absolute."""
    p = Path(value)
    return p if p.is_absolute() else root / p
