"""campaignctl: validate, explain and control campaigns (SPEC §4).

Offline commands (validate, schema, preview, plan, sink) read the config root directly and are
here; control commands talk to the daemon's HTTP API (``remote.py``); ``lint.py`` runs the
deliverability checks. Exit codes: 0 ok, 1 problems, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from ..config.load import LoadResult
from ..config.model import FILE_KINDS
from ..errors import CampaigndError
from .commands import COMMANDS, command, err, load, out, print_problems
from .lint import add_lint_args, cmd_lint  # noqa: F401 - cmd_lint: see command()

# ------------------------------------------------------------------ validate


def lint_errors(result: LoadResult) -> list[tuple[str, str]]:
    """The deliverability lint of every valid campaign, without DNS: (campaign, message) of its
    errors only — warnings stay with ``campaignctl lint`` so validate's output stays short."""
    from .deliverability import lint_campaign

    found = []
    for cid in sorted(result.config.campaigns):
        try:
            findings = lint_campaign(result, cid)
        except CampaigndError as exc:
            found.append((cid, str(exc)))
            continue
        found += [(cid, f"{f.topic}: {f.message}") for f in findings if f.level == "error"]
    return found


def cmd_validate(args: argparse.Namespace) -> int:
    result = load(args)
    linted = lint_errors(result)
    ok = result.ok and not linted
    if args.json:
        print(
            json.dumps(
                {
                    "ok": ok,
                    "root": str(result.config.root),
                    "errors": len(result.errors) + len(linted),
                    "warnings": len(result.warnings),
                    "problems": [p.as_dict() for p in result.problems],
                    "lint": [{"campaign": c, "message": m} for c, m in linted],
                    "loaded": {
                        "services": sorted(result.config.services),
                        "templates": sorted(result.config.templates),
                        "campaigns": sorted(result.config.campaigns),
                    },
                },
                indent=2,
            )
        )
        return 0 if ok else 1
    print_problems(result)
    for cid, message in linted:
        err.print(f"campaigns.d/{cid}.yaml: lint error: {message}", markup=False)
    cfg = result.config
    summary = (
        f"{len(cfg.services)} services, {len(cfg.templates)} templates, "
        f"{len(cfg.campaigns)} campaigns valid; "
        f"{len(result.errors) + len(linted)} errors, {len(result.warnings)} warnings"
    )
    if linted:
        summary += " (`campaignctl lint CAMPAIGN` explains the deliverability findings)"
    (out if ok else err).print(("ok: " if ok else "invalid: ") + summary, markup=False)
    return 0 if ok else 1


@command("validate", "check every file of a config root")
def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", nargs="?", help="config root (default: --config, $CAMPAIGND_CONFIG, .)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


# ------------------------------------------------------------------ schema


def cmd_schema(args: argparse.Namespace) -> int:
    from ..config.schema import json_schemas

    schemas = json_schemas()
    if args.out:
        target = Path(args.out)
        target.mkdir(parents=True, exist_ok=True)
        for kind, schema in schemas.items():
            (target / f"{kind}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
        out.print(f"wrote {', '.join(f'{k}.schema.json' for k in schemas)} to {target}")
        return 0
    if args.kind:
        print(json.dumps(schemas[args.kind], indent=2))
    else:
        print(json.dumps(schemas, indent=2))
    return 0


@command("schema", "print the JSON Schema of each file kind (for editors)")
def _schema_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=sorted(FILE_KINDS), help="only this file kind")
    p.add_argument("--out", metavar="DIR", help="write one <kind>.schema.json per kind into DIR")


# ------------------------------------------------------------------ preview


def cmd_preview(args: argparse.Namespace) -> int:
    from .preview import preview_message

    result = load(args)
    try:
        text = preview_message(
            result,
            args.campaign,
            recipient=args.recipient,
            step=args.step,
            raw=args.raw,
        )
    except CampaigndError as exc:
        print_problems(result, only_for=args.campaign)
        err.print(f"error: {exc}")
        return 1
    sys.stdout.write(text)
    return 0


@command("preview", "render one message exactly as it would be sent")
def _preview_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    p.add_argument("--recipient", metavar="EMAIL", help="default: the first recipient")
    p.add_argument("--step", type=int, default=1, help="drip step, 1-based (default 1)")
    p.add_argument("--raw", action="store_true", help="print the raw RFC 5322 bytes")


# The API-backed commands come after plan in the help, as they always have.
from . import remote  # noqa: E402, F401 - registers them

# ------------------------------------------------------------------ plan


def cmd_plan(args: argparse.Namespace) -> int:
    from ..plan.campaign import build_plan

    result = load(args)
    try:
        plan = build_plan(result, args.campaign, now=datetime.now(UTC))
    except CampaigndError as exc:
        print_problems(result, only_for=args.campaign)
        err.print(f"error: {exc}")
        return 1
    if args.json:
        print(json.dumps(plan.as_json(), indent=2, default=str))
        return 0
    _print_plan(plan)
    return 0


def _print_plan(plan: Any) -> None:
    data = plan.as_json()
    out.print(f"[bold]{data['campaign']}[/bold] — {data['name']}", markup=True)
    t = Table(show_header=False, box=None)
    for key in ("audience", "invalid", "duplicates", "filtered", "suppressed"):
        t.add_row(key, str(data[key]))
    t.add_row("messages", str(data["messages"]))
    out.print(t)
    for sample in data.get("invalid_samples", [])[:10]:
        out.print(f"  invalid: {sample}")
    for field, count in data["missing_fields"].items():
        out.print(f"  [yellow]missing field {field!r}: {count} recipients[/yellow]", markup=True)
    if data["days"]:
        days = Table("date", "messages", title="volume by day")
        for d in data["days"][:60]:
            days.add_row(str(d["date"]), str(d["messages"]))
        if len(data["days"]) > 60:
            days.add_row("…", f"{len(data['days']) - 60} more days")
        out.print(days)
    for note in data["notes"]:
        out.print(f"  note: {note}")
    out.print(f"estimated finish: {data['finish'] or 'never (see notes)'}")


@command("plan", "who receives what and when, before anything is sent")
def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    p.add_argument("--json", action="store_true")


def cmd_sink(args: argparse.Namespace) -> int:
    from .sink import run_sink

    return run_sink(args.listen, Path(args.maildir) if args.maildir else None)


@command("sink", "a local SMTP sink for trying things out")
def _sink_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", default="127.0.0.1:2525")
    p.add_argument("--maildir", metavar="DIR", help="also store every message in this Maildir")


command("lint", "deliverability checks: alignment, unsubscribe headers, --dns")(add_lint_args)


# ------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaignctl", description="Validate, preview, plan and control campaignd."
    )
    parser.add_argument(
        "--config", metavar="ROOT", help="config root (default: $CAMPAIGND_CONFIG, else .)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, add_args, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("--config", metavar="ROOT", default=argparse.SUPPRESS, help="config root")
        add_args(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS[args.command][0]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
