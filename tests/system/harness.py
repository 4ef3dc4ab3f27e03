"""campaignd as a real process for system tests: started on a throw-away config root, talked
to over its HTTP API, stopped by PID. The SMTP side is a RecordingServer in the test process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline.

    The daemon is another process: polling its API is the only event we can wait on.
    """
    end = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def write_root(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for sub in ("services.d", "templates.d", "campaigns.d"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def recipients_csv(n: int, *, domain: str = "example.com") -> str:
    return "email,first_name\n" + "".join(f"user{i}@{domain},User{i}\n" for i in range(n))


TEMPLATE = (
    "subject: Hello {{ first_name }}\n"
    "text: |\n  Hi {{ first_name }}!\n  Unsubscribe: {{ unsubscribe_url }}\n"
)


@dataclass
class DaemonProcess:
    root: Path
    token: str | None = "test-token-0123456789"
    database: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    runs: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> DaemonProcess:
        self.runs += 1
        self.log_path = self.root / f"daemon-{self.runs}.log"
        env = {**os.environ, **self.env, "CAMPAIGND_LISTEN": f"127.0.0.1:{self.port}"}
        env.pop("STATE_DIRECTORY", None)
        if self.token:
            env["CAMPAIGND_API_TOKEN"] = self.token
        else:
            env.pop("CAMPAIGND_API_TOKEN", None)
        if self.database:
            env["CAMPAIGND_DATABASE"] = self.database
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "campaignd", "--config", str(self.root),
                 "--log-level", "debug"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        if wait:
            wait_for("the daemon to answer /healthz", self._healthy, timeout=30)
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"campaignd exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return bool(self.get("/healthz").get("ok"))
        except (OSError, urllib.error.URLError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = "") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        use = self.token if token == "" else token
        if use:
            req.add_header("Authorization", f"Bearer {use}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def campaign(self, cid: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/api/campaigns/{cid}")
        return result

    def wait_state(self, cid: str, *states: str, timeout: float = DEADLINE) -> dict[str, Any]:
        return wait_for(
            f"campaign {cid} to be {'/'.join(states)}",
            lambda: (c := self.campaign(cid)) and c["state"] in states and c,
            timeout=timeout,
        )

    def messages(self, cid: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = None
        while True:
            q = f"?limit=500{'' if after is None else f'&after={after}'}"
            page = self.get(f"/api/campaigns/{cid}/messages{q}")
            out.extend(page["messages"])
            after = page.get("next_after")
            if not after:
                return out

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """kill -9: nothing gets a chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CAMPAIGND_API": self.base}
        if self.token:
            env["CAMPAIGND_API_TOKEN"] = self.token
        return subprocess.run(
            [sys.executable, "-m", "campaignd.ctl", "--config", str(self.root), *args],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
