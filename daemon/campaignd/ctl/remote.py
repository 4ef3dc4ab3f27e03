"""campaignctl's control commands: they talk to the running daemon's HTTP API (SPEC §4, §5)
— status, pause/resume/stop, log, retry, delete, suppress and test-service."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from .commands import Handler, command, config_root, err, load, out, print_problems

# ------------------------------------------------------------------ control (HTTP API)


def api_call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    from .client import ApiClient

    return ApiClient.from_config(config_root(args), url=getattr(args, "api", None)).call(
        method, path, body
    )


def _api_or_fail(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    from ..errors import ApiError

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

    from ..errors import ApiError
    from .client import ApiClient

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

    from ..errors import ApiError
    from .client import ApiClient

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

    from ..delivery.servicetest import test_service

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
