"""Compose the Hydra config from ``conf/`` and validate it into plain :class:`Settings`.

All validation happens here, before Ray or any socket starts, and every problem is one
:class:`ConfigError` line naming the key and the allowed values. Actors receive plain
dataclasses and dicts, never Hydra objects. Secrets are never part of the config: they
come from the environment or ``.env`` (see ``actors/backup.py``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from actors.storage.layout import NS, LayoutError, check_name_part, parse_duration, parse_rollover
from actors.feed.records import DATA_CHANNELS
from actors.errors import ConfigError
from actors.venues import CONF_DIR, get_venue, supported_venues

MODES = ("archive", "backup", "restore", "status", "reindex")
SOURCES = ("live", "sim", "replay")


@dataclass(frozen=True)
class VenueSpec:
    """One venue to archive: its symbols and its protocol settings from conf/venues/."""

    name: str
    market: str
    symbols: tuple[str, ...]
    cfg: Any                  # typed settings: get_venue(name).settings(venues.<name>)


@dataclass(frozen=True)
class Settings:
    """Validated run settings (plain data, safe to send to Ray actors)."""

    mode: str
    source: str
    duration_s: float | None
    depth: int
    channels: tuple[str, ...]
    venues: tuple[VenueSpec, ...]
    root: str
    rollover_ns: int
    seal_grace_ns: int
    symbols_per_writer: int
    compact_every_s: float
    replay_file: str | None
    replay_speed: float
    sim: dict[str, Any]
    socket: dict[str, Any]
    ray: dict[str, Any]
    log_level: str
    sections: dict[str, Any] = field(default_factory=dict)  # other groups (backup, restore, ...)

    def venue(self, name: str) -> VenueSpec:
        for spec in self.venues:
            if spec.name == name:
                return spec
        raise ConfigError(f"venue {name!r} is not archived in this run")


_ARCHIVE_KEY = re.compile(r"^[~+]*archive\.([^=.\s]+)")


def compose(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with command-line overrides; errors become one ConfigError line."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for ov in overrides:
        m = _ARCHIVE_KEY.match(ov)
        if m and m.group(1) not in supported_venues():
            raise ConfigError(f"archive.{m.group(1)}: unknown venue {m.group(1)!r} "
                              f"(supported: {', '.join(supported_venues())})")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="tickarchive"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        cause = exc.__cause__ or exc
        msg = " ".join(str(cause).split())
        msg = msg.split(" Config search path:")[0]
        m = re.match(r"Key '([^']+)' is not in struct full_key: (\S+)", msg)
        if m:
            msg = f"{m.group(2)}: unknown config key (python launch.py --cfg shows every key)"
        raise ConfigError(msg) from None


def _int(value: Any, key: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not an integer") from None


def load_settings(overrides: list[str] | None = None, cfg: DictConfig | None = None) -> Settings:
    """Compose (unless ``cfg`` is given) and validate; raises ConfigError on the first problem."""
    cfg = cfg if cfg is not None else compose(list(overrides or []))
    raw: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    try:
        return _validate(raw)
    except LayoutError as exc:
        raise ConfigError(str(exc)) from None


def _validate(raw: dict[str, Any]) -> Settings:
    mode = raw.get("mode")
    if mode not in MODES:
        raise ConfigError(f"mode: {mode!r} is not a mode (allowed: {', '.join(MODES)})")
    source = (raw.get("source") or {}).get("name")
    if source not in SOURCES:
        raise ConfigError(f"source: {source!r} is not a source (allowed: {', '.join(SOURCES)})")
    duration = raw.get("duration_s")
    duration_s = None if duration in (None, "", 0) else parse_duration(duration, "duration_s")
    depth = _int(raw.get("depth"), "depth")
    channels = tuple(raw.get("channels") or ())
    bad = [c for c in channels if c not in DATA_CHANNELS]
    if bad or not channels:
        raise ConfigError(f"channels: {bad or channels!r} not allowed (allowed: {', '.join(DATA_CHANNELS)})")

    archive = raw.get("archive") or {}
    venues_cfg = raw.get("venues") or {}
    specs = []
    for name, symbols in archive.items():
        if name not in supported_venues():
            raise ConfigError(f"archive.{name}: unknown venue (supported: {', '.join(supported_venues())})")
        if not symbols:
            continue
        if isinstance(symbols, str):
            symbols = [symbols]
        symbols = tuple(dict.fromkeys(check_name_part(str(s), f"archive.{name}") for s in symbols))
        vcfg = venues_cfg.get(name)
        if vcfg is None:
            raise ConfigError(f"archive.{name}: no protocol settings (add '{name}' to the venues list)")
        venue = get_venue(name)
        vsettings = venue.settings(vcfg)
        venue.validate(vsettings, list(symbols), list(channels), depth)
        specs.append(VenueSpec(name=name, market=vsettings.market, symbols=symbols, cfg=vsettings))
    if mode == "archive" and not specs:
        raise ConfigError("archive: no venue has symbols to archive (e.g. 'archive.binance=[BTCUSDT]')")

    storage = raw.get("storage") or {}
    root = storage.get("root") or "archives"
    root = str(Path(os.path.expanduser(str(root))).absolute())
    spw = _int(storage.get("symbols_per_writer", 1), "storage.symbols_per_writer")
    if spw < 1:
        raise ConfigError("storage.symbols_per_writer: must be >= 1")

    replay = raw.get("replay") or {}
    replay_file = replay.get("file")
    try:
        replay_speed = float(replay.get("speed", 0))
    except (TypeError, ValueError):
        raise ConfigError(f"replay.speed: {replay.get('speed')!r} is not a number (0 = as fast as possible)") from None
    if replay_speed < 0:
        raise ConfigError("replay.speed: must be >= 0 (0 = as fast as possible, 1 = recorded pace)")
    if source == "replay" and mode == "archive":
        if not replay_file:
            raise ConfigError("replay.file: required with source=replay (a recording to serve back)")
        if not Path(replay_file).is_file():
            raise ConfigError(f"replay.file: {replay_file!r} does not exist")
        replay_file = str(Path(replay_file).absolute())

    socket = dict(raw.get("socket") or {})
    known = {"name", "messages_per_s", "seed", "faults", "record_truth"}
    sim = {k: v for k, v in (raw.get("source") or {}).items() if k in known}
    sections = {k: v for k, v in raw.items() if k in ("backup", "restore")}
    if "backup" in sections:  # backup.* keys: one ConfigError line each (checked in actors/backup.py)
        from actors.backup.reconcile import validate_section
        sections["backup"] = validate_section(sections["backup"])
    return Settings(
        mode=mode, source=source, duration_s=duration_s, depth=depth, channels=channels,
        venues=tuple(specs), root=root,
        rollover_ns=parse_rollover(storage.get("rollover", "1h")),
        seal_grace_ns=int(parse_duration(storage.get("seal_grace", "5s"), "storage.seal_grace") * NS),
        symbols_per_writer=spw,
        compact_every_s=parse_duration(storage.get("compact_every", "10m"), "storage.compact_every"),
        replay_file=replay_file, replay_speed=replay_speed, sim=sim, socket=socket,
        ray=dict(raw.get("ray") or {}), log_level=str(raw.get("log_level", "INFO")).upper(),
        sections=sections,
    )
