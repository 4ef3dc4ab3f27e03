"""A throwaway Dovecot IMAP server for the feedback tests (Debian's ``dovecot-imapd``).

Started in the foreground (``dovecot -F``) with its own config, run and state directories in a
temp dir, listening on 127.0.0.1 at free ports: plain IMAP (with STARTTLS) and implicit TLS
(IMAPS), with a certificate from ``make_tls``. One passwd-file user whose mail lives in a temp
Maildir. Stopped by PID at teardown; nothing of the system's Dovecot is touched.

As root the login and internal processes and the mail user run as the ``dovecot`` system user
(Dovecot refuses mail access as root); otherwise everything runs as the current user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.smtp.servers import TlsFiles

DOVECOT = "/usr/sbin/dovecot"
# dovecot-core alone has the master but no IMAP: the tests need both binaries of dovecot-imapd.
IMAP_BINARIES = ("/usr/lib/dovecot/imap", "/usr/lib/dovecot/imap-login")
USER = "bounces@acme.test"
PASSWORD = "imap-test-secret"


class Missing(RuntimeError):
    """Dovecot is not installed here."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Dovecot:
    tls: TlsFiles
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="campaignd-dovecot-")))
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    extra: str = ""  # more dovecot.conf lines, e.g. a reduced imap_capability
    proc: subprocess.Popen[bytes] | None = None

    @property
    def maildir(self) -> Path:
        return self.base / "home" / "Maildir"

    def _owner(self) -> tuple[str, int, int]:
        pw = pwd.getpwnam("dovecot") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        return pw.pw_name, pw.pw_uid, pw.pw_gid

    def write_config(self) -> Path:
        missing = [b for b in (DOVECOT, *IMAP_BINARIES) if not os.path.exists(b)]
        if missing:
            raise Missing(
                f"{', '.join(missing)} not found — apt-get install dovecot-imapd "
                "(.ci/system-deps.sh)"
            )
        name, uid, gid = self._owner()
        # The login and mail processes run as `name`: they must reach their sockets and files.
        os.chmod(self.base, 0o755)
        for sub in ("run", "state", "home", "ssl"):
            (self.base / sub).mkdir(exist_ok=True)
        home = self.base / "home"
        shutil.copy(self.tls.cert_file, self.base / "ssl" / "cert.pem")
        shutil.copy(self.tls.key_file, self.base / "ssl" / "key.pem")
        os.chmod(self.base / "ssl" / "key.pem", 0o600)
        users = self.base / "users"
        users.write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}::userdb_mail=maildir:{self.maildir}\n"
        )
        os.chown(home, uid, gid)
        config = self.base / "dovecot.conf"
        config.write_text(
            f"""
base_dir = {self.base}/run
state_dir = {self.base}/state
instance_name = campaignd-test-{self.port}
protocols = imap
listen = 127.0.0.1
log_path = {self.base}/dovecot.log
ssl = yes
ssl_cert = <{self.base}/ssl/cert.pem
ssl_key = <{self.base}/ssl/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {name}
default_internal_user = {name}

first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:{self.maildir}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
protocol imap {{
  mail_max_userip_connections = 50
}}
{self.extra}
"""
        )
        return config

    def start(self) -> Dovecot:
        config = self.write_config()
        log = (self.base / "stdout.log").open("ab")
        # A session (process group) of its own: the master's children are stopped with it.
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)], stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + 20
        while not (self._accepts(self.port) and self._accepts(self.tls_port)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not listen within 20s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self) -> str:
        out = []
        for name in ("stdout.log", "dovecot.log"):
            path = self.base / name
            if path.exists():
                out.append(path.read_text(errors="replace"))
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM to the process group this fixture started (by its id): the master exits
        without waiting for its login and mail processes, which would keep clients'
        connections open. SIGKILL for whatever is still there after 5 s."""
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self._group_alive():
                self.proc.poll()  # reap the master, or its zombie keeps the group alive
                time.sleep(0.01)
            if not self._group_alive():
                break
        self.proc.wait(timeout=10)

    def _group_alive(self) -> bool:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
