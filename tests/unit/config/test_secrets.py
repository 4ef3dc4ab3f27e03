"""Secret files and credentials: read only if regular, small and UTF-8 — else a SecretError."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from campaignd.config.secrets import MAX_SECRET_BYTES, SecretRef, resolve_secret
from campaignd.errors import SecretError
from tests.unit.config.test_files import within


def test_a_regular_file_and_a_symlink_to_one(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2\r\n")
    (tmp_path / "link").symlink_to(tmp_path / "pw")
    assert resolve_secret(SecretRef("password", "file", str(tmp_path / "link"))) == "hunter2"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pw")
    ref = SecretRef("password", "file", str(tmp_path / "pw"))
    try:
        with pytest.raises(SecretError) as err:
            within(5, lambda: resolve_secret(ref))
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(tmp_path / "pw", os.O_WRONLY | os.O_NONBLOCK))
    assert str(err.value) == (
        f"password_file: cannot read {tmp_path / 'pw'}: is a FIFO, not a regular file"
    )
    assert ref.problem({}) == str(err.value)  # validate's warning says the same


def test_dev_zero_as_a_credential(tmp_path: Path) -> None:
    (tmp_path / "token").symlink_to("/dev/zero")
    ref = SecretRef("token", "credential", "token")
    with pytest.raises(SecretError, match=r"symlink to a character device \(/dev/zero\)"):
        within(5, lambda: resolve_secret(ref, {"CREDENTIALS_DIRECTORY": str(tmp_path)}))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"k" * (MAX_SECRET_BYTES + 1), "is larger than 64 KiB — that is not a secret"),
        (b"caf\xe9", r"is not UTF-8 \(byte 3\)"),
    ],
)
def test_large_or_undecodable_files(tmp_path: Path, content: bytes, expected: str) -> None:
    (tmp_path / "s").write_bytes(content)
    with pytest.raises(SecretError, match=expected):
        resolve_secret(SecretRef("secret", "file", str(tmp_path / "s")))


def test_a_nul_or_overlong_path(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="contains a NUL byte"):
        resolve_secret(SecretRef("secret", "file", "/etc/x\0y"))
    with pytest.raises(SecretError, match="File name too long"):
        resolve_secret(SecretRef("secret", "file", str(tmp_path / ("a" * 300))))
