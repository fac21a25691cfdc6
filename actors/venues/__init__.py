"""Venue registry: one module per venue (``actors/venues/<name>.py``) plus ``conf/venues/<name>.yaml``.

Each venue module ends with ``VENUE = <its Venue subclass>()``: the declaration the rest of the
code calls (``get_venue(name).settings(...)``, ``.validate``, ``.plan_connections``, ...).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from actors.errors import ConfigError

if TYPE_CHECKING:
    from actors.venues.base import Venue

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def supported_venues() -> list[str]:
    """Venues with a yaml in conf/venues/ (each has a module actors/venues/<name>.py)."""
    return sorted(p.stem for p in (CONF_DIR / "venues").glob("*.yaml"))


def get_venue(name: str) -> "Venue":
    """The declaration of one venue's protocol (client and server side)."""
    if name not in supported_venues():
        raise ConfigError(f"unknown venue {name!r} (supported: {', '.join(supported_venues())})")
    return importlib.import_module(f"actors.venues.{name}").VENUE
