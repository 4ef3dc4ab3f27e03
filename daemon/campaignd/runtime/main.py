"""``campaignd [--config ROOT]``: the daemon in the foreground, logging to stderr (systemd)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import __version__


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        # journald stamps time and unit itself
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "mail.log", "apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="campaignd", description="The campaignd daemon.")
    parser.add_argument("--config", metavar="ROOT", help="config root ($CAMPAIGND_CONFIG, else .)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--log-level", default=os.environ.get("CAMPAIGND_LOG_LEVEL", "info"))
    parser.add_argument("--version", action="version", version=f"campaignd {__version__}")
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    root = Path(args.config or os.environ.get("CAMPAIGND_CONFIG") or ".")
    if not root.is_dir():
        logging.getLogger("campaignd").error("config root %s does not exist", root)
        return 1

    from .daemon import Daemon

    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None

    async def go() -> int:
        return await Daemon(root).run()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return int(runner.run(go()))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
