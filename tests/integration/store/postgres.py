"""A throwaway PostgreSQL cluster for the store tests: initdb + pg_ctl in a temp dir, listening on
127.0.0.1 at a free port (its unix socket stays in the temp dir), stopped and removed at the end.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` system user
(``runuser -u postgres --``). Durability is switched off: these databases live for one session.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

RUN_AS = "postgres"
DB_USER = "campaignd"


class Missing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's newest version."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise Missing(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
        "/usr/lib/postgresql/*/bin — run .ci/postgres.sh (apt-get install postgresql)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Cluster:
    bin_dir: Path
    base: Path
    port: int
    options: str = ""
    """The server options ``start`` passes (``pg_ctl restart`` reuses them by itself)."""

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` on this cluster (blocking: call it through ``asyncio.to_thread``)."""
        _run([*_as_owner(), str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args],
             f"pg_ctl {' '.join(args)}")  # fmt: skip

    def restart(self) -> None:
        """What an operator's ``pg_ctl restart -m fast`` does: every connection is cut."""
        self.pg_ctl("-l", str(self.base / "server.log"), "-m", "fast", "-w", "-t", "30", "restart")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "-t", "30", "stop")

    def start(self) -> None:
        self.pg_ctl("-l", str(self.base / "server.log"), "-o", self.options, "-w", "-t", "30",
                    "start")  # fmt: skip

    async def create_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)


def _as_owner() -> list[str]:
    return ["runuser", "-u", RUN_AS, "--"] if os.geteuid() == 0 else []


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({done.returncode}): {done.stderr.strip() or done.stdout}"
        )


@contextmanager
def cluster() -> Iterator[Cluster]:
    bin_dir = find_bin_dir()
    base = Path(tempfile.mkdtemp(prefix="campaignd-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, user=RUN_AS, group=RUN_AS)
    sockets = base / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(sockets, user=RUN_AS, group=RUN_AS)
    c = Cluster(bin_dir=bin_dir, base=base, port=free_port())
    owner = _as_owner()
    started = False
    try:
        _run(
            [*owner, str(bin_dir / "initdb"), "-D", str(c.data), "-U", DB_USER, "-A", "trust",
             "-E", "UTF8", "--no-sync", "--locale=C"],
            "initdb",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {c.port} -k {sockets} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        c.options = options
        _run(
            [*owner, str(bin_dir / "pg_ctl"), "-D", str(c.data), "-l", str(base / "server.log"),
             "-o", options, "-w", "-t", "30", "start"],
            "pg_ctl start (see the server log in " + str(base) + ")",
        )  # fmt: skip
        started = True
        yield c
    finally:
        if started:
            subprocess.run(
                [
                    *owner,
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(c.data),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                check=False,
                timeout=60,
            )
        shutil.rmtree(base, ignore_errors=True)
