"""Accounting for the list rows enrollment did not enroll: how they are keyed and what their
message row says (SPEC §3: every audience row ends in exactly one visible state).

A filtered or suppressed row has an address key of its own in the campaign, so it is recorded
under that key like any recipient: a step-1 message with status ``skipped`` or ``suppressed``
and ``excluded`` set. An invalid row has no key, and a duplicate shares its key with the row
enrolled first; both are recorded under an *exclusion key*, ``<address>#<file:line>``, which
keeps (campaign, edition, step, recipient) unique and can never be an address key (nothing
after an address's last ``@`` may hold ``#``, ``/`` or ``:``). Looking a person up by address
finds both: the key itself and the exclusion keys that start with ``<address>#``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .rows import SuppressionRow

__all__ = [
    "contact_reason",
    "exclusion_key",
    "exclusion_prefix",
    "filter_reason",
    "suppression_reason",
]


def _escape(address: str) -> str:
    # ``#`` separates the address from the source; ``%`` escapes it (and itself).
    return address.strip().lower().replace("%", "%25").replace("#", "%23")


def exclusion_key(address: str, source: str) -> str:
    """The recipient key recording an invalid or duplicate row at ``source`` (``file:line``)."""
    return f"{_escape(address)}#{source}"


def exclusion_prefix(address: str) -> str:
    """What every exclusion key of rows that wrote ``address`` starts with."""
    return _escape(address) + "#"


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def suppression_reason(row: SuppressionRow | None) -> str:
    """The ``last_error`` of a row suppressed at enrollment: the suppression's reason, source
    and time, as the suppression list keeps them."""
    if row is None:  # lifted between the audience's check and this look-up
        return "suppressed: on the suppression list when the campaign enrolled"
    by = f"{row.source}, campaign {row.campaign_id}" if row.campaign_id else row.source
    return f"suppressed: {row.reason} (source {by}, since {_day(row.created_at)})"


def filter_reason(key: str) -> str:
    """A filter needing only the row (``include_domains``, ``exclude_domains``, ``match.X``)."""
    what = {
        "include_domains": "the domain is not in include_domains",
        "exclude_domains": "the domain is in exclude_domains",
    }.get(key)
    if what is None and key.startswith("match."):
        what = f"the {key[len('match.') :]} column does not match"
    return f"filtered by {key}: {what or key}"


def contact_reason(key: str, contact: tuple[str, float] | None) -> str:
    """``exclude_contacted_within`` / ``exclude_campaigns``: which campaign reached them, when."""
    if contact is None:
        return f"filtered by {key}"
    campaign, at = contact
    verb = "contacted by" if key == "exclude_contacted_within" else "received"
    return f"filtered by {key}: {verb} campaign {campaign} at {_day(at)}"
