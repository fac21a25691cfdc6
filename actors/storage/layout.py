"""Archive layout (quantpylib-compatible paths), stream ids, periods and durations.

``{root}/{exchange}/{market}/{channel}/{YYYY}/{MM}/{SYMBOL}[_depth{N}]_{DDHH}.parquet``

``market`` is ``perp`` (a venue's perpetuals, the default), ``spot`` or ``futures`` (dated
contracts). Inside the archiver a symbol of another market than the default carries it as a
prefix (``spot/BTCUSDT``, ``futures/BTCUSD_250627``: :func:`split_market`); the file name holds
the bare symbol.

Hourly files end in ``_{DDHH}``. A shorter rollover (tests, demos) must divide one hour
and names its files ``_{DDHHMMSS}``: those sort by time among themselves, and can never
collide with an hourly name (different length).

This module is also the one place that answers "which files are on disk": every sealed file
of a root (:func:`sealed_files`, for a rebuild or an audit), the files of one stream in a range
(:func:`stream_files`), and a stream's newest files (:func:`newest_files`). What the catalog
knows is not rediscovered from disk on every pass: these are for rebuilds, audits and archives
without a catalog.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from actors.errors import TickarchiveError

NS = 1_000_000_000
HOUR_NS = 3600 * NS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_FILE = re.compile(
    r"^(?P<exchange>[^/]+)/(?P<market>[^/]+)/(?P<channel>[^/]+)/(?P<year>\d{4})/(?P<month>\d{2})/"
    r"(?P<symbol>.+?)(?:_depth(?P<depth>\d+))?_(?P<day>\d{2})(?P<hour>\d{2})(?P<mmss>\d{4})?\.parquet$"
)


class LayoutError(TickarchiveError, ValueError):
    """A path, name or duration that does not fit the archive layout."""


def parse_duration(text: str | int | float, what: str = "duration") -> float:
    """Seconds in ``'10s'``, ``'5m'``, ``'1h'``, ``'250ms'``, ``'2d'`` or a bare number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text <= 0:
            raise LayoutError(f"{what}: must be positive, got {text!r}")
        return float(text)
    m = _DURATION.match(str(text))
    if not m:
        raise LayoutError(f"{what}: cannot parse {text!r} (use e.g. 250ms, 10s, 5m, 1h, 2d)")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise LayoutError(f"{what}: must be positive, got {text!r}")
    return seconds


def parse_rollover(text: str | int | float) -> int:
    """Rollover period in ns; it must be whole seconds and divide one hour."""
    seconds = parse_duration(text, "storage.rollover")
    if seconds != int(seconds) or 3600 % int(seconds) != 0:
        raise LayoutError(
            f"storage.rollover: {text!r} must be whole seconds dividing one hour "
            "(e.g. 10s, 30s, 1m, 5m, 10m, 15m, 30m, 1h)")
    return int(seconds) * NS


def check_name_part(value: str, what: str) -> str:
    """Refuse names that could escape a folder or break the layout."""
    if not isinstance(value, str) or not _SAFE_PART.match(value) or ".." in value:
        raise LayoutError(f"{what}: {value!r} is not a valid name (letters, digits, '.', '_', '-')")
    return value


MARKETS = ("perp", "spot", "futures")
DEFAULT_MARKET = "perp"


def split_market(symbol: str, market: str = DEFAULT_MARKET) -> tuple[str, str]:
    """``(market, bare symbol)`` of a symbol that may carry its market: ``spot/BTCUSDT`` ->
    ``("spot", "BTCUSDT")``; a bare symbol is in ``market``."""
    head, sep, rest = symbol.partition("/")
    return (head, rest) if sep else (market, symbol)


def join_market(market: str, symbol: str) -> str:
    """The inverse of :func:`split_market`: the default market stays bare."""
    return symbol if market == DEFAULT_MARKET else f"{market}/{symbol}"


def check_symbol(value: str, what: str) -> str:
    """A symbol, optionally ``market/SYMBOL`` with a known market; LayoutError otherwise."""
    market, bare = split_market(str(value))
    check_name_part(market, what)
    if market not in MARKETS:
        raise LayoutError(f"{what}: {value!r} names an unknown market {market!r} (allowed: {', '.join(MARKETS)})")
    check_name_part(bare, what)
    return str(value)


