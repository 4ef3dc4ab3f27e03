"""campaignctl's control commands: they talk to the running daemon's HTTP API (SPEC §4, §5)
— status, campaigns, pause/resume/stop, log, retry, delete, suppress and test-service.

Every command takes ``--json``; tables go through ``print_table`` (TSV when piped)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

from .commands import (
    Handler,
    command,
    config_root,
    emit_json,
    err,
    load,
    out,
    print_problems,
    print_table,
)

# ------------------------------------------------------------------ control (HTTP API)


def api_call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    from .client import ApiClient

    return ApiClient.from_config(config_root(args), url=getattr(args, "api", None)).call(
        method, path, body
    )


def _api_or_fail(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Any = None,
    *,
    json_out: bool | None = None,
) -> Any:
    """The API's answer, or exit 1 saying why (as ``{"ok": false, "error": …}`` with --json)."""
    from ..errors import ApiError

    try:
        return api_call(args, method, path, body)
    except ApiError as exc:
        if json_out if json_out is not None else getattr(args, "json", False):
            emit_json({"ok": False, "error": str(exc)})
        err.print(f"error: {exc}", markup=False)
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
        out.print(f"  {p['file']}:{p['line']}: {p['message']}", markup=False, style="yellow")
    rows = []
    for s in data["services"].values():
        br = s.get("breaker") or {}
        state = br.get("state", "?")
        if br.get("reason"):
            state += f" ({br['reason']})"
        rows.append((s["id"], s["host"], ", ".join(s["rate"]) or "-", state))
    print_table(("service", "host", "rate", "breaker"), rows)
    _print_campaigns(data["campaigns"])
    return 0


def _print_campaigns(items: list[dict[str, Any]]) -> None:
    rows = []
    for c in items:
        k = c.get("counts", {})
        state = c["state"] + (f" — {c['reason']}" if c.get("reason") else "")
        rows.append((
            c["id"], state, c.get("total", 0), k.get("sent", 0), k.get("queued", 0),
            k.get("deferred", 0), k.get("failed", 0), k.get("bounced", 0), c.get("eta") or "-",
        ))  # fmt: skip
    print_table(
        ("campaign", "state", "total", "sent", "queued", "deferred", "failed", "bounced", "eta"),
        rows,
    )


@command("status", "daemon, services and campaigns at a glance")
def _status_args(p: argparse.ArgumentParser) -> None:
    _add_api_args(p)


FINAL_STATES = frozenset({"stopped", "completed"})
# What each action leaves a campaign in when it did what was asked.
_DONE = {"pause": {"paused"}, "resume": {"sending", "waiting", "scheduled"}, "stop": {"stopped"}}


def control_verdict(action: str, state: str) -> tuple[bool, str | None]:
    """(ok, why not) for the state a pause/resume/stop answered — pure, for the table test.

    The API is idempotent and answers the state; the operator needs to hear when the action
    could not apply: stop is final, a completed campaign has nothing left to pause.
    """
    if state in _DONE[action]:
        return True, None
    if state in FINAL_STATES:
        if action == "resume" and state == "stopped":
            return False, "stop is final — a stopped campaign cannot be resumed"
        if action == "stop":  # completed: nothing left to stop
            return True, "already completed — nothing left to stop"
        return False, f"the campaign is {state}, which is final — there is nothing to {action}"
    if action == "resume":
        return True, f"it was not paused ({state})"
    return True, None


def _control(action: str) -> Handler:
    def handle(args: argparse.Namespace) -> int:
        from urllib.parse import quote

        cid = quote(args.campaign, safe="")
        data = _api_or_fail(args, "POST", f"/api/campaigns/{cid}/{action}", json_out=args.json)
        ok, why = control_verdict(action, data["state"])
        if args.json:
            emit_json({**data, "action": action, "ok": ok, "message": why})
        elif ok:
            out.print(f"{data['id']}: {data['state']}" + (f" ({why})" if why else ""))
        else:
            err.print(f"{data['id']}: {data['state']} — cannot {action}: {why}", markup=False)
        return 0 if ok else 1

    return handle


cmd_pause = _control("pause")
cmd_resume = _control("resume")
cmd_stop = _control("stop")


def _campaign_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    _add_api_args(p)


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
        emit_json(rows)
        return 0
    print_table(
        ("id", "recipient", "step", "template", "service", "status", "attempts", "last error"),
        [
            (r["id"], r["recipient"], r["step"], r.get("template") or "", r.get("service") or "",
             r["status"], r.get("attempts", 0), r.get("last_error") or "")
            for r in rows
        ],
    )  # fmt: skip
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
    if args.json:
        emit_json({"ok": True, **data})
        return 0
    out.print(f"{data['id']}: deleted the records of {data['deleted']} messages")
    return 0


