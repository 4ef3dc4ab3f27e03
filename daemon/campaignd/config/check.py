"""Rules that span files: references between objects, drip step order, the compliance gate.

An object with an error here is dropped from the config (the daemon will not run a campaign
whose template is missing), exactly like an object whose own file is invalid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import jinja2.meta

from .model import Campaign, Config, as_path
from .problems import Problem, Severity
from .templates import (
    check_template,
    legacy_to_jinja,
    missing_unsubscribe,
    shows_postal_address,
)
from .yamlpos import Located, Path_

Locations = Mapping[tuple[str, str], tuple[Path, Located]]


@dataclass
class CheckResult:
    problems: list[Problem] = field(default_factory=list)
    invalid: dict[str, set[str]] = field(
        default_factory=lambda: {"service": set(), "template": set(), "campaign": set()}
    )
    noncompliant: set[str] = field(default_factory=set)
    """Campaigns invalid only because their mail would not be compliant."""


class _Checker:
    def __init__(
        self,
        config: Config,
        broken: Mapping[str, set[str]],
        locations: Locations,
        rel: Callable[[Path], str],
    ) -> None:
        self.config = config
        self.broken = broken
        self.locations = locations
        self.rel = rel
        self.out = CheckResult()
        self._other_errors: set[tuple[str, str]] = set()

    def add(
        self,
        kind: str,
        oid: str,
        at: Path_,
        message: str,
        *,
        severity: Severity = "error",
        key: bool = False,
        compliance: bool = False,
    ) -> None:
        path, located = self.locations[(kind, oid)]
        line, col = located.position(at, key=key)
        self.out.problems.append(Problem(self.rel(path), line, col, message, severity, kind, oid))
        if severity == "error":
            self.out.invalid[kind].add(oid)
            if not compliance:
                self._other_errors.add((kind, oid))
            elif kind == "campaign":
                self.out.noncompliant.add(oid)

    def ref(self, kind: str, oid: str, at: Path_, ref_kind: str, ref: str) -> bool:
        known = {"service": self.config.services, "template": self.config.templates}[ref_kind]
        if ref in known:
            return True
        folder = {"service": "services.d", "template": "templates.d"}[ref_kind]
        if ref in self.broken.get(ref_kind, set()):
            self.add(
                kind, oid, at, f"{ref_kind} {ref!r} has errors — fix {folder}/{ref}.yaml first"
            )
        else:
            import difflib

            close = difflib.get_close_matches(ref, list(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"create {folder}/{ref}.yaml"
            self.add(kind, oid, at, f"unknown {ref_kind} {ref!r} — {hint}")
        return False

    def templates(self) -> None:
        for oid, tpl in self.config.templates.items():
            path, located = self.locations[("template", oid)]
            for prob in check_template(oid, tpl):
                part_key = prob.part
                file_key = f"{prob.part}_file"
                body_name = getattr(tpl, file_key, None) if prob.part in ("text", "html") else None
                if body_name:
                    body = Path(body_name)
                    body = body if body.is_absolute() else path.parent / body
                    self.out.problems.append(
                        Problem(
                            self.rel(body),
                            prob.line or 1,
                            1,
                            prob.message,
                            "error",
                            "template",
                            oid,
                        )
                    )
                    self.out.invalid["template"].add(oid)
                    continue
                line, col = located.position((part_key,))
                source = getattr(tpl, part_key, "") or ""
                if prob.line:
                    line += prob.line if "\n" in source else prob.line - 1
                    col = 1
                self.out.problems.append(
                    Problem(self.rel(path), line, col, prob.message, "error", "template", oid)
                )
                self.out.invalid["template"].add(oid)

    def campaign(self, oid: str, c: Campaign) -> None:
        for i, svc in enumerate(c.services):
            self.ref("campaign", oid, ("services", i), "service", svc)
        top_template = ("template",) in self.locations[("campaign", oid)][1].values
        used: list[tuple[Path_, str]] = []
        for n, step in enumerate(c.steps):
            at: Path_ = ("template",) if top_template else ("steps", n, "template")
            for j, name in enumerate(step.template):
                pos = at if len(step.template) == 1 else (*at, j)
                if self.ref("campaign", oid, pos, "template", name):
                    used.append((pos, name))
            if n == 0 and step.after is not None:
                self.add(
                    "campaign",
                    oid,
                    ("steps", 0, "after"),
                    "the first step has after: — it starts when the campaign starts; "
                    "use start: for the first send",
                )
            if n > 0 and step.after is None:
                self.add(
                    "campaign",
                    oid,
                    ("steps", n),
                    f"step {n + 1} has no after: — say how long after step {n} it follows "
                    "(e.g. after: 3d)",
                )
            if n == 0 and step.unless:
                self.add(
                    "campaign",
                    oid,
                    ("steps", 0, "unless"),
                    "unless: on the first step can never match — move it to a later step",
                    severity="warning",
                )
        if c.kind == "marketing":
            self.compliance(oid, c, used)
        for i, rel_path in enumerate(c.audience):
            if not as_path(self.config.root, rel_path).is_file():
                self.add(
                    "campaign",
                    oid,
                    ("audience", i) if len(c.audience) > 1 else ("audience",),
                    f"audience file {rel_path} does not exist — create it or fix the path "
                    "(paths are relative to the config root)",
                )
        for i, other in enumerate(c.filters.exclude_campaigns):
            if other not in self.config.campaigns and other not in self.broken.get("campaign", ()):
                self.add(
                    "campaign",
                    oid,
                    ("filters", "exclude_campaigns", i),
                    f"exclude_campaigns names {other!r}, which has no file — only its past "
                    "sends in the database can exclude anyone",
                    severity="warning",
                )
        if c.schedule is not None:
            from .cron import validate_cron

            why = validate_cron(c.schedule.cron)
            if why:
                self.add("campaign", oid, ("schedule", "cron"), why)

    def compliance(self, oid: str, c: Campaign, used: list[tuple[Path_, str]]) -> None:
        if not c.postal_address:
            self.add(
                "campaign",
                oid,
                ("kind",),
                "kind: marketing needs postal_address: — marketing mail must carry the "
                "sender's postal address (or set kind: transactional)",
            )
        for pos, name in used:
            tpl = self.config.templates[name]
            for part in missing_unsubscribe(tpl):
                self.add(
                    "campaign",
                    oid,
                    pos,
                    f"template {name!r} has no {{{{ unsubscribe_url }}}} in its {part} part — "
                    "marketing mail needs an unsubscribe link in every part "
                    "(or set kind: transactional)",
                    compliance=True,
                )
            if c.postal_address and not shows_postal_address(tpl, c.postal_address):
                self.add(
                    "campaign",
                    oid,
                    pos,
                    f"template {name!r} does not show the postal address — add "
                    "{{ postal_address }} to its text or html (marketing mail must carry the "
                    "sender's postal address, or set kind: transactional)",
                    compliance=True,
                )

    def run(self) -> CheckResult:
        self.templates()
        for oid, c in self.config.campaigns.items():
            self.campaign(oid, c)
        self.out.noncompliant -= {oid for kind, oid in self._other_errors if kind == "campaign"}
        return self.out


def referenced_names(source: str) -> frozenset[str]:
    """Names a template part uses; empty when it does not parse (check_template says why)."""
    try:
        ast = jinja2.Environment(autoescape=False).parse(legacy_to_jinja(source))  # noqa: S701 - parsed, never rendered
        # Compiling for the names fails on an unknown filter: check_template says why.
        return frozenset(jinja2.meta.find_undeclared_variables(ast))
    except jinja2.TemplateError:
        return frozenset()


_missing_unsubscribe = missing_unsubscribe  # the name before it moved to templates.py


def check_config(
    config: Config,
    broken: Mapping[str, set[str]],
    locations: Locations,
    *,
    rel: Callable[[Path], str],
) -> CheckResult:
    return _Checker(config, broken, locations, rel).run()
