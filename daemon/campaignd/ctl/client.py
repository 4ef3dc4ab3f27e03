"""A small client of the daemon's HTTP API for campaignctl (stdlib only: it must work anywhere)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..config.load import load_root
from ..config.secrets import resolve_secret
from ..errors import ApiError, CampaigndError


@dataclass
class ApiClient:
    base: str
    token: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_config(cls, root: Path, *, url: str | None = None) -> ApiClient:
        token = os.environ.get("CAMPAIGND_API_TOKEN") or None
        base = url or os.environ.get("CAMPAIGND_API")
        if base is None or token is None:
            settings = load_root(root).config.settings
            if base is None:
                listen = os.environ.get("CAMPAIGND_LISTEN") or settings.http.listen
                host, _, port = listen.rpartition(":")
                if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104 - a wildcard bind, reached locally
                    host = "127.0.0.1"
                base = f"http://{host}:{port}"
            ref = settings.http.secret_ref("token")
            if token is None and ref is not None:
                try:
                    token = resolve_secret(ref)
                except CampaigndError:
                    token = None
        return cls(base.rstrip("/"), token)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """JSON in, JSON out. A state change (POST, PUT, PATCH, DELETE) always sends a JSON
        body (``{}`` if none): without a token the daemon refuses anything that could be a
        cross-site form post, and a DELETE without a Content-Type looks like one (415)."""
        if body is None and method in ("POST", "PUT", "PATCH", "DELETE"):
            body = {}
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        with self._open(method, path, data, headers) as resp:
            return json.loads(resp.read() or b"null")

    def upload(self, path: str, stream: IO[bytes], size: int, content_type: str) -> Any:
        """POST a file as the body, read from ``stream`` as it is sent (never whole in memory)."""
        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        with self._open("POST", path, stream, headers) as resp:
            return json.loads(resp.read() or b"null")

    def download(self, path: str, chunk: int = 1 << 16) -> Iterator[bytes]:
        """GET ``path`` and yield its body in chunks (CSV logs of any size)."""
        with self._open("GET", path, None, {}) as resp:
            while block := resp.read(chunk):
                yield block

    def _open(
        self, method: str, path: str, data: bytes | IO[bytes] | None, headers: dict[str, str]
    ) -> Any:
        req = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        req.add_header("Accept", "application/json")
        for name, value in headers.items():
            req.add_header(name, value)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                message = exc.reason
            if exc.code == 401:
                message += " (set CAMPAIGND_API_TOKEN to the daemon's token)"
            raise ApiError(f"{method} {path}: {exc.code} {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(
                f"cannot reach the daemon at {self.base}: {reason} — is campaignd running? "
                "(--api URL or CAMPAIGND_API to point elsewhere)"
            ) from None