@command("delete", "delete a stopped or finished campaign's records (suppressions stay)")
def _delete_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    _add_api_args(p)


def cmd_retry(args: argparse.Namespace) -> int:
    statuses = [s for s, on in (("failed", args.failed), ("uncertain", args.uncertain)) if on]
    if not statuses:
        err.print("say what to re-queue: --failed and/or --uncertain")
        return 2
    from urllib.parse import quote

    cid = quote(args.campaign, safe="")
    data = _api_or_fail(args, "POST", f"/api/campaigns/{cid}/retry", {"statuses": statuses})
    if args.json:
        emit_json({"ok": True, **data, "statuses": statuses})
        return 0
    out.print(f"{data['id']}: re-queued {data['requeued']} messages ({', '.join(statuses)})")
    return 0


@command("retry", "re-queue failed or uncertain messages (the operator's decision)")
def _retry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    p.add_argument("--failed", action="store_true")
    p.add_argument("--uncertain", action="store_true")
    _add_api_args(p)


# ------------------------------------------------------------------ suppressions

STDIN_NAMES = frozenset({"-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})


def _import_source(name: str) -> tuple[IO[bytes], int] | str:
    """(a seekable binary file, its size) to upload, or why not.

    The upload needs its length first, so standard input (``-``, ``/dev/stdin``) and other
    streams (a FIFO, ``<(…)``) are spooled to a temporary file — constant memory either way.
    """
    import shutil
    import tempfile

    if name in STDIN_NAMES:
        stream: IO[bytes] = sys.stdin.buffer
    else:
        path = Path(name)
        if path.is_file():
            fh = path.open("rb")
            return fh, path.stat().st_size
        if not path.exists():
            return f"{path}: no such file (use - to read standard input)"
        if path.is_dir():
            return f"{path}: is a directory — give a CSV or text file"
        try:
            stream = path.open("rb")
        except OSError as exc:
            return f"{path}: cannot read it: {exc.strerror}"
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned open, closed by the caller
    shutil.copyfileobj(stream, spool)
    size = spool.tell()
    spool.seek(0)
    return spool, size


def _suppression_rows(client: Any, limit: int | None) -> list[dict[str, Any]]:
    from urllib.parse import urlencode

    rows: list[dict[str, Any]] = []
    after: str | None = None
    while limit is None or len(rows) < limit:
        page_size = 10000 if limit is None else min(max(limit, 1), 10000)
        q = {"limit": str(page_size)}
        if after is not None:
            q["after"] = after
        page = client.call("GET", f"/api/suppressions?{urlencode(q)}")
        rows.extend(page["suppressions"])
        after = page.get("next_after")
        if after is None:
            break
    return rows if limit is None else rows[:limit]


def cmd_suppress(args: argparse.Namespace) -> int:
    from urllib.parse import quote, urlencode

    from ..errors import ApiError
    from .client import ApiClient

    action = args.suppress_action
    as_json = getattr(args, "json", False)
    if action == "add":
        body: dict[str, Any] = {"addresses": args.addresses}
        if args.reason:
            body["reason"] = args.reason
        data = _api_or_fail(args, "POST", "/api/suppressions", body)
        if as_json:
            emit_json({"ok": True, **data})
        else:
            out.print(f"added {data['added']}, already suppressed {data['already']}")
        return 0
    if action == "remove":
        removed: list[str] = []
        missing: list[str] = []
        for address in args.addresses:
            data = _api_or_fail(args, "DELETE", f"/api/suppressions/{quote(address, safe='@')}")
            (removed if data["removed"] else missing).append(address)
        if as_json:
            emit_json({"ok": True, "removed": removed, "not_suppressed": missing})
            return 0
        for address in missing:
            err.print(f"{address} was not on the suppression list", markup=False)
        out.print(f"removed {len(removed)}")
        return 0
    client = ApiClient.from_config(config_root(args), url=args.api)
    try:
        if action == "import":
            source = _import_source(args.file)
            if isinstance(source, str):
                if as_json:
                    emit_json({"ok": False, "error": source})
                err.print(f"error: {source}", markup=False)
                return 1
            fh, size = source
            query = f"?{urlencode({'reason': args.reason})}" if args.reason else ""
            with fh:
                data = client.upload(f"/api/suppressions/import{query}", fh, size, "text/csv")
            if as_json:
                emit_json({"ok": True, **data})
                return 0
            out.print(
                f"read {data['read']} addresses: {data['added']} added, "
                f"{data['read'] - data['added'] - data['invalid']} already suppressed, "
                f"{data['invalid']} invalid"
            )
            for sample in data.get("invalid_samples", []):
                err.print(f"  invalid {sample}", markup=False)
            return 0
        if action == "export":
            if as_json:
                emit_json(_suppression_rows(client, None))
                return 0
            for block in client.download("/api/suppressions.csv"):
                sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()
            return 0
        rows = _suppression_rows(client, args.limit)
    except ApiError as exc:
        if as_json:
            emit_json({"ok": False, "error": str(exc)})
        err.print(f"error: {exc}", markup=False)
        return 1
    if as_json:
        emit_json(rows)
        return 0
    print_table(
        ("address", "reason", "source", "campaign", "since"),
        [(r["key"], r["reason"], r["source"], r.get("campaign_id") or "", r["created_at"])
         for r in rows],
    )  # fmt: skip
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
    imp = sub.add_parser(
        "import", help="a CSV with an email column, or one address a line (- : standard input)"
    )
    imp.add_argument("file", help="a file, or - (or /dev/stdin) for standard input")
    imp.add_argument("--reason", help='kept with each address (default "imported")')
    export = sub.add_parser("export", help="the whole list as CSV on stdout (--json: as JSON)")
    for sp in (add, remove, listing, imp, export):
        sp.add_argument("--api", metavar="URL", help="daemon API base URL")
        sp.add_argument("--config", metavar="ROOT", default=argparse.SUPPRESS, help="config root")
        sp.add_argument("--json", action="store_true", help="machine-readable output")


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
    if args.json:
        emit_json(report.as_dict())
    else:
        out.print(report.render(), markup=False)
    return 0 if report.ok else 1


@command("test-service", "connect, TLS, AUTH, and optionally send a test message")
def _test_service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("service")
    p.add_argument("--to", metavar="ADDR", help="also send a small test message to ADDR")
    p.add_argument("--json", action="store_true", help="machine-readable output")


# ------------------------------------------------------------------ campaigns


def cmd_campaigns(args: argparse.Namespace) -> int:
    """From the daemon when it answers (its database is the truth); else from the files."""
    from ..errors import ApiError
    from .client import ApiClient

    client = ApiClient.from_config(config_root(args), url=args.api)
    try:
        items = client.call("GET", "/api/campaigns")
        source = f"daemon at {client.base}"
        unreachable = None
    except ApiError as exc:
        if "cannot reach the daemon" not in str(exc):
            if args.json:
                emit_json({"ok": False, "error": str(exc)})
            err.print(f"error: {exc}", markup=False)
            return 1
        items = _campaigns_from_files(args)
        source = f"config files in {config_root(args)} (the daemon is not running)"
        unreachable = str(exc)
    rows = [_campaign_row(c) for c in items]
    if args.json:
        emit_json({"source": source, "campaigns": rows})
        return 0
    err.print(f"source: {source}", markup=False)
    if unreachable:
        err.print("  states and progress are the files' view only; start campaignd for more",
                  markup=False)  # fmt: skip
    print_table(
        ("campaign", "state", "progress", "next send", "reason"),
        [(r["id"], r["state"], r["progress"], r["next_send"] or "-", r["reason"] or "")
         for r in rows],
    )  # fmt: skip
    return 0


def _campaign_row(c: dict[str, Any]) -> dict[str, Any]:
    """One line of ``campaignctl campaigns``: id, state, progress, next send, reason."""
    total = c.get("total") or 0
    progress = c.get("progress")  # percent of the messages in a final state
    if total and isinstance(progress, (int, float)):
        shown = f"{progress:g}% of {total}"
    else:
        shown = f"0 of {total}" if total else "-"
    editions = c.get("editions") or {}
    next_send = (
        c.get("next_step_at") or editions.get("next_at") or c.get("next_window") or c.get("eta")
    )
    if c.get("state") in ("stopped", "completed", "paused", "failed"):
        next_send = None
    return {
        "id": c["id"],
        "name": c.get("name") or c["id"],
        "state": c.get("state", "?"),
        "progress": shown,
        "total": total,
        "next_send": next_send,
        "reason": c.get("reason"),
    }


def _campaigns_from_files(args: argparse.Namespace) -> list[dict[str, Any]]:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from ..plan.campaign import first_send

    result = load(args)
    now = datetime.now(UTC)
    zone = ZoneInfo(result.config.settings.timezone)
    items: list[dict[str, Any]] = []
    for cid, campaign in sorted(result.config.campaigns.items()):
        items.append({
            "id": cid, "name": campaign.name or cid,
            "state": "paused" if campaign.paused else "not started",
            "reason": "paused: true in the file" if campaign.paused else None,
            "next_window": None if campaign.paused else first_send(campaign, now, zone).isoformat(),
        })  # fmt: skip
    for cid in sorted(result.broken["campaign"]):
        items.append({"id": cid, "state": "invalid", "reason": "`campaignctl validate` says why"})
    return items


@command("campaigns", "every campaign: state, progress, next send, reason")
def _campaigns_args(p: argparse.ArgumentParser) -> None:
    _add_api_args(p)


# ------------------------------------------------------------------ why


def cmd_why(args: argparse.Namespace) -> int:
    from urllib.parse import quote, urlencode

    cid = quote(args.campaign, safe="")
    query = urlencode({"recipient": args.email})
    story = _api_or_fail(args, "GET", f"/api/campaigns/{cid}/why?{query}")
    found = bool(story["messages"] or story["recipient"])
    if args.json:
        emit_json({"ok": found, **story})
        return 0 if found else 1
    for line in why_lines(story):
        out.print(line, markup=False)
    return 0 if found else 1


def why_lines(story: dict[str, Any]) -> list[str]:
    """``campaignctl why``'s text: the recipient's whole story in one campaign — pure, so the
    wording is tested without a daemon."""
    lines = [f"{story['address']} in campaign {story['campaign']}:"]
    sup = story.get("suppression")
    messages = story["messages"]
    rc = story.get("recipient")
    if not messages and rc is None:
        lines.append(
            "  nothing recorded: no row of the campaign's lists had this address when it "
            "enrolled (or enrollment has not run yet) — `campaignctl plan` shows today's lists"
        )
    if rc is not None:
        lines.append(
            f"  list row {rc['source']}, recorded {rc['enrolled_at']}"
            + (f", removed from the lists {rc['removed_at']}" if rc.get("removed_at") else "")
        )
    for msg in messages:
        lines.extend(_message_lines(msg))
    if sup is not None:
        by = sup["source"] + (f", campaign {sup['campaign_id']}" if sup.get("campaign_id") else "")
        lines.append(
            f"  on the suppression list since {sup['created_at']}: {sup['reason']} ({by}) — "
            "nothing more is sent to this address"
        )
    return lines


def _message_lines(msg: dict[str, Any]) -> list[str]:
    edition = f"edition {msg['edition']}, " if msg.get("edition") else ""
    head = f"  {edition}step {msg['step']}"
    if msg.get("excluded"):
        # recorded at enrollment instead of a message: the row and why it was not enrolled
        shown = f" {msg['email']!r}" if msg["excluded"] in ("invalid", "duplicate") else ""
        return [
            f"{head}: {msg['status']} at enrollment {msg['created_at']} — row "
            f"{msg.get('source') or '?'}{shown}: {msg.get('last_error') or msg['excluded']}"
        ]
    status = msg["status"]
    when = {
        "sent": msg.get("sent_at"),
        "queued": msg.get("next_attempt_at"),
        "deferred": msg.get("next_attempt_at"),
    }.get(status) or msg.get("updated_at")
    word = {"queued": "due", "deferred": "next try"}.get(status, "at")
    parts = [f"{head} (template {msg['template']}): {status} {word} {when}"]
    if msg.get("service"):
        parts.append(f"via {msg['service']}")
    if msg.get("attempts"):
        parts.append(f"attempts {msg['attempts']}")
    line = ", ".join(parts)
    reply = " ".join(
        str(v) for v in (msg.get("last_code"), msg.get("last_enhanced")) if v is not None
    )
    if msg.get("last_error") or reply:
        line += f" — {(reply + ' ' + (msg.get('last_error') or '')).strip()}"
    if msg.get("message_id"):
        line += f" [{msg['message_id']}]"
    out = [line]
    for ev in msg.get("events", []):
        detail = " ".join(
            str(v) for v in (ev.get("code"), ev.get("enhanced"), ev.get("detail")) if v
        )
        out.append(
            f"      {ev['kind']} {ev['at']} (source {ev['source']})"
            + (f": {detail}" if detail else "")
        )
    return out


@command("why", "one recipient's whole story in a campaign: each step, or why not enrolled")
def _why_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    p.add_argument("email", help="the address as the list has it (any case)")
    _add_api_args(p)
