"""Modes other than ``archive`` (backup, restore, status, reindex)."""
from __future__ import annotations

import sys

from .config import Settings


def run(settings: Settings) -> int:
    """Run one non-archive mode; returns the exit status."""
    print(f"error: mode={settings.mode} is not available yet in this build", file=sys.stderr)
    return 2
