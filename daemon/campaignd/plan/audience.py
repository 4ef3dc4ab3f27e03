"""Who receives a campaign: its lists → valid, unique, filtered, not suppressed (SPEC §3).

``build_audience(...)`` returns an ``Audience``: iterate it once to stream the accepted
recipients in file order, then read ``.report`` for the counts. Every file is checked whole
(exists, UTF-8, has an email column) before the first recipient is yielded. Memory does not grow
with the list except for the dedupe set (an 8-byte digest per distinct address).

Each row ends in exactly one of: accepted, invalid, duplicates, filtered, suppressed — decided in
that order of checks: address validity, dedupe (the first occurrence across all files wins, even
if a filter then drops it), include_domains / exclude_domains / match, the suppression list, then
exclude_contacted_within / exclude_campaigns. The last three ask the database in batches of
``BATCH`` keys.

Domain filters cover subdomains: ``exclude_domains: [acme.example]`` also drops
``eu.acme.example``; IDN entries may be written as Unicode or as ``xn--`` A-labels. ``match``
compares values case-insensitively; a column is found by its exact name, else case-insensitively;
a row without the column (every row of a text list) does not match.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..config.model import Campaign, Filters, as_path
from .audience_address import (
    Address,
    EmailNotValidError,
    address_digest,
    address_parts,
    domain_forms,
    explain_invalid,
    parse_address,
)
from .audience_history import (
    History,
    MemoryHistory,
    MemorySuppressions,
    NoHistory,
    NoSuppressions,
    Suppressions,
)
from .audience_read import EMAIL_COLUMNS, MAX_LINE, ListFile, open_list, read_rows

__all__ = [
    "BATCH",
    "SAMPLES",
    "Address",
    "Audience",
    "AudienceReport",
    "Excluded",
    "History",
    "MemoryHistory",
    "MemorySuppressions",
    "NoHistory",
    "NoSuppressions",
    "Recipient",
    "RowProblem",
    "Suppressions",
    "build_audience",
    "parse_address",
]

BATCH = 1000
"""Keys per History / Suppressions call."""
SAMPLES = 100
"""Rows kept as examples per kind of problem; the counts are always complete."""
TIMEZONE_COLUMN = "timezone"
_SHOWN = 200
"""Characters of an invalid address kept in a sample: a 100 KiB "address" is not shown whole."""
_LONG_LINE = (
    f"the line is longer than {MAX_LINE:,} characters — not an address; look for a missing "
    "line break or a corrupted export"
)


@dataclass(frozen=True, slots=True)
class Recipient:
    key: str
    """Dedupe and history key: ``email`` lower-cased."""
    email: str
    """Normalized address with a Unicode domain, for display and templates."""
    smtp_address: str
    """For RCPT TO: the domain in A-labels (``xn--…``)."""
    domain: str
    """Lower-case, Unicode."""
    fields: dict[str, str] = field(hash=False)
    """The row's columns by header name, ``email`` always set to ``email`` above; an empty cell
    is no field at all (SPEC §3: a missing field). Do not mutate."""
    source: str
    """``lists/a.csv:12`` — the file as the campaign names it and the line the row starts on."""
    timezone: str | None = None
    """The row's ``timezone`` column if it names an IANA zone."""


@dataclass(frozen=True, slots=True)
class RowProblem:
    source: str
    address: str
    reason: str
    first: str | None = None
    """For a duplicate: where the address appeared first."""

    def __str__(self) -> str:
        if self.first is not None:
            return f"{self.source}: {self.address} duplicates {self.first}"
        return f"{self.source}: {self.address!r}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Excluded:
    """A row that receives nothing, and why — what enrollment records so that every row of
    the lists ends in one visible state (``Audience.rows()`` yields these beside recipients)."""

    kind: str
    """``invalid``, ``duplicate``, ``filtered`` or ``suppressed``."""
    source: str
    """``lists/a.csv:12``, as ``Recipient.source``."""
    address: str
    """The address as the list wrote it (shortened past 200 characters)."""
    reason: str
    """invalid: why not an address; filtered: the filter key (``exclude_domains``,
    ``match.industry``, ``exclude_contacted_within``, ``exclude_campaigns``); duplicate and
    suppressed: the kind again (the store knows the details)."""
    key: str | None = None
    """The normalized key, for every kind but ``invalid``."""
    recipient: Recipient | None = None
    """filtered and suppressed: the row as it would have been enrolled."""


