"""Secrets are named, never stored in git: ``X_env``, ``X_file`` or ``X_credential`` (SPEC §2).

A reference is resolved only when the secret is first needed, so an unset variable is a warning
at validate time and a clear error at use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import SecretError
from .files import FileTooLarge, read_regular

MAX_SECRET_BYTES = 64 * 1024
"""A password, token or PEM private key is a few KiB; anything bigger is the wrong file."""

SecretKind = Literal["literal", "env", "file", "credential"]


@dataclass(frozen=True, slots=True)
class SecretRef:
    name: str  # the key without suffix, e.g. "password"
    kind: SecretKind
    value: str  # the literal, the variable name, the path or the credential name

    @property
    def key(self) -> str:
        return self.name if self.kind == "literal" else f"{self.name}_{self.kind}"

    def describe(self) -> str:
        if self.kind == "literal":
            return f"{self.name} (literal in the file)"
        if self.kind == "env":
            return f"environment variable {self.value}"
        if self.kind == "file":
            return f"file {self.value}"
        return f"systemd credential {self.value}"

    def problem(self, env: Mapping[str, str] | None = None) -> str | None:
        """Why resolving would fail now, or None; used by validate to warn early."""
        try:
            resolve_secret(self, env)
        except SecretError as exc:
            return str(exc)
        return None


def resolve_secret(ref: SecretRef, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if ref.kind == "literal":
        return ref.value
    if ref.kind == "env":
        value = env.get(ref.value)
        if not value:
            raise SecretError(
                f"{ref.key}: environment variable {ref.value} is not set — export it, or use "
                f"{ref.name}_file / {ref.name}_credential"
            )
        return value
    if ref.kind == "file":
        path = Path(ref.value)
    else:
        creds = env.get("CREDENTIALS_DIRECTORY")
        if not creds:
            raise SecretError(
                f"{ref.key}: credential {ref.value!r} needs $CREDENTIALS_DIRECTORY — run under "
                f"systemd with LoadCredential={ref.value}:/path, or use {ref.name}_file"
            )
        path = Path(creds) / ref.value
    try:
        data = read_regular(path, MAX_SECRET_BYTES)
    except FileTooLarge:
        raise SecretError(
            f"{ref.key}: {path} is larger than {MAX_SECRET_BYTES // 1024} KiB — "
            "that is not a secret; check the path"
        ) from None
    except OSError as exc:  # NotRegularFile reads "is a FIFO, not a regular file"
        raise SecretError(f"{ref.key}: cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise SecretError(f"{ref.key}: the path {ref.value!r} contains a NUL byte") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretError(
            f"{ref.key}: {path} is not UTF-8 (byte {exc.start}) — save it as UTF-8"
        ) from None
    # Files written by editors end with a newline that is never part of the secret.
    return text.rstrip("\r\n")
