"""campaignctl: validate, explain and control campaigns (SPEC §4).

Offline commands (validate, schema, preview, plan) read the config root directly; control
commands talk to the daemon's HTTP API. Exit codes: 0 ok, 1 problems, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .config.load import LoadResult, load_root
from .config.model import FILE_KINDS
from .errors import CampaigndError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Handler, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(
    name: str, help_text: str
) -> Callable[
    [Callable[[argparse.ArgumentParser], None]], Callable[[argparse.ArgumentParser], None]
]:
    """Register the arguments of a subcommand; its handler is ``cmd_<name>``."""

    def wrap(
        add_args: Callable[[argparse.ArgumentParser], None],
    ) -> Callable[[argparse.ArgumentParser], None]:
        handler = globals()[f"cmd_{name.replace('-', '_')}"]
        COMMANDS[name] = (handler, add_args, help_text)
        return add_args

    return wrap


def config_root(args: argparse.Namespace) -> Path:
    """``--config``, else the command's ROOT argument, else $CAMPAIGND_CONFIG, else cwd."""
    explicit = getattr(args, "config", None) or getattr(args, "root", None)
    return Path(explicit or os.environ.get("CAMPAIGND_CONFIG") or ".")


def load(args: argparse.Namespace) -> LoadResult:
    return load_root(config_root(args))


def print_problems(result: LoadResult, *, only_for: str | None = None) -> None:
    for p in result.problems:
        if only_for is not None and p.object_id != only_for:
            continue
        style = "red" if p.severity == "error" else "yellow"
        err.print(f"[{style}]{p}[/{style}]", markup=True, highlight=False)


# ------------------------------------------------------------------ validate


def cmd_validate(args: argparse.Namespace) -> int:
    result = load(args)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": result.ok,
                    "root": str(result.config.root),
                    "errors": len(result.errors),
                    "warnings": len(result.warnings),
                    "problems": [p.as_dict() for p in result.problems],
                    "loaded": {
                        "services": sorted(result.config.services),
                        "templates": sorted(result.config.templates),
                        "campaigns": sorted(result.config.campaigns),
                    },
                },
                indent=2,
            )
        )
        return 0 if result.ok else 1
    print_problems(result)
    cfg = result.config
    summary = (
        f"{len(cfg.services)} services, {len(cfg.templates)} templates, "
        f"{len(cfg.campaigns)} campaigns valid; "
        f"{len(result.errors)} errors, {len(result.warnings)} warnings"
    )
    (out if result.ok else err).print(("ok: " if result.ok else "invalid: ") + summary)
    return 0 if result.ok else 1


@command("validate", "check every file of a config root")
def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", nargs="?", help="config root (default: --config, $CAMPAIGND_CONFIG, .)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


# ------------------------------------------------------------------ schema


def cmd_schema(args: argparse.Namespace) -> int:
    from .config.schema import json_schemas

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


# ------------------------------------------------------------------ plan


def cmd_plan(args: argparse.Namespace) -> int:
    from .planning import build_plan

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


# ------------------------------------------------------------------ control (HTTP API)


def api_call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    from .client import ApiClient

    return ApiClient.from_config(config_root(args), url=getattr(args, "api", None)).call(
        method, path, body
    )