@dataclass(frozen=True)
class StreamKey:
    """One archived stream: exchange + market + channel + symbol (+ depth for l2book)."""

    exchange: str
    market: str
    channel: str
    symbol: str
    depth: int | None = None

    @classmethod
    def of(cls, exchange: str, market: str, channel: str, symbol: str, depth: int | None = None) -> "StreamKey":
        """The stream of a symbol's channel: ``depth`` only names l2book streams; a symbol carrying
        its market (``spot/BTCUSDT``) is in that market."""
        market, symbol = split_market(symbol, market)
        return cls(exchange, market, channel, symbol, depth if channel == "l2book" else None)

    @property
    def name(self) -> str:
        """File-name stem without the period: ``BTCUSDT_depth20`` or ``BTCUSDT``."""
        if self.channel == "l2book" and self.depth:
            return f"{self.symbol}_depth{self.depth}"
        return self.symbol

    @property
    def id(self) -> str:
        """Stream id: ``binance/perp/l2book/BTCUSDT_depth20``."""
        return f"{self.exchange}/{self.market}/{self.channel}/{self.name}"

    def relpath(self, period_start_ns: int, rollover_ns: int = HOUR_NS) -> str:
        """Path of the file of one period, relative to the archive root."""
        t = datetime.fromtimestamp(period_start_ns // NS, tz=timezone.utc)
        suffix = f"{t.day:02d}{t.hour:02d}"
        if rollover_ns != HOUR_NS:
            suffix += f"{t.minute:02d}{t.second:02d}"
        return (f"{self.exchange}/{self.market}/{self.channel}/{t.year:04d}/{t.month:02d}/"
                f"{self.name}_{suffix}.parquet")


@dataclass(frozen=True)
class ParsedPath:
    stream: StreamKey
    period_start_ns: int
    period_end_ns: int | None  # None for sub-hour files: the Parquet footer records it


def parse_relpath(relpath: str) -> ParsedPath:
    """Inverse of :meth:`StreamKey.relpath`; raises LayoutError for anything else."""
    m = _FILE.match(relpath)
    if not m:
        raise LayoutError(f"not an archive file path: {relpath!r}")
    g = m.groupdict()
    mmss = g["mmss"]
    minute, second = (int(mmss[:2]), int(mmss[2:])) if mmss else (0, 0)
    try:
        start = datetime(int(g["year"]), int(g["month"]), int(g["day"]), int(g["hour"]),
                         minute, second, tzinfo=timezone.utc)
    except ValueError as exc:
        raise LayoutError(f"bad date in archive path {relpath!r}: {exc}") from None
    start_ns = int(start.timestamp()) * NS
    end_ns = None if mmss else start_ns + HOUR_NS
    depth = int(g["depth"]) if g["depth"] else None
    stream = StreamKey(g["exchange"], g["market"], g["channel"], g["symbol"], depth)
    return ParsedPath(stream, start_ns, end_ns)


def file_in_range(relpath: str, stream: StreamKey, start_ns: int, end_ns: int) -> ParsedPath | None:
    """The parsed path when ``relpath`` is a file of ``stream`` overlapping ``[start_ns, end_ns)``.

    Sub-hour names carry no end: they are taken to last up to an hour (rows are filtered
    exactly when read).
    """
    try:
        parsed = parse_relpath(relpath)
    except LayoutError:
        return None
    end = parsed.period_end_ns or parsed.period_start_ns + HOUR_NS
    if parsed.stream != stream or not (parsed.period_start_ns < end_ns and end > start_ns):
        return None
    return parsed


def is_sealed_relpath(relpath: str) -> bool:
    """A sealed archive file: fits the layout and has no hidden part (spools, temp files, the catalog)."""
    if any(part.startswith(".") for part in relpath.split("/")):
        return False
    try:
        parse_relpath(relpath)
    except LayoutError:
        return False
    return True


def sealed_files(root: str | Path) -> dict[str, os.stat_result]:
    """Every sealed archive file under ``root``: relative path -> stat (one walk of the whole tree)."""
    out = {}
    root_path = Path(root)
    for dirpath, dirnames, filenames in os.walk(root_path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not name.endswith(".parquet"):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root_path).as_posix()
            if is_sealed_relpath(rel):
                try:
                    out[rel] = path.stat()
                except FileNotFoundError:       # deleted while walking (retention)
                    continue
    return out


def month_of(ts_ns: int) -> tuple[int, int]:
    """(year, month) of a time, UTC."""
    t = datetime.fromtimestamp(ts_ns // NS, tz=timezone.utc)
    return t.year, t.month


def _month_folders(root: str | Path, stream: StreamKey) -> list[Path]:
    base = Path(root) / stream.exchange / stream.market / stream.channel
    return sorted(p for p in base.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]") if p.is_dir())


def stream_files(root: str | Path, stream: StreamKey, start_ns: int, end_ns: int,
                 months: set[tuple[int, int]] | None = None) -> list[str]:
    """Sealed files of one stream that may hold rows in ``[start_ns, end_ns)``, in time order.

    Only the month folders that exist and overlap the range (and are in ``months``, when given)
    are listed (a range of decades costs what the archive holds, not one step per hour).
    """
    first, last = month_of(start_ns), month_of(end_ns - 1)
    found: dict[str, int] = {}
    for folder in _month_folders(root, stream):
        month = (int(folder.parent.name), int(folder.name))
        if not first <= month <= last or (months is not None and month not in months):
            continue
        for path in folder.glob(f"{stream.name}_*.parquet"):
            parsed = file_in_range(path.relative_to(root).as_posix(), stream, start_ns, end_ns)
            if parsed is not None:
                found[str(path)] = parsed.period_start_ns
    return sorted(found, key=lambda p: (found[p], p))


def newest_files(root: str | Path, stream: StreamKey, count: int = 2) -> list[str]:
    """The ``count`` newest sealed files of a stream (from the newest month folder that has any)."""
    for month in reversed(_month_folders(root, stream)):
        files = sorted(str(p) for p in month.glob(f"{stream.name}_*.parquet")
                       if parse_or_none(p.relative_to(root).as_posix(), stream))
        if files:
            return files[-count:]
    return []


def parse_or_none(relpath: str, stream: StreamKey) -> ParsedPath | None:
    """The parsed path when ``relpath`` is a file of ``stream``, else None."""
    try:
        parsed = parse_relpath(relpath)
    except LayoutError:
        return None
    return parsed if parsed.stream == stream else None
