"""Every list row accounted for, through the daemon: a suppressed address, an invalid row, a
duplicate, a filtered domain and an exclude_contacted_within hit each show in the summary's
counts and audience block, in /messages?recipient=, in log.csv and in `campaignctl why`; and
`campaignctl plan` reads the database the daemon wrote (read-only) to count them the same."""

from __future__ import annotations

import csv
import io
import json
import signal
from pathlib import Path

from tests.integration.smtp.servers import RecordingServer

from .conftest import MakeDaemon
from .harness import TEMPLATE, wait_for, write_root

SERVICE = (
    'from: "Acme <news@acme.test>"\nhost: 127.0.0.1\nport: {port}\nsecurity: none\n'
    "timeout: 5s\nmax_connections: 2\nretry: {{backoff: 1s, max_backoff: 2s, give_up_after: 1h}}\n"
)
CAMPAIGN = "kind: transactional\naudience: {list}\nservices: [sink]\ntemplate: hello\n"
NEWS = CAMPAIGN.format(list="lists/people.csv") + (
    "filters:\n  exclude_domains: [spam.example]\n  exclude_contacted_within: 30d\n"
)
PEOPLE = (
    "email,first_name\n"
    "ann@example.com,Ann\n"  # line 2: enrolled
    "not-an-address,Nobody\n"  # 3: invalid
    "gone@example.com,Gone\n"  # 4: suppressed
    "ANN@example.com,Ann again\n"  # 5: duplicate of line 2
    "eve@spam.example,Eve\n"  # 6: filtered domain
    "old@example.com,Old\n"  # 7: contacted by campaign earlier
)