EXCLUDED_KINDS = ("invalid", "duplicate", "filtered", "suppressed")


@dataclass
class AudienceReport:
    rows: int = 0
    """Data rows read (blank lines, comments and headers are not rows)."""
    accepted: int = 0
    invalid: int = 0
    duplicates: int = 0
    filtered: int = 0
    suppressed: int = 0
    invalid_rows: list[RowProblem] = field(default_factory=list)
    """The first ``SAMPLES`` invalid rows; ``invalid`` is the total."""
    duplicate_rows: list[RowProblem] = field(default_factory=list)
    missing_fields: dict[str, int] = field(default_factory=dict)
    """For each required field, how many accepted recipients lack it or have it empty."""
    filtered_by: dict[str, int] = field(default_factory=dict)
    """Filter key (``exclude_domains``, ``match.industry``, ``exclude_campaigns``…) → rows."""
    columns: list[str] = field(default_factory=list)
    """Every column seen, in order of first appearance across the files."""
    invalid_timezones: int = 0
    """Accepted recipients whose timezone column is set but not an IANA zone (fallback used)."""
    complete: bool = False
    """True once the iteration reached the end of the last file."""

    def filter(self, reason: str) -> None:
        self.filtered += 1
        self.filtered_by[reason] = self.filtered_by.get(reason, 0) + 1


