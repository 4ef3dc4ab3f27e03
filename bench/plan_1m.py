"""Time and peak memory of ``campaignctl plan --json`` on a 1,000,000-row list.

    .venv/bin/python bench/plan_1m.py [--rows 1000000] [--direct] [--distinct-domains]

Generates (once per row count, under bench/out/) a config root with one transactional campaign
whose audience is a CSV of ``--rows`` rows: email, first_name, company, industry, timezone, with
about 2% duplicates (other case, other row), 1% invalid addresses, 1% IDN domains, 0.5% Unicode
local parts and invalid time zones. Then runs the command as a child process and reports its
wall time and peak RSS (``ru_maxrss`` from ``wait4``). ``--direct`` measures ``build_audience``
alone, also in a fresh child process. The goal is under 20 s and under 300 MB; the exit status
is 1 when it is missed.

Domains: by default 40% of the rows use 20 free-mail domains and the rest company domains shared
by about 8 contacts each (like a B2B list). ``--distinct-domains`` gives every row its own domain,
the worst case for the domain-validation cache.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
GOAL_SECONDS = 20.0
GOAL_MB = 300.0

FIRST = ["Ann", "Bob", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas"]
ASCII_FIRST = [name.lower().replace("é", "e") for name in FIRST]
INDUSTRIES = ["agency", "studio", "retail", "saas", "finance", "health"]
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "Europe/Paris", ""]
FREEMAIL = [f"mail{i}.example" for i in range(20)]
BAD = ["no-at-sign.example", "two@@x.example", "dot..dot@x.example", "space in@x.example", ""]

ROOT_FILES = {
    "services.d/sink.yaml": (
        'from: "Bench <bench@example.com>"\nhost: 127.0.0.1\nport: 2525\nsecurity: none\n'
    ),
    "templates.d/t.yaml": (
        'subject: "Hello {{ first_name }}"\n'
        "text: |\n  Hi {{ first_name }} at {{ company }},\n  Unsubscribe: {{ unsubscribe_url }}\n"
    ),
    "campaigns.d/bench.yaml": (
        "kind: transactional\naudience: [lists/big.csv]\nservices: [sink]\ntemplate: t\n"
    ),
}


def generate(root: Path, rows: int, distinct_domains: bool, fresh: bool = False) -> Path:
    """Write the config root; the list is rebuilt only when missing."""
    for rel, text in ROOT_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    big = root / "lists" / "big.csv"
    if big.exists() and not fresh:
        return big
    big.parent.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(rows)
    companies = max(1, rows // 8)
    emitted: list[str] = []
    tmp = big.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "first_name", "company", "industry", "timezone"])
        for i in range(rows):
            roll = rnd.random()
            company = f"Company {rnd.randrange(companies)}"
            if roll < 0.01:
                email = rnd.choice(BAD)
            elif roll < 0.03 and emitted:
                email = rnd.choice(emitted[-5000:]).upper()
            else:
                if distinct_domains:
                    domain = f"d{i}.example"
                elif roll < 0.04:
                    domain = f"bücher{rnd.randrange(500)}.example"
                elif roll < 0.43:
                    domain = rnd.choice(FREEMAIL)
                else:
                    domain = f"{company.replace(' ', '').lower()}.example"
                # Unicode local parts are rare in real lists (and take the slow, exact path).
                local = "chloé" if roll > 0.995 else rnd.choice(ASCII_FIRST)
                email = f"{local}.{i}@{domain}"
                emitted.append(email)
                if len(emitted) > 20000:
                    del emitted[:10000]
            zone = "Mars/Olympus" if roll > 0.995 else rnd.choice(ZONES)
            w.writerow([email, rnd.choice(FIRST), company, rnd.choice(INDUSTRIES), zone])
    tmp.replace(big)
    return big


def run_child(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB (the child's own rusage, from wait4) and its stdout."""
    out_path, err_path = OUT / "child.out", OUT / "child.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}:\n{err_path.read_text()}")
    return elapsed, usage.ru_maxrss / 1024, out_path.read_text(encoding="utf-8")


def direct(root: Path) -> None:
    """In a fresh process: stream the audience and print the report as JSON."""
    from datetime import UTC, datetime

    import yaml

    from campaignd.config.model import Campaign
    from campaignd.plan.audience import NoHistory, NoSuppressions, build_audience

    # The model alone, not the whole loader: this measures the audience and nothing else.
    spec = yaml.safe_load((root / "campaigns.d" / "bench.yaml").read_text(encoding="utf-8"))
    audience = build_audience(
        Campaign.model_validate(spec),
        root,
        history=NoHistory(),
        suppressions=NoSuppressions(),
        now=datetime.now(UTC),
        required_fields={"first_name", "company"},
    )
    count = sum(1 for _ in audience)
    r = audience.report
    print(
        json.dumps(
            {
                "audience": count,
                "invalid": r.invalid,
                "duplicates": r.duplicates,
                "filtered": r.filtered,
                "suppressed": r.suppressed,
                "missing_fields": r.missing_fields,
            }
        )
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--direct", action="store_true", help="measure build_audience alone")
    p.add_argument("--distinct-domains", action="store_true", help="one domain per row")
    p.add_argument("--fresh", action="store_true", help="write the list again")
    p.add_argument("--direct-child", metavar="ROOT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.direct_child:
        direct(Path(args.direct_child))
        return 0

    tag = f"{args.rows}{'-distinct' if args.distinct_domains else ''}"
    root = OUT / f"plan-{tag}"
    t0 = time.perf_counter()
    big = generate(root, args.rows, args.distinct_domains, args.fresh)
    size_mb = big.stat().st_size / 1e6
    print(f"list: {big} ({size_mb:.0f} MB, ready in {time.perf_counter() - t0:.1f} s)")

    if args.direct:
        what = "build_audience (in a child process)"
        argv = [sys.executable, __file__, "--direct-child", str(root)]
    else:
        what = "campaignctl plan bench --json"
        ctl = Path(sys.executable).with_name("campaignctl")
        argv = [str(ctl), "plan", "bench", "--json", "--config", str(root)]
    seconds, mb, stdout = run_child(argv)
    data = json.loads(stdout)
    keys = ("audience", "invalid", "duplicates", "filtered", "suppressed")
    print(what + ": " + ", ".join(f"{k} {data[k]}" for k in keys))
    ok = seconds < GOAL_SECONDS and mb < GOAL_MB
    print(
        f"{args.rows} rows: {seconds:.1f} s, peak RSS {mb:.0f} MB "
        f"(goal < {GOAL_SECONDS:.0f} s, < {GOAL_MB:.0f} MB: {'met' if ok else 'MISSED'})"
    )
    print(json.dumps({"rows": args.rows, "seconds": round(seconds, 2), "peak_rss_mb": round(mb)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
