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
from typing import Any, Final

from ..config.load import LoadResult
from ..config.model import FILE_KINDS
from ..errors import CampaigndError
from .commands import (
    COMMANDS,
    add_json_flag,
    command,
    emit_json,
    err,
    load,
    out,
    print_problems,
    print_table,
)
from .lint import add_lint_args, cmd_lint  # noqa: F401 - cmd_lint: see command()

# ------------------------------------------------------------------ validate


def lint_errors(result: LoadResult) -> list[tuple[str, str]]:
    """The deliverability lint of every valid campaign, without DNS: (campaign, message) of its
    errors only — warnings stay with ``campaignctl lint`` so validate's output stays short."""
    return [(cid, message) for cid, _, message in lint_lines(result)]


# Which top-level key of a file a finding points at (its line is where to look).
_CAMPAIGN_KEYS: Final = {
    "alignment": ("services",),
    "dkim": ("services",),
    "config": ("services",),
    "postal-address": ("postal_address", "kind"),
    "unsubscribe": ("kind",),
}
_TEMPLATE_KEYS: Final = {
    "unsubscribe": ("text", "text_file", "html", "html_file"),
    "postal-address": ("text", "text_file", "html", "html_file"),
    "render": ("subject",),
}


def lint_lines(result: LoadResult) -> list[tuple[str, str, str]]:
    """(campaign, ``file:line``, message) of every lint error of ``lint_errors``: a finding
    about a template points into the template's file (at its load problem, else at the part
    that lacks something), any other into the campaign's file."""
    from .deliverability import lint_campaign

    found = []
    for cid in sorted(result.config.campaigns):
        try:
            findings = lint_campaign(result, cid)
        except CampaigndError as exc:
            found.append((cid, _where(result, "campaign", cid, ()), str(exc)))
            continue
        for f in findings:
            if f.level != "error":
                continue
            if f.template is not None:
                where = _where(result, "template", f.template, _TEMPLATE_KEYS.get(f.topic, ()))
            elif "http.public_url" in f.message:  # a setting, not the campaign
                settings = result.config.root / "campaignd.yaml"
                where = f"campaignd.yaml:{_key_line(settings, ('http',))}"
            else:
                where = _where(result, "campaign", cid, _CAMPAIGN_KEYS.get(f.topic, ()))
            found.append((cid, where, f"{f.topic}: {f.message}"))
    return found


def _where(result: LoadResult, kind: str, oid: str, keys: Sequence[str]) -> str:
    path = next((f.path for f in result.files if f.kind == kind and f.object_id == oid), None)
    rel = f"{kind}s.d/{oid}.yaml"
    if path is not None:
        try:
            rel = str(path.relative_to(result.config.root))
        except ValueError:
            rel = str(path)
    first = next((p for p in result.errors if p.file == rel), None)
    if first is not None:
        return f"{rel}:{first.line}"
    return f"{rel}:{_key_line(path, keys)}"


def _key_line(path: Path | None, keys: Sequence[str]) -> int:
    """The line of the first of ``keys`` at the top of a YAML file; 1 when none is there.
    The file was loaded (a regular file within the size limit) moments ago."""
    if path is None or not keys:
        return 1
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 1
    for key in keys:
        for n, line in enumerate(lines, start=1):
            if line.startswith(f"{key}:"):
                return n
    return 1


def cmd_validate(args: argparse.Namespace) -> int:
    result = load(args)
    linted = lint_lines(result)
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
                    "lint": [{"campaign": c, "where": w, "message": m} for c, w, m in linted],
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
    for cid, where, message in linted:
        # The campaign being linted first (as validate always printed it), then file:line of
        # where to fix it: the campaign's own file, or the template's.
        err.print(f"campaigns.d/{cid}.yaml: lint error: {message} ({where})", markup=False)
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
    p.add_argument("--json", action="store_true", help="accepted: the output is JSON already")


# ------------------------------------------------------------------ preview


