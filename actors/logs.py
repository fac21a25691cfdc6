"""Structured JSON log lines: ``{"level", "time", "message", ...context}`` on stderr."""
from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_CONFIGURED = False


def setup_logging(level: str = "INFO") -> None:
    """Route the ``tickarchive`` loggers to stderr as one JSON object per line (idempotent)."""
    global _CONFIGURED
    logger = logging.getLogger("tickarchive")
    logger.setLevel(level)
    if _CONFIGURED:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(
        "{levelname}{asctime}{message}", style="{",
        rename_fields={"levelname": "level", "asctime": "time"},
        datefmt="%Y-%m-%dT%H:%M:%S%z"))
    logger.addHandler(handler)
    logger.propagate = False
    _CONFIGURED = True


def get_logger(name: str) -> logging.Logger:
    """A child of the ``tickarchive`` logger, configured for JSON output."""
    setup_logging()
    return logging.getLogger(f"tickarchive.{name}")