def test_every_row_is_visible_and_plan_reads_the_daemons_database(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = write_root(
        tmp_path,
        {
            "campaignd.yaml": "timezone: UTC\ndrain_timeout: 10s\n",
            "services.d/sink.yaml": SERVICE.format(port=smtp.port),
            "templates.d/hello.yaml": TEMPLATE,
            "campaigns.d/earlier.yaml": CAMPAIGN.format(list="lists/earlier.csv"),
            "lists/earlier.csv": "email,first_name\nold@example.com,Old\n",
            "lists/people.csv": PEOPLE,
        },
    )
    daemon = make_daemon(root)
    (root / "campaigns.d/news.yaml").write_text(NEWS)

    # before the daemon ever ran: plan says loudly that it could not read the database
    before = daemon.ctl("plan", "news")
    assert before.returncode == 0, before.stderr
    assert "WARNING: suppressions and contact history NOT applied" in before.stderr
    assert "no database yet at" in before.stderr
    assert not (root / "state").exists()  # plan never creates it
    (root / "campaigns.d/news.yaml").unlink()

    daemon.start()
    daemon.wait_state("earlier", "completed")
    daemon.post("/api/suppressions", {"addresses": ["gone@example.com"], "reason": "asked us"})

    # plan against the database the daemon writes, while it runs
    (root / "campaigns.d/news.yaml").write_text(NEWS)
    planned = daemon.ctl("plan", "news", "--json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["history"]["ok"] is True
    assert plan["history"]["source"].startswith("database sqlite+aiosqlite:///")
    assert plan["history"]["source"].endswith("(read-only)")
    assert (plan["audience"], plan["invalid"], plan["duplicates"]) == (1, 1, 1)
    assert (plan["suppressed"], plan["filtered"]) == (1, 2)
    assert plan["filtered_by"] == {"exclude_domains": 1, "exclude_contacted_within": 1}
    text = daemon.ctl("plan", "news")
    assert "suppressions and contact history: from the database" in text.stderr

    daemon.signal(signal.SIGHUP)
    news = daemon.wait_state("news", "completed")
    assert news["audience"] == {
        "rows": 6, "invalid": 1, "duplicates": 1, "filtered": 2, "suppressed": 1, "enrolled": 1,
    }  # fmt: skip
    assert news["total"] == 6
    assert (news["counts"]["sent"], news["counts"]["skipped"], news["counts"]["suppressed"]) == (
        1, 4, 1,
    )  # fmt: skip
    assert sorted(r for m in smtp.messages for r in m.rcpt_tos) == [
        "ann@example.com",
        "old@example.com",
    ]  # fmt: skip  (old@ got campaign earlier; news sent to ann@ only)

    # the messages API finds every row of an address, whatever its spelling
    page = daemon.get("/api/campaigns/news/messages?recipient=Ann%40Example.com")["messages"]
    assert sorted((m["source"], m["status"], m["excluded"]) for m in page) == [
        ("lists/people.csv:2", "sent", None),
        ("lists/people.csv:5", "skipped", "duplicate"),
    ]
    (invalid,) = daemon.get("/api/campaigns/news/messages?recipient=not-an-address")["messages"]
    assert invalid["excluded"] == "invalid" and invalid["last_error"].startswith("invalid address")

    # log.csv: one line per list row, with why
    log = daemon.ctl("log", "news", "--csv")
    assert log.returncode == 0, log.stderr
    lines = list(csv.DictReader(io.StringIO(log.stdout)))
    assert sorted(r["source"] for r in lines) == [f"lists/people.csv:{n}" for n in range(2, 8)]
    by_source = {r["source"]: r for r in lines}
    assert by_source["lists/people.csv:6"]["excluded"] == "filtered"
    assert "exclude_domains" in by_source["lists/people.csv:6"]["last_error"]
    assert "contacted by campaign earlier at" in by_source["lists/people.csv:7"]["last_error"]

    # why: the whole story, or why not
    why = daemon.ctl("why", "news", "gone@example.com")
    assert why.returncode == 0, why.stderr
    assert "step 1: suppressed at enrollment" in why.stdout
    assert "suppressed: asked us (source " in why.stdout
    assert "on the suppression list since" in why.stdout
    sent = daemon.ctl("why", "news", "ANN@example.com")
    assert "(template hello): sent at " in sent.stdout and "via sink" in sent.stdout
    assert "duplicate of lists/people.csv:2" in sent.stdout
    assert "\n      sent " in sent.stdout  # the send's event, under its step
    old = json.loads(daemon.ctl("why", "news", "old@example.com", "--json").stdout)
    assert old["ok"] is True
    assert [m["excluded"] for m in old["messages"]] == ["filtered"]
    nobody = daemon.ctl("why", "news", "nobody@example.com")
    assert nobody.returncode == 1 and "nothing recorded" in nobody.stdout

    # after the run, plan still counts as the daemon did (its own sends are not "contact")
    after = json.loads(daemon.ctl("plan", "news", "--json").stdout)
    assert (after["audience"], after["suppressed"], after["filtered"]) == (1, 1, 2)
    wait_for("nothing pending", lambda: daemon.campaign("news")["state"] == "completed")


def test_an_address_suppressed_between_drip_steps_gets_no_second_message(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    # Steps after the first are not checked against the list when they are queued: the
    # dispatcher learns of a suppression from the claim's own transaction, and records it.
    drip = (
        "kind: transactional\naudience: lists/people.csv\nservices: [sink]\n"
        "steps:\n  - template: hello\n  - {after: 4s, template: hello}\n"
    )
    root = write_root(
        tmp_path,
        {
            "campaignd.yaml": "timezone: UTC\n",
            "services.d/sink.yaml": SERVICE.format(port=smtp.port),
            "templates.d/hello.yaml": TEMPLATE,
            "campaigns.d/news.yaml": drip,
            "lists/people.csv": "email,first_name\nann@example.com,Ann\nbob@example.com,Bob\n",
        },
    )
    daemon = make_daemon(root).start()
    wait_for("step 1 sent", lambda: daemon.campaign("news")["counts"]["sent"] == 2)
    assert daemon.ctl("suppress", "add", "BOB@example.com").returncode == 0
    done = daemon.wait_state("news", "completed")
    assert (done["counts"]["sent"], done["counts"]["suppressed"]) == (3, 1)
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [
        "ann@example.com", "ann@example.com", "bob@example.com",
    ]  # fmt: skip
    why = daemon.ctl("why", "news", "bob@example.com")
    assert "address is on the suppression list" in why.stdout, why.stdout
