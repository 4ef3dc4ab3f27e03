"""Reading operator files without ever blocking on, or filling memory from, something odd.

Everything campaignd reads from the config root (the settings file, services.d/, templates.d/,
campaigns.d/, template bodies, secret ``_file``s, audience lists) goes through here. A FIFO
opened for reading blocks until a writer appears; ``/dev/zero`` never ends; a socket cannot be
opened at all. So a path is ``stat``ed first (following symlinks: a link to a regular file is
fine) and only a regular file is opened, with ``O_NONBLOCK`` so that a file swapped for a FIFO
between the two calls still cannot block, and the opened descriptor is ``fstat``ed again to
close that race. Size limits count the bytes actually read (at most ``limit + 1``), never
``st_size`` alone, which is 0 for a device.

``NotRegularFile`` and ``FileTooLarge`` are ``OSError``s, so a caller that already reports
"cannot read" keeps working; their ``str()`` is the operator's sentence.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = [
    "FileTooLarge",
    "NotRegularFile",
    "describe_mode",
    "open_regular",
    "open_regular_text",
    "read_regular",
    "regular_stat",
]

_CHUNK = 1 << 16


class NotRegularFile(OSError):
    """The path exists but is a FIFO, socket, device or directory (perhaps behind a symlink)."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"is {what}, not a regular file")
        self.path = path
        self.what = what
        self.strerror = str(self)

    def __str__(self) -> str:
        return f"is {self.what}, not a regular file"


class FileTooLarge(OSError):
    """More than ``limit`` bytes were there to read."""

    def __init__(self, path: Path, limit: int, size: int | None) -> None:
        super().__init__(f"is larger than {limit} bytes")
        self.path = path
        self.limit = limit
        self.size = size  # from fstat when it is a plain file, else None
        self.strerror = str(self)

    def __str__(self) -> str:
        return f"is larger than {self.limit} bytes"


def describe_mode(mode: int) -> str:
    """``a FIFO``, ``a character device``… for the file type in ``mode``."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _refuse(path: Path, mode: int) -> NotRegularFile:
    what = describe_mode(mode)
    try:
        if path.is_symlink():
            what = f"a symlink to {what} ({os.path.realpath(path)})"
    except OSError:
        pass
    return NotRegularFile(path, what)


def regular_stat(path: Path) -> os.stat_result:
    """``stat(path)`` if it is a regular file (through symlinks); else ``NotRegularFile``.

    Other ``OSError``s (missing, permission, name too long, symlink loop) pass through.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, st.st_mode)
    return st


def _open_fd(path: Path) -> int:
    regular_stat(path)  # a FIFO or device is never opened at all
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between stat and open
            raise _refuse(path, st.st_mode)
        os.set_blocking(fd, True)  # meaningless for a regular file; keeps later reads ordinary
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for binary reading, refused unless it is a regular file."""
    return os.fdopen(_open_fd(path), "rb")


def open_regular_text(path: Path, *, encoding: str = "utf-8", newline: str | None = None) -> TextIO:
    """``path`` opened for strict text reading, refused unless it is a regular file."""
    return os.fdopen(_open_fd(path), encoding=encoding, newline=newline, errors="strict")


def read_regular(path: Path, limit: int) -> bytes:
    """The whole of ``path``: ``NotRegularFile`` unless a regular file, ``FileTooLarge`` past
    ``limit`` bytes — counted on what is read, so a file that grows meanwhile is still caught."""
    with open_regular(path) as f:
        parts: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = f.read(min(_CHUNK, limit + 1 - got))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        if got > limit:
            try:
                size: int | None = os.fstat(f.fileno()).st_size
            except OSError:
                size = None
            raise FileTooLarge(path, limit, size)
    return b"".join(parts)
