"""``campaignctl lint CAMPAIGN [--dns]``: the command around ``deliverability.py``.

Exit 0 when nothing is an error (warnings are advice), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.console import Console

__all__ = ["add_lint_args", "cmd_lint"]

_STYLE = {"ok": "green", "info": "blue", "warning": "yellow", "error": "red"}


def add_lint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign")
    p.add_argument(
        "--dns", action="store_true", help="also look up SPF, the DKIM selector and DMARC"
    )
    p.add_argument(
        "--nameserver",
        metavar="IP[:PORT]",
        help="ask this DNS server instead of the system's (e.g. the authoritative one)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_lint(args: argparse.Namespace) -> int:
    from ..config.load import load_root
    from ..errors import CampaigndError
    from .deliverability import dns_resolver, lint_campaign

    out = Console(highlight=False, soft_wrap=True)
    root = Path(getattr(args, "config", None) or os.environ.get("CAMPAIGND_CONFIG") or ".")
    result = load_root(root)
    resolver = dns_resolver(args.nameserver) if args.dns or args.nameserver else None
    try:
        findings = lint_campaign(result, args.campaign, resolver=resolver)
    except CampaigndError as exc:
        from .commands import err, print_problems

        # "has errors (listed above)": list them, this command does not validate first.
        print_problems(result, only_for=args.campaign)
        if args.json:
            problems = [p.as_dict() for p in result.problems if p.object_id == args.campaign]
            print(json.dumps({"campaign": args.campaign, "ok": False, "error": str(exc),
                              "problems": problems}, indent=2))  # fmt: skip
        err.print(f"error: {exc}", markup=False)
        return 1
    errors = sum(f.level == "error" for f in findings)
    if args.json:
        print(json.dumps({"campaign": args.campaign, "ok": not errors,
                          "findings": [f.as_dict() for f in findings]}, indent=2))  # fmt: skip
        return 1 if errors else 0
    for f in findings:
        style = _STYLE[f.level]
        out.print(f"[{style}]{f.level:>7}[/{style}] {f.topic}: ", end="", markup=True)
        out.print(f.message, markup=False)
    warnings = sum(f.level == "warning" for f in findings)
    out.print(f"{args.campaign}: {errors} errors, {warnings} warnings")
    return 1 if errors else 0
