"""The HTTP API against the daemon as a process (SPEC §5): the message log and its CSV,
summaries, delete, the suppression list through campaignctl, /metrics, and the hardening —
no input yields a 500, Host allow-list, no cross-site form posts, security headers."""

from __future__ import annotations

import csv
import http.client
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.smtp.servers import RecordingServer

from .conftest import MakeDaemon, basic_root
from .harness import DaemonProcess, recipients_csv, wait_for

pytestmark = pytest.mark.system

J = {"Content-Type": "application/json"}
AB_FILES = {
    "templates.d/a.yaml": "subject: A {{ first_name }}\ntext: 'A {{ first_name }}'\n",
    "templates.d/b.yaml": "subject: B {{ first_name }}\ntext: 'B {{ first_name }}'\n",
    "campaigns.d/news.yaml": (
        "name: News\nkind: transactional\naudience: lists/people.csv\nservices: [sink]\n"
        "template: [a, b]\n"
    ),
}


def raw(
    d: DaemonProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    token: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    """Any request at all (http.client sends the path as given), with the token by default."""
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=15)
    try:
        all_headers = {"Host": f"127.0.0.1:{d.port}", "Content-Length": str(len(body or b""))}
        if token and d.token:
            all_headers["Authorization"] = f"Bearer {d.token}"
        all_headers.update(headers or {})
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in all_headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_message_log_pages_filters_summary_and_csv(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    people = recipients_csv(28) + "=2+5@example.com,Eve\n-minus@example.com,Min\n"
    root = basic_root(tmp_path, smtp.port, extra_files={**AB_FILES, "lists/people.csv": people})
    smtp.reply("rcpt", "550 5.1.1 <user3@example.com>: no such user", address="user3@example.com")
    daemon = make_daemon(root).start()
    summary = daemon.wait_state("news", "completed")

    # --- summary: A/B split, steps, times, progress
    assert summary["total"] == 30 and summary["counts"]["bounced"] == 1
    variants = summary["by_template"]
    assert set(variants) == {"a", "b"} and variants["a"]["total"] + variants["b"]["total"] == 30
    assert variants["a"]["sent"] + variants["b"]["sent"] == 29
    assert summary["by_step"]["1"]["total"] == 30
    assert summary["started_at"] and summary["finished_at"] >= summary["started_at"]
    assert summary["progress"] == 100.0 and summary["eta"] is None
    (note,) = summary["last_errors"]
    assert note["recipient"] == "user3@example.com" and "5.1.1" in note["error"]

    # --- keyset pages: every message once, in id order
    seen: list[int] = []
    after = None
    while True:
        q = "?limit=7" + ("" if after is None else f"&after={after}")
        page = daemon.get(f"/api/campaigns/news/messages{q}")
        assert len(page["messages"]) <= 7
        seen += [m["id"] for m in page["messages"]]
        after = page["next_after"]
        if after is None:
            break
    assert len(seen) == 30 and seen == sorted(set(seen))

    # --- filters
    def only(query: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = daemon.get(f"/api/campaigns/news/messages?{query}")[
            "messages"
        ]
        return result

    (bounced,) = only("status=bounced")
    assert bounced["recipient"] == "user3@example.com" and bounced["last_enhanced"] == "5.1.1"
    assert [m["recipient"] for m in only("recipient=USER5@Example.com")] == ["user5@example.com"]
    assert len(only("template=a&limit=1000")) == variants["a"]["total"]
    assert {m["template"] for m in only("template=b")} == {"b"}
    assert len(only("service=sink&step=1&limit=1000")) == 30
    assert only("step=2") == [] and only("service=other") == []

    # --- the CSV log: streamed, one row per message, formula cells neutralised
    status, headers, body = raw(daemon, "GET", "/api/campaigns/news/log.csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert headers["transfer-encoding"] == "chunked"  # streamed, not built in memory
    assert 'filename="news-messages.csv"' in headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert len(rows) == 30
    by = {r["email"]: r for r in rows}
    assert "'=2+5@example.com" in by  # shown as text, never run
    assert "'-minus@example.com" in by
    assert "5.1.1" in by["user3@example.com"]["last_error"]
    assert by["user3@example.com"]["status"] == "bounced"
    assert all(r["sent_at"] for r in rows if r["status"] == "sent")
    _, _, failed_only = raw(daemon, "GET", "/api/campaigns/news/log.csv?status=bounced")
    assert len(list(csv.DictReader(io.StringIO(failed_only.decode())))) == 1

    # --- campaignctl log, as a table and as CSV
    result = daemon.ctl("log", "news", "--status", "bounced", "--json")
    assert result.returncode == 0, result.stderr
    assert [r["recipient"] for r in json.loads(result.stdout)] == ["user3@example.com"]
    result = daemon.ctl("log", "news", "--template", "a", "--limit", "3")
    assert result.returncode == 0 and "first 3 shown" in result.stderr
    result = daemon.ctl("log", "news", "--csv")
    assert result.returncode == 0, result.stderr
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 30
    result = daemon.ctl("log", "nope")
    assert result.returncode == 1 and "404" in result.stderr


def test_delete_keeps_suppressions_and_refuses_while_the_file_exists(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(
        tmp_path,
        smtp.port,
        recipients=6,
        extra_files={
            "campaigns.d/slow.yaml": (
                "kind: transactional\naudience: lists/people.csv\nservices: [sink]\n"
                "template: hello\nrate: 1/hour\n"
            ),
        },
    )
    smtp.reply("rcpt", "550 5.1.1 gone", address="user1@example.com")
    daemon = make_daemon(root).start()
    daemon.wait_state("news", "completed")
    daemon.wait_state("slow", "sending")

    status, _, body = raw(daemon, "DELETE", "/api/campaigns/news")
    assert status == 409 and b"still there" in body  # the file would start it again
    (root / "campaigns.d" / "news.yaml").unlink()
    wait_for("the reload", lambda: not daemon.campaign("news")["in_config"])
    (root / "campaigns.d" / "slow.yaml").unlink()
    wait_for("the reload", lambda: not daemon.campaign("slow")["in_config"])
    result = daemon.ctl("delete", "slow")  # paused by the reload, not stopped: refused
    assert result.returncode == 1 and "stop it first" in result.stderr

    result = daemon.ctl("delete", "news")
    assert result.returncode == 0, result.stderr
    assert "6 messages" in result.stdout
    assert raw(daemon, "GET", "/api/campaigns/news")[0] == 404
    assert raw(daemon, "DELETE", "/api/campaigns/news")[0] == 404
    keys = [s["key"] for s in daemon.get("/api/suppressions")["suppressions"]]
    assert keys == ["user1@example.com"]  # the bounce outlives the campaign

    daemon.post("/api/campaigns/slow/stop")
    assert daemon.ctl("delete", "slow").returncode == 0
    assert [c["id"] for c in daemon.get("/api/campaigns")] == []


def test_suppress_commands_and_the_dispatcher_honours_them(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(tmp_path, smtp.port, recipients=8)
    (root / "campaigns.d" / "news.yaml").rename(root / "later.yaml")
    daemon = make_daemon(root).start()

    ok = daemon.ctl(
        "suppress", "add", "User0@Example.com", "user1@example.com", "--reason", "asked"
    )
    assert ok.returncode == 0 and "added 2" in ok.stdout, ok.stderr
    assert "already suppressed 1" in daemon.ctl("suppress", "add", "user0@example.com").stdout
    bad = daemon.ctl("suppress", "add", "not-an-address")
    assert bad.returncode == 1 and "not an email address" in bad.stderr
    imported = tmp_path / "old-optouts.csv"
    imported.write_text(
        "name,Email\nTwo,user2@example.com\nDup,user0@example.com\nJunk,nonsense\n\n"
        "Three,user3@example.com\n"
    )
    result = daemon.ctl("suppress", "import", str(imported), "--reason", "old list")
    assert result.returncode == 0, result.stderr
    assert "read 4 addresses: 2 added, 1 already suppressed, 1 invalid" in result.stdout
    assert "line 4" in result.stderr
    listed = json.loads(daemon.ctl("suppress", "list", "--json").stdout)
    assert [(r["key"], r["reason"], r["source"]) for r in listed] == [
        ("user0@example.com", "asked", "operator"),
        ("user1@example.com", "asked", "operator"),
        ("user2@example.com", "old list", "import"),
        ("user3@example.com", "old list", "import"),
    ]
    removed = daemon.ctl("suppress", "remove", "user3@example.com", "nobody@example.com")
    assert removed.returncode == 0 and "removed 1" in removed.stdout
    assert "nobody@example.com was not on the suppression list" in removed.stderr
    exported = daemon.ctl("suppress", "export")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["email"] for r in rows] == [f"user{i}@example.com" for i in range(3)]
    assert all(r["created_at"] for r in rows)

    (root / "later.yaml").rename(root / "campaigns.d" / "news.yaml")  # picked up by the watcher

    def completed() -> dict[str, Any] | None:
        status, _, body = raw(daemon, "GET", "/api/campaigns/news")
        found: dict[str, Any] | None = json.loads(body) if status == 200 else None
        return found if found and found["state"] == "completed" else None

    summary = wait_for("the new campaign to complete", completed)
    assert summary["counts"]["sent"] == 5
    got = {r for m in smtp.messages for r in m.rcpt_tos}
    assert got == {f"user{i}@example.com" for i in range(3, 8)}


def test_metrics_need_the_token_and_tell_the_story(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(tmp_path, smtp.port, recipients=12, service_extra="rate: 50/second\n")
    smtp.reply("rcpt", "451 4.7.1 later", address="user0@example.com", times=1)
    daemon = make_daemon(root).start()
    daemon.wait_state("news", "completed")
    assert raw(daemon, "GET", "/metrics", token=False)[0] == 401
    status, headers, body = raw(daemon, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }
    news_sink = (("campaign", "news"), ("service", "sink"))
    assert got[("campaignd_messages_total", (*news_sink, ("status", "sent")))] == 12
    replies = {k[1]: v for k, v in got.items() if k[0] == "campaignd_smtp_replies_total"}
    assert replies[(("class", "4xx"), ("code", "451"), ("service", "sink"))] == 1
    assert got[("campaignd_send_duration_seconds_count", (("service", "sink"),))] == 13
    assert got[("campaignd_campaign_messages", (("campaign", "news"), ("status", "sent")))] == 12
    limit = (("rate", "50/second"), ("scope", "service"), ("target", "sink"))
    assert got[("campaignd_limit_cap", limit)] == 50
    assert got[("campaignd_breaker_state", (("service", "sink"), ("state", "closed")))] == 1
    assert got[("campaignd_config_generation", ())] == 1
    assert "user0@example.com" not in body.decode()
    result = daemon.ctl("status")
    assert result.returncode == 0 and "news" in result.stdout and "closed" in result.stdout


CSV = {"Content-Type": "text/csv"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MULTIPART = {"Content-Type": "multipart/form-data; boundary=x"}
BAD_REQUESTS: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("GET", "/api/campaigns/%00", None, {}),
    ("GET", "/api/campaigns/%0d%0aX-Injected:%201", None, {}),
    ("GET", "/api/campaigns/" + "a" * 5000, None, {}),
    ("GET", "/api/campaigns/..%2f..%2fetc%2fpasswd", None, {}),
    ("GET", "/api/campaigns/NEWS", None, {}),
    ("GET", "/api/campaigns/news/messages?limit=abc", None, {}),
    ("GET", "/api/campaigns/news/messages?limit=-1", None, {}),
    ("GET", "/api/campaigns/news/messages?limit=99999999999999999999999", None, {}),
    ("GET", "/api/campaigns/news/messages?after=1e9", None, {}),
    ("GET", "/api/campaigns/news/messages?after=-5", None, {}),
    ("GET", "/api/campaigns/news/messages?step=%00", None, {}),
    ("GET", "/api/campaigns/news/messages?status=sent%00", None, {}),
    ("GET", "/api/campaigns/news/messages?template=%2e%2e%2f", None, {}),
    ("GET", "/api/campaigns/news/messages?service=%E2%80%A8", None, {}),
    ("GET", "/api/campaigns/news/messages?recipient=%00%ff%fe", None, {}),
    ("GET", "/api/campaigns/news/messages?recipient=" + "x" * 4000, None, {}),
    ("GET", "/api/campaigns/news/log.csv?status=nope", None, {}),
    ("GET", "/api/campaigns/news/messages?limit=1&limit=2&%zz=1", None, {}),
    ("POST", "/api/campaigns/news/retry", b"", J),
    ("POST", "/api/campaigns/news/retry", b"null", J),
    ("POST", "/api/campaigns/news/retry", b"[1,2]", J),
    ("POST", "/api/campaigns/news/retry", b'{"statuses": 5}', J),
    ("POST", "/api/campaigns/news/retry", b'{"statuses": ["sent"]}', J),
    ("POST", "/api/campaigns/news/retry", b"\xff\xfe{", J),
    ("POST", "/api/campaigns/news/retry", b'{"statuses": [' * 5000, J),
    ("POST", "/api/campaigns/%00/pause", b"{}", J),
    ("POST", "/api/campaigns/nope/resume", b"{}", J),
    ("POST", "/api/suppressions", b'{"addresses": [null]}', J),
    ("POST", "/api/suppressions", b'{"addresses": ["a@b"], "reason": [7]}', J),
    ("POST", "/api/suppressions", b'{"addresses": []}', J),
    ("POST", "/api/suppressions/import", b"\xff\xfe\x00garbage\n" * 10, CSV),
    ("POST", "/api/suppressions/import", b"a" * 200_000, CSV),
    ("DELETE", "/api/suppressions/%00", None, {}),
    ("DELETE", "/api/suppressions/" + "x" * 3000, None, {}),
    ("GET", "/api/suppressions?limit=0", None, {}),
    ("GET", "/api/suppressions?after=%00", None, {}),
    ("DELETE", "/api/campaigns/%00", None, {}),
    ("PUT", "/api/campaigns/news", b"{}", J),
    ("GET", "/u/", None, {}),
    ("GET", "/u/" + "A" * 8100, None, {}),  # past MAX_TOKEN, inside the request-line limit
    ("GET", "/u/%00%01", None, {}),
    ("POST", "/u/abc", b"List-Unsubscribe=One-Click", FORM),
    ("POST", "/u/abc", b"--x\r\nbroken multipart", MULTIPART),
    ("GET", "/o/!!!", None, {}),
    ("GET", "/c/" + "_" * 100, None, {}),
    ("GET", "/hooks/nope", None, {}),
]  # fmt: skip


def test_no_path_query_or_body_yields_a_500(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(tmp_path, smtp.port, recipients=3)
    root.joinpath("campaignd.yaml").write_text(
        "timezone: UTC\ndrain_timeout: 10s\nhttp: {client_max_size: 4096}\n"
    )
    daemon = make_daemon(root).start()
    daemon.wait_state("news", "completed")
    for method, path, body, headers in BAD_REQUESTS:
        status, _, answer = raw(daemon, method, path, body, headers)
        assert status < 500, (method, path[:80], status, answer[:200])
    # client_max_size from the settings: a body read whole is capped
    big = json.dumps({"addresses": ["a@b.example"] * 1000}).encode()
    assert raw(daemon, "POST", "/api/suppressions", big, J)[0] == 413
    assert daemon.get("/healthz")["ok"] is True
    assert daemon.campaign("news")["counts"]["sent"] == 3  # and nothing changed
    assert daemon.get("/api/suppressions")["suppressions"] == []
    assert "Traceback" not in daemon.log()


def test_host_allow_list_form_posts_and_security_headers(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(
        tmp_path, smtp.port, recipients=3, campaign_extra="rate: 1/hour\n",
    )  # fmt: skip
    # Without a token (loopback only) the Host header and the request's shape are the defence.
    daemon = make_daemon(root, token=None).start()
    daemon.wait_state("news", "sending")
    # A cross-site <form> (or no-cors fetch) cannot change anything …
    for headers in (FORM, {"Content-Type": "text/plain"}, {}):
        status, _, body = raw(daemon, "POST", "/api/campaigns/news/pause", b"x=1", headers)
        assert status == 415, body
    assert daemon.campaign("news")["state"] == "sending"
    # … a JSON request (needs a CORS preflight cross-site, which is never granted) can.
    assert raw(daemon, "POST", "/api/campaigns/news/pause", b"{}", J)[0] == 200
    assert daemon.campaign("news")["state"] == "paused"

    # DNS rebinding: a page at evil.example resolving to 127.0.0.1 is refused by name.
    for path in ("/", "/api/status", "/metrics", "/api/campaigns/news/log.csv"):
        status, _, _ = raw(daemon, "GET", path, headers={"Host": f"evil.example:{daemon.port}"})
        assert status == 421, path
    evil = {**J, "Host": "evil.example"}
    assert raw(daemon, "POST", "/api/campaigns/news/resume", b"{}", evil)[0] == 421
    for host in (f"127.0.0.1:{daemon.port}", f"localhost:{daemon.port}", "[::1]:8470"):
        assert raw(daemon, "GET", "/api/status", headers={"Host": host})[0] == 200, host
    # unsubscribe / tracking links come through public_url, whatever the proxy calls us
    assert raw(daemon, "GET", "/u/bad", headers={"Host": "mail.acme.example"})[0] == 400

    # headers on every kind of answer: page, JSON, streamed CSV, errors
    for path in ("/", "/api/status", "/api/campaigns/news/log.csv", "/api/campaigns/x%00"):
        _, headers, _ = raw(daemon, "GET", path)
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "set-cookie" not in headers
    _, headers, page = raw(daemon, "GET", "/")
    csp = headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "script-src 'nonce-" in csp
    nonce = csp.split("script-src 'nonce-")[1].split("'")[0]
    assert page.count(b"<script") == page.count(f'<script nonce="{nonce}"'.encode()) == 1
    assert b"http://" not in page.replace(b"http://127.0.0.1", b"") and b"https://" not in page


def test_token_is_required_everywhere_under_api(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(tmp_path, smtp.port, recipients=2)
    daemon = make_daemon(root).start()
    for method, path in (
        ("GET", "/api/status"), ("GET", "/api/page"), ("GET", "/api/campaigns/news/log.csv"),
        ("GET", "/api/suppressions"), ("POST", "/api/suppressions"),
        ("DELETE", "/api/campaigns/news"), ("GET", "/metrics"),
    ):  # fmt: skip
        status, headers, _ = raw(daemon, method, path, b"{}", J, token=False)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
        wrong = {"Content-Type": "application/json", "Authorization": "Bearer " + "x" * 21}
        assert raw(daemon, method, path, b"{}", wrong, token=False)[0] == 401
    # the page's frame loads without the token (it asks for it); its data does not
    status, _, body = raw(daemon, "GET", "/", token=False)
    assert status == 200 and b'data-token-required="true"' in body and b"campaign-news" not in body
    started = time.monotonic()
    assert raw(daemon, "GET", "/healthz", token=False)[0] == 200
    assert time.monotonic() - started < 5