def cmd_preview(args: argparse.Namespace) -> int:
    from .preview import preview_message, render_for

    result = load(args)
    try:
        if args.json:
            r = render_for(result, args.campaign, recipient=args.recipient, step=args.step)
            emit_json(
                {
                    "campaign": args.campaign,
                    "step": r.step,
                    "template": r.template_id,
                    "service": r.service_id,
                    "recipient": r.recipient.email,
                    "message_id": r.message.message_id,
                    "subject": r.message.subject,
                    "message": r.message.data.decode("utf-8", "replace"),
                }
            )
            return 0
        text = preview_message(
            result,
            args.campaign,
            recipient=args.recipient,
            step=args.step,
            raw=args.raw,
        )
    except CampaigndError as exc:
        print_problems(result, only_for=args.campaign)
        err.print(f"error: {exc}", markup=False)
        return 1
    sys.stdout.write(text)
    return 0


@command("preview", "render one message exactly as it would be sent")
def _preview_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    p.add_argument("--recipient", metavar="EMAIL", help="default: the first recipient")
    p.add_argument("--step", type=int, default=1, help="drip step, 1-based (default 1)")
    p.add_argument("--raw", action="store_true", help="print the raw RFC 5322 bytes")
    add_json_flag(p)


# ------------------------------------------------------------------ send-test


def cmd_send_test(args: argparse.Namespace) -> int:
    import asyncio

    from ..delivery.servicetest import test_service
    from .sendtest import build_test_message

    result = load(args)
    try:
        tm = build_test_message(
            result,
            args.campaign,
            to=args.to,
            recipient=args.recipient,
            step=args.step,
            service_id=args.service,
        )
    except CampaigndError as exc:
        print_problems(result, only_for=args.campaign)
        if args.json:
            emit_json({"ok": False, "campaign": args.campaign, "error": str(exc)})
        err.print(f"error: {exc}", markup=False)
        return 1
    service = result.config.services[tm.service_id]
    report = asyncio.run(
        test_service(
            tm.service_id,
            service,
            to=tm.to,
            message=tm.data,
            mail_from=tm.mail_from,
            command="send-test",
        )
    )
    if args.json:
        emit_json({**tm.describe(), **report.as_dict(), "ok": report.ok})
        return 0 if report.ok else 1
    signed = f"DKIM-signed ({tm.dkim})" if tm.dkim else "not DKIM-signed (the service has no dkim:)"
    out.print(
        f"campaign {tm.campaign_id}, step {tm.step}, template {tm.template_id}, rendered for "
        f"{tm.recipient}; subject {tm.subject!r}; {signed}; MAIL FROM <{tm.mail_from}>",
        markup=False,
    )
    out.print(report.render(), markup=False)
    if report.ok:
        err.print(
            f"note: the copy's unsubscribe link is {tm.recipient}'s own — following it "
            f"unsubscribes {tm.recipient}; nothing was recorded against {tm.campaign_id}",
            markup=False,
        )
    return 0 if report.ok else 1


@command("send-test", "send one real message of a campaign to ADDR (nothing is recorded)")
def _send_test_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    p.add_argument("--to", metavar="ADDR", required=True, help="where the copy goes")
    p.add_argument("--recipient", metavar="EMAIL", help="render for this row (default: the first)")
    p.add_argument("--step", type=int, default=1, help="drip step, 1-based (default 1)")
    p.add_argument("--service", help="send through this service (default: the campaign's first)")
    add_json_flag(p)


# The API-backed commands come after plan in the help, as they always have.
from . import remote  # noqa: E402, F401 - registers them

# ------------------------------------------------------------------ plan


def cmd_plan(args: argparse.Namespace) -> int:

    result = load(args)
    try:
        plan, history = _plan_with_history(result, args)
    except CampaigndError as exc:
        print_problems(result, only_for=args.campaign)
        err.print(f"error: {exc}", markup=False)
        return 1
    if args.json:
        emit_json({**plan.as_json(), "history": history})
        return 0
    if history["ok"]:
        err.print(f"suppressions and contact history: from the {history['source']}", markup=False)
    elif args.no_database:
        err.print("suppressions and contact history: not read (--no-database)", markup=False)
    else:
        err.print(
            f"[bold red]WARNING: suppressions and contact history NOT applied — "
            f"{history['error']}[/bold red]",
            markup=True,
        )
        err.print(
            "  the counts below ignore the suppression list, exclude_contacted_within and "
            "exclude_campaigns; the daemon will apply them (--no-database to silence this)",
            markup=False,
        )
    _print_plan(plan)
    return 0