def _api_or_fail(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    from .errors import ApiError

    try:
        return api_call(args, method, path, body)
    except ApiError as exc:
        err.print(f"error: {exc}")
        raise SystemExit(1) from None


def _add_api_args(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    p.add_argument("--api", metavar="URL", help="daemon API base URL (default: from http.listen)")
    if json_flag:
        p.add_argument("--json", action="store_true")


def cmd_status(args: argparse.Namespace) -> int:
    data = _api_or_fail(args, "GET", "/api/status")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    cfg = data["config"]
    out.print(
        f"campaignd {data['version']} {data['state']} — config generation {cfg['generation']} "
        f"loaded {cfg['loaded_at']}, {data['in_flight']} in flight"
    )
    for p in data["load_errors"]:
        out.print(f"  [yellow]{p['file']}:{p['line']}: {p['message']}[/yellow]", markup=True)
    st = Table("service", "host", "rate", "breaker")
    for s in data["services"]:
        br = s.get("breaker") or {}
        state = br.get("state", "?")
        if br.get("reason"):
            state += f" ({br['reason']})"
        st.add_row(s["id"], s["host"], ", ".join(s["rate"]) or "-", state)
    out.print(st)
    _print_campaigns(data["campaigns"])
    return 0


def _print_campaigns(items: list[dict[str, Any]]) -> None:
    t = Table(
        "campaign", "state", "total", "sent", "queued", "deferred", "failed", "bounced", "eta"
    )
    for c in items:
        k = c.get("counts", {})
        state = c["state"] + (f" — {c['reason']}" if c.get("reason") else "")
        t.add_row(
            c["id"], state, str(c.get("total", 0)), str(k.get("sent", 0)), str(k.get("queued", 0)),
            str(k.get("deferred", 0)), str(k.get("failed", 0)), str(k.get("bounced", 0)),
            c.get("eta") or "-",
        )  # fmt: skip
    out.print(t)


@command("status", "daemon, services and campaigns at a glance")
def _status_args(p: argparse.ArgumentParser) -> None:
    _add_api_args(p)


def _control(action: str) -> Handler:
    def handle(args: argparse.Namespace) -> int:
        data = _api_or_fail(args, "POST", f"/api/campaigns/{args.campaign}/{action}")
        out.print(f"{data['id']}: {data['state']}")
        return 0

    return handle


cmd_pause = _control("pause")
cmd_resume = _control("resume")
cmd_stop = _control("stop")


def _campaign_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    _add_api_args(p, json_flag=False)


command("pause", "stop claiming new messages for a campaign (in-flight ones finish)")(_campaign_arg)
command("resume", "resume a paused campaign")(_campaign_arg)
command("stop", "stop a campaign for good (a pause that cannot be resumed)")(_campaign_arg)


def cmd_log(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    query: dict[str, str] = {"limit": "1000"}
    if args.status:
        query["status"] = args.status
    rows: list[dict[str, Any]] = []
    after: int | None = None
    while len(rows) < args.limit:
        if after is not None:
            query["after"] = str(after)
        page = _api_or_fail(
            args, "GET", f"/api/campaigns/{args.campaign}/messages?{urlencode(query)}"
        )
        rows.extend(page["messages"])
        after = page.get("next_after")
        if after is None:
            break
    rows = rows[: args.limit]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.csv:
        import csv

        writer = csv.writer(sys.stdout)
        cols = ["id", "recipient", "step", "template", "service", "status", "attempts",
                "last_error", "updated_at", "sent_at"]  # fmt: skip
        writer.writerow(cols)
        for r in rows:
            writer.writerow([r.get(c, "") for c in cols])
        return 0
    t = Table("id", "recipient", "step", "template", "service", "status", "attempts", "last error")
    for r in rows:
        t.add_row(
            str(r["id"]), r["recipient"], str(r["step"]), r.get("template") or "",
            r.get("service") or "", r["status"], str(r.get("attempts", 0)),
            r.get("last_error") or "",
        )  # fmt: skip
    out.print(t)
    return 0


@command("log", "the messages of a campaign with their status and last error")
def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    p.add_argument("--status", help="only this status (e.g. failed)")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--csv", action="store_true")
    _add_api_args(p)


def cmd_retry(args: argparse.Namespace) -> int:
    statuses = [s for s, on in (("failed", args.failed), ("uncertain", args.uncertain)) if on]
    if not statuses:
        err.print("say what to re-queue: --failed and/or --uncertain")
        return 2
    data = _api_or_fail(
        args, "POST", f"/api/campaigns/{args.campaign}/retry", {"statuses": statuses}
    )
    out.print(f"{data['id']}: re-queued {data['requeued']} messages ({', '.join(statuses)})")
    return 0


@command("retry", "re-queue failed or uncertain messages (the operator's decision)")
def _retry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    p.add_argument("--failed", action="store_true")
    p.add_argument("--uncertain", action="store_true")
    _add_api_args(p, json_flag=False)


# ------------------------------------------------------------------ services and the sink


def cmd_test_service(args: argparse.Namespace) -> int:
    import asyncio

    from .delivery.servicetest import test_service

    result = load(args)
    svc = result.config.services.get(args.service)
    if svc is None:
        print_problems(result, only_for=args.service)
        err.print(f"error: no valid service {args.service!r} in {result.config.root}/services.d")
        return 1
    report = asyncio.run(test_service(args.service, svc, to=args.to))
    out.print(report.render())
    return 0 if report.ok else 1


@command("test-service", "connect, TLS, AUTH, and optionally send a test message")
def _test_service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("service")
    p.add_argument("--to", metavar="ADDR", help="also send a small test message to ADDR")


def cmd_sink(args: argparse.Namespace) -> int:
    from .sink import run_sink

    return run_sink(args.listen, Path(args.maildir) if args.maildir else None)


@command("sink", "a local SMTP sink for trying things out")
def _sink_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", default="127.0.0.1:2525")
    p.add_argument("--maildir", metavar="DIR", help="also store every message in this Maildir")


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
