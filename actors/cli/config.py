"""Compose the Hydra config from ``conf/`` against the schema and validate it into :class:`Settings`.

Types, defaults and allowed values are the schema's (:mod:`actors.cli.schema`, registered in
Hydra's ConfigStore); the rules that span keys or touch the machine are checked here, before
Ray or any socket starts. Every problem is one :class:`ConfigError` line naming the key (and
the allowed values). Actors receive plain dataclasses, never Hydra objects. Secrets are never
part of the config: they come from the environment or ``.env`` (see ``actors.backup``).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from actors.cli.schema import (AppConfig, BackupConfig, ExportConfig, RayConfig, RestoreConfig, SocketConfig,
                               SourceConfig, register)
from actors.errors import ConfigError
from actors.storage.layout import NS, LayoutError, check_symbol, parse_duration, parse_rollover
from actors.venues import CONF_DIR, get_venue, supported_venues


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
    symbols_per_writer: int             # 0: automatic
    compact_every_s: float
    replay_file: str | None
    replay_speed: float
    sim: SourceConfig
    socket: SocketConfig
    ray: RayConfig
    backup: BackupConfig
    restore: RestoreConfig
    log_level: str
    status_plot: str | None = None       # mode=status: draw the coverage picture here
    console: str = "plain"              # live | plain | json (resolved: never "auto")
    status_every_s: float = 10.0
    placement: tuple[tuple[str, str], ...] = ()   # (venue, resource or label)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

    def venue(self, name: str) -> VenueSpec:
        for spec in self.venues:
            if spec.name == name:
                return spec
        raise ConfigError(f"venue {name!r} is not archived in this run")

    def backup_section(self) -> dict[str, Any]:
        """The ``backup`` group as a plain dict (what backup and restore take)."""
        return plain(self.backup)

    def sim_section(self) -> dict[str, Any]:
        """The simulator knobs as a plain dict (what the venue simulators take)."""
        return plain(self.sim)


def plain(obj: Any) -> Any:
    """Dataclasses, enums and containers as plain dicts, strings, lists (picklable, printable)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


_ARCHIVE_KEY = re.compile(r"^[~+]*archive\.([^=.\s]+)")
_MERGING = re.compile(r"Error merging override ([^=\s]+)")


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
    register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="tickarchive"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    """A composition error as ``key: what is wrong (allowed: ...)``."""
    cause = exc.__cause__ or exc
    detail = " ".join(str(cause).split()).split(" full_key:")[0].split(" Config search path:")[0]
    merging = _MERGING.search(str(exc))
    key = getattr(cause, "full_key", None) or (merging.group(1) if merging else None)
    if merging and key and not str(key).startswith(merging.group(1)):
        key = f"{merging.group(1)} ({key})"
    if type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError") and key:
        return f"{key}: unknown config key (python launch.py --cfg shows every key)"
    m = re.match(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", detail)
    if m:
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(m.group(2), m.group(2))
        detail = f"{m.group(1)!r} is not {kind}"
    m = re.match(r"Invalid value '(.*)', expected one of \[(.*)\]", detail)
    if m:
        detail = f"{m.group(1)!r} is not allowed (allowed: {m.group(2)})"
    return f"{key}: {detail}" if key else detail


def load_settings(overrides: list[str] | None = None, cfg: DictConfig | None = None) -> Settings:
    """Compose (unless ``cfg`` is given) and validate; raises ConfigError on the first problem."""
    cfg = cfg if cfg is not None else compose(list(overrides or []))
    try:
        app: AppConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
        return _validate(app)
    except LayoutError as exc:
        raise ConfigError(str(exc)) from None


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _validate(app: AppConfig) -> Settings:
    mode, source = app.mode.value, app.source.name.value
    duration_s = None if app.duration_s in (None, "") else parse_duration(app.duration_s, "duration_s")
    if not app.channels:
        raise ConfigError("channels: name at least one of l2book, trades, derivatives, liquidations")
    channels = tuple(dict.fromkeys(c.value for c in app.channels))
    specs = _venue_specs(app, mode, channels)
    root = _root(app.storage.root, mode, cluster=bool(app.ray.address))
    if app.storage.symbols_per_writer < 0:
        raise ConfigError("storage.symbols_per_writer: must be >= 0 (0 = automatic)")
    _check_ray_address(app.ray.address)
    if (app.ray.detach or mode == "stop") and not app.ray.address:
        raise ConfigError("ray.detach / mode=stop: only with a running cluster (add ray=cluster)")
    if app.socket.symbols_per_process < 0:
        raise ConfigError("socket.symbols_per_process: must be >= 0 (0 = automatic)")
    for venue, where in app.placement.items():
        if venue not in supported_venues():
            raise ConfigError(f"placement.{venue}: unknown venue (supported: {', '.join(supported_venues())})")
        if where is not None and not str(where).strip():
            raise ConfigError(f"placement.{venue}: empty (name a Ray custom resource or node label, or null)")
    _check_source(app.source)
    _check_socket(app.socket)
    _positive(app.replay.speed, "replay.speed (0 = as fast as possible, 1 = recorded pace)", allow_zero=True)
    replay_file = _replay_file(app.replay.file) if source == "replay" and mode == "archive" else app.replay.file
    if app.restore.depth is not None:
        _positive(app.restore.depth, "restore.depth")
    _positive(app.restore.workers, "restore.workers")
    backup = _check_backup(app.backup)
    return Settings(
        mode=mode, source=source, duration_s=duration_s, depth=app.depth, channels=channels,
        venues=tuple(specs), root=root, rollover_ns=parse_rollover(app.storage.rollover),
        seal_grace_ns=int(parse_duration(app.storage.seal_grace, "storage.seal_grace") * NS),
        symbols_per_writer=app.storage.symbols_per_writer,
        compact_every_s=parse_duration(app.storage.compact_every, "storage.compact_every"),
        replay_file=replay_file, replay_speed=app.replay.speed, sim=app.source, socket=app.socket,
        ray=app.ray, backup=backup, restore=app.restore, log_level=app.log_level.value, status_plot=app.status.plot,
        console=app.log.console.value if app.log.console else ("live" if sys.stderr.isatty() else "plain"),
        status_every_s=parse_duration(app.log.status_every, "log.status_every"),
        placement=tuple(sorted((str(k), str(v).strip()) for k, v in app.placement.items() if v is not None)),
        export=_check_export(app.export, mode))


def _check_export(export: ExportConfig, mode: str) -> ExportConfig:
    """``mode=export`` needs ``export.format`` and ``export.out``."""
    if mode == "export":
        if export.format is None:
            raise ConfigError("export.format: required with mode=export (allowed: hftbacktest, nautilus, tardis)")
        if not export.out:
            raise ConfigError("export.out: required with mode=export (a .npz file for hftbacktest, a folder for "
                              "nautilus and tardis)")
    return export


_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?):(\d{1,5})$")


