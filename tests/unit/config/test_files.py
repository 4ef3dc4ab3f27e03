"""config/files.py: only regular files are opened, and limits count the bytes really read."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from campaignd.config import files
from campaignd.config.files import (
    FileTooLarge,
    NotRegularFile,
    open_regular,
    open_regular_text,
    read_regular,
    regular_stat,
)

T = TypeVar("T")


def within(seconds: float, fn: Callable[[], T]) -> T:
    """``fn()``, failing the test instead of hanging it if it blocks (e.g. on a FIFO)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the test thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for more than {seconds} s"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    yield path
    # Should anything have blocked on it, a writer opening and closing releases the reader.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_bytes(b"x" * 1000)
    assert read_regular(path, 1000) == b"x" * 1000
    with pytest.raises(FileTooLarge) as info:
        read_regular(path, 999)
    assert info.value.size == 1000 and info.value.limit == 999


def test_a_symlink_to_a_regular_file_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("secret\n")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    assert read_regular(tmp_path / "link.txt", 100) == b"secret\n"


def test_a_fifo_is_refused_without_blocking(fifo: Path) -> None:
    for fn in (
        lambda: read_regular(fifo, 100),
        lambda: open_regular(fifo),
        lambda: open_regular_text(fifo),
        lambda: regular_stat(fifo),
    ):
        with pytest.raises(NotRegularFile) as info:
            within(5, fn)
        assert str(info.value) == "is a FIFO, not a regular file"
        assert isinstance(info.value, OSError)


def test_a_symlink_to_a_fifo_names_both(fifo: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.yaml"
    link.symlink_to(fifo)
    with pytest.raises(NotRegularFile) as info:
        within(5, lambda: read_regular(link, 100))
    assert str(info.value) == f"is a symlink to a FIFO ({fifo}), not a regular file"


def test_devices_are_refused_before_any_read(tmp_path: Path) -> None:
    zero = tmp_path / "zero.html"
    zero.symlink_to("/dev/zero")
    with pytest.raises(NotRegularFile, match=r"symlink to a character device \(/dev/zero\)"):
        within(5, lambda: read_regular(zero, 1 << 20))
    with pytest.raises(NotRegularFile, match=r"^is a character device, not a regular file$"):
        within(5, lambda: read_regular(Path("/dev/null"), 10))


def test_a_socket_and_a_directory_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # AF_UNIX paths are short: bind relative to here
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("s.yaml")
        with pytest.raises(NotRegularFile, match=r"^is a socket, not a regular file$"):
            within(5, lambda: read_regular(tmp_path / "s.yaml", 10))
    with pytest.raises(NotRegularFile, match=r"^is a directory, not a regular file$"):
        read_regular(tmp_path, 10)


def test_the_limit_counts_bytes_read_not_st_size() -> None:
    # procfs files are regular files whose st_size is 0 although they hold text.
    maps = Path("/proc/self/maps")
    assert os.stat(maps).st_size == 0
    with pytest.raises(FileTooLarge) as info:
        read_regular(maps, 10)
    assert info.value.size == 0  # what stat claimed; the refusal came from reading
    assert len(read_regular(maps, 1 << 24)) > 10


def test_a_fifo_swapped_in_after_the_stat_is_still_not_read(
    fifo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulates the race: the path was a regular file when stat looked, a FIFO when opened.
    monkeypatch.setattr(files, "regular_stat", lambda path: os.stat(path))
    with pytest.raises(NotRegularFile, match="FIFO"):
        within(5, lambda: read_regular(fifo, 100))


def test_missing_and_overlong_names_are_ordinary_os_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "nope", 10)
    with pytest.raises(OSError, match="too long"):
        read_regular(tmp_path / ("a" * 300), 10)