class Audience:
    """The recipients of one campaign, streamed; ``report`` describes the last iteration."""

    def __init__(
        self,
        campaign: Campaign,
        root: Path,
        *,
        history: History,
        suppressions: Suppressions,
        now: datetime,
        required_fields: Collection[str] = (),
    ) -> None:
        self.campaign = campaign
        self.root = root
        self.history = history
        self.suppressions = suppressions
        self.now = now
        self.required_fields = tuple(sorted(set(required_fields)))
        self._filters = _LocalFilters.compile(campaign.filters)
        self.report = self._new_report()

    def _new_report(self) -> AudienceReport:
        return AudienceReport(missing_fields=dict.fromkeys(self.required_fields, 0))

    def __iter__(self) -> Iterator[Recipient]:
        return cast(Iterator[Recipient], self._walk(record=False))

    def rows(self) -> Iterator[Recipient | Excluded]:
        """Every data row in file order (within each batch of ``BATCH``): the accepted ones as
        ``Recipient``, the others as ``Excluded`` saying why. Counts as iterating."""
        return self._walk(record=True)

    def _walk(self, *, record: bool) -> Iterator[Recipient | Excluded]:
        report = self.report = self._new_report()
        files = [open_list(name, as_path(self.root, name)) for name in self.campaign.audience]
        seen = _Seen()
        batch: list[tuple[Recipient, bool] | Excluded] = []
        for index, lf in enumerate(files):
            report.columns.extend(c for c in lf.columns if c not in report.columns)
            for candidate in self._candidates(index, files, seen, record=record):
                batch.append(candidate)
                if len(batch) >= BATCH:
                    yield from self._settle(batch, record=record)
                    batch = []
        yield from self._settle(batch, record=record)
        report.complete = True

    def _candidates(
        self, index: int, files: list[ListFile], seen: _Seen, *, record: bool
    ) -> Iterator[tuple[Recipient, bool] | Excluded]:
        """The valid, first-seen rows of one file that pass the filters needing no history,
        each with whether its timezone column holds something that is not a zone; with
        ``record``, also the rows dropped here, as ``Excluded``."""
        # The hot loop of a million-row plan: names are bound to locals on purpose.
        lf, report = files[index], self.report
        name = lf.name
        check = self._filters.bind(lf.columns)
        tz_column = _column(lf.columns, TIMEZONE_COLUMN) if lf.kind == "csv" else None
        invalid_rows, duplicate_rows = report.invalid_rows, report.duplicate_rows
        rows = 0
        try:
            for line, text, fields in read_rows(lf):
                rows += 1
                if fields is None:  # a line over MAX_LINE: text is a preview of it
                    report.invalid += 1
                    if len(invalid_rows) < SAMPLES:
                        invalid_rows.append(RowProblem(f"{name}:{line}", text, _LONG_LINE))
                    if record:
                        yield Excluded("invalid", f"{name}:{line}", text, _LONG_LINE)
                    continue
                try:
                    key, email, smtp_address, domain = address_parts(text)
                except EmailNotValidError as exc:
                    report.invalid += 1
                    if len(invalid_rows) < SAMPLES or record:
                        shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "…"
                        why = explain_invalid(text, exc)
                        if len(invalid_rows) < SAMPLES:
                            invalid_rows.append(RowProblem(f"{name}:{line}", shown, why))
                        if record:
                            yield Excluded("invalid", f"{name}:{line}", shown, why)
                    continue
                digest = address_digest(key)
                if not seen.add(digest, index, line):
                    report.duplicates += 1
                    if len(duplicate_rows) < SAMPLES:
                        first_index, first_line = seen.place(digest)
                        first = f"{files[first_index].name}:{first_line}"
                        duplicate_rows.append(
                            RowProblem(f"{name}:{line}", text, "duplicate", first)
                        )
                    if record:
                        # Where it was first seen is the store's to say (the first row's
                        # source): a lookup here would scan the whole list for every duplicate.
                        yield Excluded("duplicate", f"{name}:{line}", text, "duplicate", key)
                    continue
                if "" in fields.values():
                    # An empty cell is a missing field (SPEC §3): absent from the row, a
                    # template's default(…) applies, or the message fails naming the field.
                    fields = {k: v for k, v in fields.items() if v}
                fields["email"] = email
                if check is not None and (reason := check(domain, fields)) is not None:
                    report.filter(reason)
                    if record:
                        zone_text = fields.get(tz_column, "") if tz_column else ""
                        zone = _zone(zone_text) if zone_text else None
                        source = f"{name}:{line}"
                        recipient = Recipient(
                            key, email, smtp_address, domain, fields, source, zone
                        )
                        yield Excluded("filtered", source, text, reason, key, recipient)
                    continue
                zone_text = fields.get(tz_column, "") if tz_column else ""
                zone = _zone(zone_text) if zone_text else None
                source = f"{name}:{line}"
                recipient = Recipient(key, email, smtp_address, domain, fields, source, zone)
                yield recipient, zone is None and zone_text != ""
        finally:
            report.rows += rows

    def _settle(
        self, batch: list[tuple[Recipient, bool] | Excluded], *, record: bool
    ) -> Iterator[Recipient | Excluded]:
        """Apply suppressions and the history rules to a batch; yield what remains (with
        ``record``, the batch's exclusions too, in order)."""
        if not batch:
            return
        report = self.report
        keys = [item[0].key for item in batch if not isinstance(item, Excluded)]
        out = self.suppressions.suppressed(keys) if keys else set()
        suppressed = set(out)
        report.suppressed += sum(1 for k in keys if k in out)
        filters = self.campaign.filters
        rules: list[tuple[str, Callable[[list[str]], set[str]]]] = []
        if filters.exclude_contacted_within is not None:
            since = self.now - filters.exclude_contacted_within
            rules.append(
                ("exclude_contacted_within", lambda ks: self.history.contacted_since(ks, since))
            )
        if filters.exclude_campaigns:
            ids = list(filters.exclude_campaigns)
            rules.append(("exclude_campaigns", lambda ks: self.history.received_campaigns(ks, ids)))
        why: dict[str, str] = {}
        for reason, rule in rules:
            remaining = [k for k in keys if k not in out]
            hits = rule(remaining) if remaining else set()
            for k in remaining:
                if k in hits:
                    report.filter(reason)
                    why[k] = reason
            out |= hits
        for item in batch:
            if isinstance(item, Excluded):
                yield item
                continue
            recipient, bad_zone = item
            if recipient.key in out:
                if record:
                    kind = "suppressed" if recipient.key in suppressed else "filtered"
                    reason = why.get(recipient.key, kind)
                    yield Excluded(
                        kind, recipient.source, recipient.email, reason, recipient.key, recipient
                    )
                continue
            report.accepted += 1
            report.invalid_timezones += bad_zone
            for name in self.required_fields:
                if not recipient.fields.get(name):
                    report.missing_fields[name] += 1
            yield recipient


