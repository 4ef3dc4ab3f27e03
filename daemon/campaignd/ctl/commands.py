"""What every campaignctl command shares: the registry of subcommands, the consoles, and how
the config root is found and its problems printed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..config.load import LoadResult, load_root

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Handler, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(
    name: str, help_text: str
) -> Callable[
    [Callable[[argparse.ArgumentParser], None]], Callable[[argparse.ArgumentParser], None]
]:
    """Register the arguments of a subcommand; its handler is ``cmd_<name>``."""

    def wrap(
        add_args: Callable[[argparse.ArgumentParser], None],
    ) -> Callable[[argparse.ArgumentParser], None]:
        # The handler sits beside its arguments, in main.py or remote.py.
        handler = vars(sys.modules[add_args.__module__])[f"cmd_{name.replace('-', '_')}"]
        COMMANDS[name] = (handler, add_args, help_text)
        return add_args

    return wrap


def config_root(args: argparse.Namespace) -> Path:
    """``--config``, else the command's ROOT argument, else $CAMPAIGND_CONFIG, else cwd."""
    explicit = getattr(args, "config", None) or getattr(args, "root", None)
    return Path(explicit or os.environ.get("CAMPAIGND_CONFIG") or ".")


def load(args: argparse.Namespace) -> LoadResult:
    return load_root(config_root(args))


def print_problems(result: LoadResult, *, only_for: str | None = None) -> None:
    for p in result.problems:
        if only_for is not None and p.object_id != only_for:
            continue
        style = "red" if p.severity == "error" else "yellow"
        err.print(f"[{style}]{p}[/{style}]", markup=True, highlight=False)


def emit_json(data: Any) -> None:
    """``--json`` output: one document on stdout."""
    print(json.dumps(data, indent=2, default=str))


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[object]], *, title: str | None = None
) -> None:
    """A table on a terminal; tab-separated values when stdout is a pipe or a file.

    Piped output is read by programs and people with wide pagers: a value is never cut short
    (rich would fit the table to 80 columns with "…"). Tabs and line breaks inside a value
    become spaces so each row stays one line.
    """
    if out.is_terminal:
        t = Table(*columns, title=title)
        for column in t.columns:
            column.overflow = "fold"  # wrap long values, never "…"
        for row in rows:
            t.add_row(*(str(v) for v in row))
        out.print(t)
        return
    write = sys.stdout.write
    write("\t".join(columns) + "\n")
    for row in rows:
        write("\t".join(_cell(v) for v in row) + "\n")


def _cell(value: object) -> str:
    return " ".join(str(value).replace("\t", " ").splitlines()) if value is not None else ""
