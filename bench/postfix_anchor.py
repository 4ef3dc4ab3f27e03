"""The durable anchor: what a real MTA pays for the same guarantee. The baseline sender of
``bench/throughput.py`` (aiosmtplib, 16 sessions, Jinja2 + ``EmailMessage``) hands the same
``--messages`` to a local Postfix, which writes each to its disk queue (fsync) and relays it to
``smtp-sink``. Reported: messages per second from the first hand-over until Postfix's queue is
empty, and the CPU of Postfix's processes per message — to set beside campaignd's, which also
keeps every message durable before it speaks SMTP.

The Postfix is a throwaway instance: its own config, queue and data directories in a temp dir,
listening on 127.0.0.1 only, relaying everything to the sink; the system's mail setup
(/etc/postfix, /var/spool/postfix) is neither read nor touched. It needs root (Postfix's
master runs as root and drops to the ``postfix`` user) and Postfix installed
(``.ci/system-deps.sh``); otherwise the script says so and exits 0.

Run: ``sudo .venv/bin/python bench/postfix_anchor.py [--messages 20000] [--connections 16]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import baseline, free_port, start_sink, wait_port

POSTFIX = Path("/usr/sbin/postfix")
DAEMONS = Path("/usr/lib/postfix/sbin")
TICKS = os.sysconf("SC_CLK_TCK")
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def main_cf(base: Path, sink_port: int) -> str:
    return f"""\
compatibility_level = 3.6
config_directory = {base}/conf
queue_directory = {base}/queue
data_directory = {base}/data
daemon_directory = {DAEMONS}
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydomain = localdomain
myorigin = bench.localdomain
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink_port}
smtp_dns_support_level = disabled
smtp_host_lookup = native
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
smtputf8_enable = no
biff = no
"""


def postfix_cpu(base: Path) -> float:
    """CPU seconds of the instance: master (and its reaped children) plus the live children."""
    pid = int((base / "queue" / "pid" / "master.pid").read_text().split()[0])

    def stat(p: int) -> list[str]:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

    total = sum(int(x) for x in stat(pid)[11:15])
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            total += sum(int(x) for x in stat(int(child))[11:15])
        except OSError:
            continue
    return total / TICKS


def queued(base: Path) -> int:
    return sum(
        sum(1 for f in (base / "queue" / q).rglob("*") if f.is_file())
        for q in QUEUES
        if (base / "queue" / q).exists()
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args()
    if os.geteuid() != 0 or not POSTFIX.exists() or not (DAEMONS / "master").exists():
        print("durable anchor: not run (needs root and Postfix installed: .ci/system-deps.sh)")
        return 0
    sink_port, listen = free_port(), free_port()
    sink, sink_name = start_sink(sink_port)
    base = Path(tempfile.mkdtemp(prefix="campaignd-postfix-"))
    conf = base / "conf"
    started = False
    try:
        wait_port(sink_port)
        for d in ("conf", "queue", "data"):
            (base / d).mkdir()
        base.chmod(0o755)
        shutil.chown(base / "data", user="postfix")
        (conf / "main.cf").write_text(main_cf(base, sink_port))
        (conf / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{listen}"))
        # creates the queue's directories with Postfix's owners and modes, then starts master
        subprocess.run([str(POSTFIX), "-c", str(conf), "set-permissions"], check=False,
                       capture_output=True)  # fmt: skip
        done = subprocess.run(
            [str(POSTFIX), "-c", str(conf), "start"], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            # postfix(1) says why on a terminal only; its log file has it otherwise
            log = base / "maillog"
            why = (done.stderr or done.stdout).strip() or (
                log.read_text().strip().splitlines()[-1] if log.exists() else "no reason given"
            )
            print(f"durable anchor: not run (the throwaway Postfix did not start: {why})")
            return 0
        started = True
        wait_port(listen)
        before = postfix_cpu(base)
        t0 = time.perf_counter()
        _, sender_cpu = asyncio.run(baseline(listen, args.messages, args.connections))
        handed = time.perf_counter() - t0
        deadline = time.monotonic() + max(300.0, args.messages / 20)
        while queued(base) and time.monotonic() < deadline:
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        left = queued(base)
        mta_cpu = postfix_cpu(base) - before
    finally:
        if started:
            subprocess.run([str(POSTFIX), "-c", str(conf), "stop"], capture_output=True,
                           check=False)  # fmt: skip
            time.sleep(1)
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)
    n = args.messages
    if left:
        print(f"durable anchor: {left} messages still queued in Postfix after {elapsed:.0f} s")
        return 1
    print(f"sink: {sink_name}; {n} messages, {args.connections} sessions into Postfix")
    print(f"  handed to Postfix in {handed:.1f} s; sender {sender_cpu * 1000 / n:.2f} CPU ms/msg")
    print(
        f"durable anchor (baseline sender → Postfix disk queue → smtp-sink): {n / elapsed:,.0f} "
        f"msg/s, Postfix {mta_cpu * 1000 / n:.2f} CPU ms/msg "
        f"(+ sender: {(mta_cpu + sender_cpu) * 1000 / n:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