def build_audience(
    campaign: Campaign,
    root: Path,
    *,
    history: History,
    suppressions: Suppressions,
    now: datetime,
    required_fields: Collection[str] = (),
) -> Audience:
    """The one entry point (``campaignctl plan``, preview, the daemon's enrollment)."""
    return Audience(
        campaign,
        root,
        history=history,
        suppressions=suppressions,
        now=now,
        required_fields=required_fields,
    )


# ----------------------------------------------------------------- helpers

Check = Callable[[str, dict[str, str]], str | None]


@dataclass(frozen=True)
class _LocalFilters:
    """The filters that need only the row: domains and column matches."""

    include: frozenset[str]
    exclude: frozenset[str]
    match: tuple[tuple[str, frozenset[str]], ...]

    @classmethod
    def compile(cls, filters: Filters) -> _LocalFilters:
        return cls(
            include=frozenset(_domain_entry(d) for d in filters.include_domains),
            exclude=frozenset(_domain_entry(d) for d in filters.exclude_domains),
            match=tuple(
                (column, frozenset(v.strip().casefold() for v in values))
                for column, values in filters.match.items()
            ),
        )

    def bind(self, columns: tuple[str, ...]) -> Check | None:
        """The check for rows with these columns, or None when nothing is filtered locally."""
        if not (self.include or self.exclude or self.match):
            return None
        include, exclude = self.include, self.exclude
        match = [(f"match.{name}", _column(columns, name), allowed) for name, allowed in self.match]

        def check(domain: str, fields: dict[str, str]) -> str | None:
            if include and not _covered(domain, include):
                return "include_domains"
            if exclude and _covered(domain, exclude):
                return "exclude_domains"
            for reason, column, allowed in match:
                if column is None or fields.get(column, "").casefold() not in allowed:
                    return reason
            return None

        return check


def _column(columns: tuple[str, ...], name: str) -> str | None:
    """``name`` as the header writes it: exactly, else ignoring case."""
    if name in columns:
        return name
    if name.lower() in EMAIL_COLUMNS:
        return "email"  # always set, to the normalized address
    return next((c for c in columns if c.lower() == name.lower()), None)


def _covered(domain: str, entries: frozenset[str]) -> bool:
    """``domain`` or one of its parent domains is in ``entries``."""
    while True:
        if domain in entries:
            return True
        dot = domain.find(".")
        if dot < 0:
            return False
        domain = domain[dot + 1 :]


def _domain_entry(text: str) -> str:
    forms = domain_forms(text.strip().lower())
    return forms[0] if forms else text.strip().lower()


@lru_cache(maxsize=4096)
def _zone(name: str) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory
        return None
    return name


class _Seen:
    """Digests of the keys seen, and where each was seen first (looked up only for samples)."""

    def __init__(self) -> None:
        self._digests: set[int] = set()
        self._order = array("Q")
        self._places = array("Q")

    def add(self, digest: int, file_index: int, line: int) -> bool:
        """True if the digest is new."""
        if digest in self._digests:
            return False
        self._digests.add(digest)
        self._order.append(digest)
        self._places.append(file_index << 40 | line)
        return True

    def place(self, digest: int) -> tuple[int, int]:
        # A linear scan in C, done at most SAMPLES times: cheaper than a dict of a million places.
        packed = self._places[self._order.index(digest)]
        return packed >> 40, packed & ((1 << 40) - 1)
