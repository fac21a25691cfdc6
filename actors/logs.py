"""Logging: structured JSON lines in rotating files, short lines (or nothing) on the console.

Every process (the driver and each actor) logs under the ``tickarchive`` logger:

* to ``{root}/logs/<name>.log`` (``name``: ``archival`` for the driver, the actor's name for
  actors), one JSON object per line with ``level``, ``time`` (UTC, milliseconds), ``message``
  and context fields such as ``exchange`` or ``writer``; rotated at 20 MB, 5 files kept;
* to stderr: ``json`` (the same JSON lines), ``plain`` (``HH:MM:SS LEVEL message``) or not
  at all (``none``), from ``console_level`` up; a record logged with ``extra={"console": False}``
  goes to the file only. Actors use ``plain`` from WARNING: Ray forwards
  their warnings and errors to the driver's terminal, while the per-file and per-upload INFO
  lines stay in the files.
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path

from pythonjsonlogger.json import JsonFormatter

LOG_DIR = "logs"
_MAX_BYTES = 20 << 20
_BACKUPS = 5


class _UtcMillisJson(JsonFormatter):
    """JSON lines with ``time`` as ``2026-01-05T22:15:03.123Z``."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class _Plain(logging.Formatter):
    """``21:34:38 WARNING message [exchange=binance]``."""

    def format(self, record: logging.LogRecord) -> str:
        context = [f"{key}={getattr(record, key)}" for key in ("exchange", "writer") if hasattr(record, key)]
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{clock} {record.levelname} {record.getMessage()}" + (f" [{' '.join(context)}]" if context else "")


def json_formatter() -> logging.Formatter:
    return _UtcMillisJson("{levelname}{asctime}{message}", style="{",
                          rename_fields={"levelname": "level", "asctime": "time"})


def setup_logging(level: str = "INFO", root: str | None = None, name: str = "archival",
                  console: str = "json", console_level: str | None = None) -> logging.Logger:
    """Configure the ``tickarchive`` logger of this process (replacing what an earlier call set up)."""
    logger = logging.getLogger("tickarchive")
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if console != "none":
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(json_formatter() if console == "json" else _Plain())
        stream.setLevel(console_level or level)
        stream.addFilter(lambda record: getattr(record, "console", True))   # extra={"console": False}: file only
        logger.addHandler(stream)
    if root:
        folder = Path(root) / LOG_DIR
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)
        file = logging.handlers.RotatingFileHandler(folder / f"{safe}.log", maxBytes=_MAX_BYTES,
                                                    backupCount=_BACKUPS, encoding="utf-8")
        file.setFormatter(json_formatter())
        logger.addHandler(file)
    return logger


def setup_actor_logging(level: str, root: str | None, name: str) -> None:
    """An actor: everything to its file, warnings and errors also to stderr (forwarded by Ray)."""
    setup_logging(level, root, name, console="plain", console_level="WARNING")


def get_logger(name: str) -> logging.Logger:
    """A child of the ``tickarchive`` logger (JSON on stderr until :func:`setup_logging` is called)."""
    logger = logging.getLogger("tickarchive")
    if not logger.handlers:
        setup_logging()
    return logging.getLogger(f"tickarchive.{name}")