def _plan_with_history(result: LoadResult, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The plan with the daemon's suppressions and history, read from its database read-only;
    without them (and saying why) when that database cannot be read."""
    from ..errors import StoreError
    from ..plan.campaign import build_plan, campaign_or_error
    from ..queue.database import configured_url
    from ..queue.lookup import database_history

    now = datetime.now(UTC)
    if args.no_database:
        plan = build_plan(result, args.campaign, now=now)
        return plan, {"ok": False, "source": None, "error": "--no-database was given"}
    campaign_or_error(result, args.campaign)  # a config problem is told as such, first
    url = configured_url(result.config.settings.database, result.config.root)
    try:
        with database_history(url, root=result.config.root, campaign_id=args.campaign) as h:
            plan = build_plan(result, args.campaign, now=now, history=h, suppressions=h)
            return plan, {"ok": True, "source": h.source, "error": None}
    except StoreError as exc:
        error = str(exc)
    plan = build_plan(result, args.campaign, now=now)
    return plan, {"ok": False, "source": None, "error": error}


SAMPLES_SHOWN = 10


def _print_plan(plan: Any) -> None:
    data = plan.as_json()
    out.print(f"[bold]{data['campaign']}[/bold] — {data['name']}", markup=True)
    rows = [(k, data[k]) for k in ("audience", "invalid", "duplicates", "filtered", "suppressed")]
    rows.append(("messages", data["messages"]))
    for key, value in rows:
        out.print(f"{key:<11} {value}")
    for reason, count in sorted(data.get("filtered_by", {}).items()):
        out.print(f"  filtered by {reason}: {count}", markup=False)
    samples = data.get("invalid_samples", [])
    for sample in samples[:SAMPLES_SHOWN]:
        out.print(f"  invalid: {sample}", markup=False)
    if data["invalid"] > min(len(samples), SAMPLES_SHOWN):
        out.print(f"  … and {data['invalid'] - min(len(samples), SAMPLES_SHOWN)} more invalid rows")
    for field, count in data["missing_fields"].items():
        out.print(
            f"  [yellow]missing field {field!r}: {count} recipients (no column, or an empty "
            "cell: default() applies, otherwise those messages fail)[/yellow]",
            markup=True,
        )
    schedule = data.get("schedule")
    if schedule:
        editions = schedule["next_editions"]
        out.print(
            f"recurring: cron {schedule['cron']!r} — each edition goes to the audience of its "
            "day; the volume below is one edition"
        )
        out.print(
            "  next editions: " + (", ".join(editions) if editions else "none (never fires again)")
        )
    if data["days"]:
        days = data["days"]
        shown = [(d["date"], d["messages"]) for d in days[:60]]
        if len(days) > 60:
            shown.append(("…", f"{len(days) - 60} more days"))
        print_table(("date", "messages"), shown, title="volume by day")
    for note in data["notes"]:
        out.print(f"  note: {note}", markup=False)
    out.print(f"estimated finish: {_finish_text(data)}", markup=False)


def _finish_text(data: dict[str, Any]) -> str:
    if data["finish"]:
        return str(data["finish"])
    if not data["messages"]:
        return "nothing to send (no recipient is left after validation and filters)"
    if data["notes"]:
        return "never — " + "; ".join(data["notes"])
    return "never — no message could be placed in a window under the rates"


@command("plan", "who receives what and when, before anything is sent")
def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    p.add_argument(
        "--no-database",
        action="store_true",
        help="do not read the daemon's database (suppressions and contact history)",
    )
    add_json_flag(p)


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
