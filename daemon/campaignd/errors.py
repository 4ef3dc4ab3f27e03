"""One error tree. Every error says which file, object or recipient it is about, and what to do.

Mixing in stdlib exceptions (as aiosmtplib does) lets callers catch by meaning, e.g. a
``ConfigError`` is a ``ValueError`` and a ``DeliveryError`` with a connection cause an ``OSError``.
"""

from __future__ import annotations


class CampaigndError(Exception):
    """Base of every error campaignd raises on purpose."""


class ConfigError(CampaigndError, ValueError):
    """A config file or value is wrong; the message starts with ``path:line:col:``."""


class SecretError(ConfigError):
    """A secret could not be resolved (unset variable, unreadable file, no credential)."""


class AudienceError(CampaigndError, ValueError):
    """An audience file cannot be read at all (missing, unreadable, not UTF-8, no email column)."""


class RenderError(CampaigndError, ValueError):
    """A message could not be rendered for one recipient; names template, field and recipient."""

    def __init__(self, message: str, *, template: str = "", recipient: str = "", field: str = ""):
        super().__init__(message)
        self.template = template
        self.recipient = recipient
        self.field = field


class RenderCutOff(RenderError):
    """Rendering ran past its time, size or loop budget: the template is at fault, not the
    recipient, so the same will happen to the next message of that template."""


class NotCompliant(RenderError):
    """A rendered marketing message lacks its unsubscribe link or the postal address: it is
    never sent (the load-time check missed a template that hides them behind a condition)."""


class TemplateError(ConfigError):
    """A template is invalid as a whole (syntax, sandbox escape, size)."""


class NotFound(CampaigndError, LookupError):
    """Something an operator named (a campaign, a service) does not exist: the API's 404."""


class StoreError(CampaigndError, RuntimeError):
    """The database refused or lost something."""


class DeliveryError(CampaigndError):
    """Sending failed; ``temporary`` decides retry versus fail."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        enhanced: str | None = None,
        temporary: bool = True,
        service: str = "",
    ):
        super().__init__(message)
        self.code = code
        self.enhanced = enhanced
        self.temporary = temporary
        self.service = service


class ApiError(CampaigndError):
    """A campaignctl call to the daemon's API failed (unreachable, 401, 404, …)."""