def _check_ray_address(address: str | None) -> None:
    """``ray.address``: ``auto`` or ``HOST:PORT`` of the cluster's GCS (one clear line otherwise)."""
    if address is None or address == "auto":
        return
    if str(address).startswith("ray://"):
        raise ConfigError(f"ray.address: {address!r} is a Ray Client address; launch.py joins as a driver: use "
                          "the head's GCS address HOST:6379 (ray.address=auto on a cluster node)")
    m = _HOST_PORT.match(str(address))
    if not m or not 0 < int(m.group(1)) < 65536:
        raise ConfigError(f"ray.address: {address!r} is not HOST:PORT (e.g. ray.address=10.0.0.5:6379, the port "
                          "`ray start --head` printed) or auto")


def _venue_specs(app: AppConfig, mode: str, channels: tuple[str, ...]) -> list[VenueSpec]:
    specs = []
    for name, symbols in app.archive.items():
        if name not in supported_venues():
            raise ConfigError(f"archive.{name}: unknown venue (supported: {', '.join(supported_venues())})")
        if not symbols:
            continue
        venue = get_venue(name)
        # an entry may carry its market (spot/BTCUSDT); the venue names it as the archive does
        symbols = tuple(dict.fromkeys(venue.qualify(check_symbol(str(s), f"archive.{name}")) for s in symbols))
        vcfg = app.venues.get(name)
        if vcfg is None:
            raise ConfigError(f"archive.{name}: no protocol settings (add '{name}' to the venues list)")
        vsettings = venue.settings(dict(vcfg))
        venue.validate(vsettings, list(symbols), list(channels), app.depth)
        specs.append(VenueSpec(name=name, market=vsettings.market, symbols=symbols, cfg=vsettings))
    if mode == "archive" and not specs:
        raise ConfigError("archive: no venue has symbols to archive (e.g. 'archive.binance=[BTCUSDT]')")
    return specs


def _root(text: str, mode: str, cluster: bool = False) -> str:
    """The archive root as an absolute path; it must be a usable folder for the mode."""
    if not str(text).strip():
        raise ConfigError("storage.root: empty (name the archive folder, e.g. storage.root=/data/archives)")
    root = Path(os.path.expanduser(str(text))).absolute()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"storage.root: {root} is a file, not a folder")
    if mode in ("status", "reindex", "backup", "migrate", "export") and not root.is_dir() and not (cluster and mode == "status"):
        raise ConfigError(f"storage.root: {root} does not exist (nothing archived there; check the path)")
    if mode in ("archive", "restore", "reindex", "backup", "migrate"):
        try:                                    # the honest test: create the folder and a file in it
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise ConfigError(f"storage.root: {root} is not writable ({exc.strerror or exc})") from None
    return str(root)


def _check_source(sim: SourceConfig) -> None:
    _positive(sim.messages_per_s, "source.messages_per_s")
    for n, fault in enumerate(sim.faults):
        _positive(fault.at_s, f"source.faults[{n}].at_s", allow_zero=True)
        if fault.seconds is not None:
            _positive(fault.seconds, f"source.faults[{n}].seconds")
        if fault.count is not None:
            _positive(fault.count, f"source.faults[{n}].count")


def _check_socket(sock: SocketConfig) -> None:
    for key in ("flush_ms", "max_pending_rows", "backoff_min_s", "backoff_max_s", "idle_timeout_s"):
        _positive(getattr(sock, key), f"socket.{key}")
    if sock.backoff_min_s > sock.backoff_max_s:
        raise ConfigError(f"socket.backoff_min_s: {sock.backoff_min_s} is above socket.backoff_max_s "
                          f"{sock.backoff_max_s}")


def _replay_file(path: str | None) -> str:
    if not path:
        raise ConfigError("replay.file: required with source=replay (a recording to serve back)")
    file = Path(path).expanduser()
    if file.is_dir():
        raise ConfigError(f"replay.file: {path!r} is a folder; name one recording file in it")
    if not file.is_file():
        raise ConfigError(f"replay.file: {path!r} does not exist")
    return str(file.absolute())


def _check_backup(backup: BackupConfig) -> BackupConfig:
    """Cross-key rules of the backup group (one line each), via the backup package's own checks."""
    from actors.backup import validate_section

    checked = validate_section(plain(backup))
    return dataclasses.replace(backup, prefix=checked.get("prefix", backup.prefix))
