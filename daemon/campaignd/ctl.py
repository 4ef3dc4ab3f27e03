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


def lint_errors(result: LoadResult) -> list[tuple[str, str]]:
    """The deliverability lint of every valid campaign, without DNS: (campaign, message) of its
    errors only — warnings stay with ``campaignctl lint`` so validate's output stays short."""
    from .lint import lint_campaign

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
    for s in data["services"].values():
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


def _log_query(args: argparse.Namespace) -> dict[str, str]:
    query: dict[str, str] = {}
    for name in ("status", "step", "template", "service", "recipient"):
        value = getattr(args, name, None)
        if value is not None:
            query[name] = str(value)
    return query


def cmd_log(args: argparse.Namespace) -> int:
    from urllib.parse import quote, urlencode

    from .client import ApiClient
    from .errors import ApiError

    campaign = quote(args.campaign, safe="")
    query = _log_query(args)
    if args.csv:
        # The daemon streams the CSV (formula cells neutralised); we pass it through as it comes.
        client = ApiClient.from_config(config_root(args), url=args.api)
        path = f"/api/campaigns/{campaign}/log.csv" + (f"?{urlencode(query)}" if query else "")
        try:
            for block in client.download(path):
                sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()
        except ApiError as exc:
            err.print(f"error: {exc}")
            return 1
        return 0
    query["limit"] = str(min(max(args.limit, 1), 1000))
    rows: list[dict[str, Any]] = []
    after: int | None = None
    while len(rows) < args.limit:
        if after is not None:
            query["after"] = str(after)
        page = _api_or_fail(args, "GET", f"/api/campaigns/{campaign}/messages?{urlencode(query)}")
        rows.extend(page["messages"])
        after = page.get("next_after")
        if after is None:
            break
    rows = rows[: args.limit]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    t = Table("id", "recipient", "step", "template", "service", "status", "attempts", "last error")
    for r in rows:
        t.add_row(
            str(r["id"]), r["recipient"], str(r["step"]), r.get("template") or "",
            r.get("service") or "", r["status"], str(r.get("attempts", 0)),
            r.get("last_error") or "",
        )  # fmt: skip
    out.print(t)
    if len(rows) == args.limit and after is not None:
        err.print(f"(first {args.limit} shown: --limit N for more, --csv for all)")
    return 0


@command("log", "the messages of a campaign with their status and last error")
def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    p.add_argument("--status", help="only this status (e.g. failed)")
    p.add_argument("--step", type=int, help="only this drip step (1-based)")
    p.add_argument("--template", help="only this template (A/B variant)")
    p.add_argument("--service", help="only messages sent through this service")
    p.add_argument("--recipient", metavar="EMAIL", help="only this recipient")
    p.add_argument("--limit", type=int, default=1000, help="rows in the table (default 1000)")
    p.add_argument("--csv", action="store_true", help="every matching message as CSV on stdout")
    _add_api_args(p)


def cmd_delete(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    data = _api_or_fail(args, "DELETE", f"/api/campaigns/{quote(args.campaign, safe='')}")
    out.print(f"{data['id']}: deleted the records of {data['deleted']} messages")
    return 0


@command("delete", "delete a stopped or finished campaign's records (suppressions stay)")
def _delete_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    _add_api_args(p, json_flag=False)


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


# ------------------------------------------------------------------ suppressions


def cmd_suppress(args: argparse.Namespace) -> int:
    from urllib.parse import quote, urlencode

    from .client import ApiClient
    from .errors import ApiError

    action = args.suppress_action
    if action == "add":
        body: dict[str, Any] = {"addresses": args.addresses}
        if args.reason:
            body["reason"] = args.reason
        data = _api_or_fail(args, "POST", "/api/suppressions", body)
        out.print(f"added {data['added']}, already suppressed {data['already']}")
        return 0
    if action == "remove":
        missing = 0
        for address in args.addresses:
            data = _api_or_fail(args, "DELETE", f"/api/suppressions/{quote(address, safe='@')}")
            if not data["removed"]:
                missing += 1
                err.print(f"{address} was not on the suppression list")
        out.print(f"removed {len(args.addresses) - missing}")
        return 0
    client = ApiClient.from_config(config_root(args), url=args.api)
    try:
        if action == "import":
            path = Path(args.file)
            if not path.is_file():
                err.print(f"error: {path}: no such file")
                return 1
            query = f"?{urlencode({'reason': args.reason})}" if args.reason else ""
            with path.open("rb") as fh:
                data = client.upload(
                    f"/api/suppressions/import{query}", fh, path.stat().st_size, "text/csv"
                )
            out.print(
                f"read {data['read']} addresses: {data['added']} added, "
                f"{data['read'] - data['added'] - data['invalid']} already suppressed, "
                f"{data['invalid']} invalid"
            )
            for sample in data.get("invalid_samples", []):
                err.print(f"  invalid {sample}")
            return 0
        if action == "export":
            for block in client.download("/api/suppressions.csv"):
                sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()
            return 0
        # list
        rows: list[dict[str, Any]] = []
        after: str | None = None
        while len(rows) < args.limit:
            q = {"limit": str(min(max(args.limit, 1), 10000))}
            if after is not None:
                q["after"] = after
            page = client.call("GET", f"/api/suppressions?{urlencode(q)}")
            rows.extend(page["suppressions"])
            after = page.get("next_after")
            if after is None:
                break
    except ApiError as exc:
        err.print(f"error: {exc}")
        return 1
    rows = rows[: args.limit]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    t = Table("address", "reason", "source", "campaign", "since")
    for r in rows:
        t.add_row(r["key"], r["reason"], r["source"], r.get("campaign_id") or "", r["created_at"])
    out.print(t)
    return 0


@command("suppress", "the global suppression list: add, remove, list, import, export")
def _suppress_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="suppress_action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="suppress addresses")
    add.add_argument("addresses", nargs="+", metavar="EMAIL")
    add.add_argument("--reason", help='kept with each address (default "added by operator")')
    remove = sub.add_parser("remove", help="lift the suppression of addresses")
    remove.add_argument("addresses", nargs="+", metavar="EMAIL")
    listing = sub.add_parser("list", help="the list, in address order")
    listing.add_argument("--limit", type=int, default=1000)
    listing.add_argument("--json", action="store_true")
    imp = sub.add_parser("import", help="a CSV with an email column, or one address a line")
    imp.add_argument("file")
    imp.add_argument("--reason", help='kept with each address (default "imported")')
    export = sub.add_parser("export", help="the whole list as CSV on stdout")
    for sp in (add, remove, listing, imp, export):
        sp.add_argument("--api", metavar="URL", help="daemon API base URL")
        sp.add_argument("--config", metavar="ROOT", default=argparse.SUPPRESS, help="config root")


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


from .ctl_lint import add_lint_args, cmd_lint  # noqa: E402, F401 - cmd_lint: see command()

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
