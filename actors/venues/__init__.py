"""Venue registry: one module per venue (``actors/venues/<name>.py``) plus ``conf/venues/<name>.yaml``."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from actors.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def supported_venues() -> list[str]:
    """Venues with a yaml in conf/venues/ (each has a module actors/venues/<name>.py)."""
    return sorted(p.stem for p in (CONF_DIR / "venues").glob("*.yaml"))


def venue_module(name: str) -> ModuleType:
    """The module holding everything about one venue's protocol."""
    if name not in supported_venues():
        raise ConfigError(f"unknown venue {name!r} (supported: {', '.join(supported_venues())})")
    return importlib.import_module(f"actors.venues.{name}")
