"""The configuration schema: every key of ``conf/`` with its type, default and allowed values.

These dataclasses are registered in Hydra's ConfigStore (:func:`register`), so a composed
config is type-checked as it is built: ``depth=abc``, ``mode=bogus``, ``log_level=LOUD`` or
an unknown key fail before anything starts. The yaml files in ``conf/`` stay as presets
(``source=sim``, ``backup=s3``, ``conf/venues/<venue>.yaml``). Rules that span several keys
(a rollover dividing an hour, a replay file that exists, a bucket name a provider accepts)
are checked in :mod:`actors.cli.config`, which turns this into the run's ``Settings``.

Venue sections (``venues.<venue>``) are typed by each venue's own settings declaration;
here they are free-form and checked by the venue.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional


class Mode(str, Enum):
    archive = "archive"
    backup = "backup"
    restore = "restore"
    status = "status"
    reindex = "reindex"
    migrate = "migrate"
    export = "export"
    stop = "stop"


class SourceKind(str, Enum):
    live = "live"
    sim = "sim"
    replay = "replay"


class ParadexPayloads(str, Enum):
    sbe = "sbe"
    json = "json"


class DataChannel(str, Enum):
    l2book = "l2book"
    trades = "trades"
    derivatives = "derivatives"        # mark/index price, funding, open interest (a row per change)
    liquidations = "liquidations"


class Channel(str, Enum):
    l2book = "l2book"
    trades = "trades"
    events = "events"
    derivatives = "derivatives"
    liquidations = "liquidations"


class BackupKind(str, Enum):
    none = "none"
    local = "local"
    s3 = "s3"
    b2 = "b2"


class FaultKind(str, Enum):
    drop_connection = "drop_connection"
    stall = "stall"
    break_chain = "break_chain"
    malformed = "malformed"
    venue_restart = "venue_restart"
    duplicate_frames = "duplicate_frames"
    reorder_frames = "reorder_frames"
    oversized_frame = "oversized_frame"
    ack_then_silence = "ack_then_silence"


class ConsoleMode(str, Enum):
    live = "live"
    plain = "plain"
    json = "json"


class LogLevel(str, Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


@dataclass
class FaultConfig:
    """A scheduled simulator fault: ``{at_s: 20, kind: stall, seconds: 3}`` (``count``: how many
    frames ``duplicate_frames`` doubles / pairs ``reorder_frames`` swaps, default 1)."""

    kind: FaultKind = FaultKind.drop_connection
    at_s: float = 0.0
    symbol: Optional[str] = None
    seconds: Optional[float] = None
    count: Optional[int] = None


@dataclass
class SourceConfig:
    """``source=live|sim|replay``; the simulator knobs apply to ``sim``."""

    name: SourceKind = SourceKind.live
    messages_per_s: float = 200.0
    seed: int = 7
    faults: List[FaultConfig] = field(default_factory=list)
    record_truth: bool = False
    repeated_trades: int = 10            # recent trades the Hyperliquid simulator repeats on subscribe
    paradex_payloads: ParadexPayloads = ParadexPayloads.sbe   # the Paradex simulator's data frames: SBE binary, or the old JSON


@dataclass
class StorageConfig:
    root: str = "archives"
    rollover: str = "1h"
    seal_grace: str = "5s"
    symbols_per_writer: int = 0          # 0: automatic (actors.remote.placement)
    compact_every: str = "10m"


@dataclass
class ReplayConfig:
    file: Optional[str] = None
    speed: float = 0.0


@dataclass
class SocketConfig:
    flush_ms: int = 200
    max_pending_rows: int = 200_000
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    idle_timeout_s: float = 60.0
    symbols_per_process: int = 0         # 0: automatic (actors.remote.placement)


@dataclass
class RayConfig:
    address: Optional[str] = None
    dashboard: bool = True
    num_cpus: Optional[int] = None
    dashboard_port: int = 8265           # ray=cluster: where the head's dashboard answers the token check
    detach: bool = False                 # ray=cluster: the archive runs as a detached actor (mode=stop ends it)
    orchestration: Optional[str] = None  # where the runner and the catalog live: null = the head node, else a
                                         # node offering this Ray resource or label


@dataclass
class RetentionConfig:
    local_days: Optional[float] = None


@dataclass
class BackupConfig:
    """``backup=none|local|s3|b2``. Credentials are never config keys (environment or ``.env``)."""

    name: BackupKind = BackupKind.none
    endpoint: Optional[str] = None
    bucket: Optional[str] = None
    prefix: str = ""
    region: Optional[str] = None
    interval: str = "10m"
    audit_interval: str = "1d"
    settle_s: float = 1.0
    workers: int = 8
    multipart_mb: int = 64
    checksums: str = "auto"
    retention: RetentionConfig = field(default_factory=RetentionConfig)


@dataclass
class RestoreConfig:
    """What ``mode=restore`` / ``mode=status`` work on."""

    exchange: Optional[str] = None
    symbol: Optional[str] = None
    start: Optional[str] = None
    end: Optional[str] = None
    channels: List[Channel] = field(default_factory=lambda: [Channel.l2book, Channel.trades])
    depth: Optional[int] = None
    market: str = "perp"
    workers: int = 8


class ExportFormat(str, Enum):
    hftbacktest = "hftbacktest"
    nautilus = "nautilus"
    tardis = "tardis"


@dataclass
class ExportConfig:
    """``mode=export``: the stream and range are ``restore.*``; ``out`` is a ``.npz`` (hftbacktest) or a
    folder (nautilus catalog, tardis CSV files)."""

    format: Optional[ExportFormat] = None
    out: Optional[str] = None
    allow_gaps: bool = False          # export a range with missing hours (they are listed)


@dataclass
class StatusConfig:
    """``mode=status``: with no ``restore.symbol`` it lists every stream; ``plot`` draws the coverage."""

    plot: Optional[str] = None        # coverage.png or coverage.html


@dataclass
class LogConfig:
    """The terminal: ``live`` (a table refreshed in place), ``plain`` (a status line every
    ``status_every``), ``json`` (every log line); null picks live on a terminal, else plain.
    Every log line also goes to ``{storage.root}/logs/*.log``."""

    console: Optional[ConsoleMode] = None
    status_every: str = "10s"


@dataclass
class AppConfig:
    """The whole configuration (``python launch.py --cfg`` prints it)."""

    mode: Mode = Mode.archive
    duration_s: Optional[str] = None
    depth: int = 20
    channels: List[DataChannel] = field(default_factory=lambda: [DataChannel.l2book, DataChannel.trades])
    archive: Dict[str, List[str]] = field(default_factory=dict)
    placement: Dict[str, Optional[str]] = field(default_factory=dict)   # venue -> Ray resource or node label
    log_level: LogLevel = LogLevel.INFO
    log: LogConfig = field(default_factory=LogConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    socket: SocketConfig = field(default_factory=SocketConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    venues: Dict[str, Any] = field(default_factory=dict)


def register() -> None:
    """Register the schema in Hydra's ConfigStore (``defaults: [app_schema, ...]`` in config.yaml)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="app_schema", node=AppConfig)
