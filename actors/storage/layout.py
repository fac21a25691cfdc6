"""Archive layout (quantpylib-compatible paths), stream ids, periods and durations.

``{root}/{exchange}/{market}/{channel}/{YYYY}/{MM}/{SYMBOL}[_depth{N}]_{DDHH}.parquet``

Hourly files end in ``_{DDHH}``. A shorter rollover (tests, demos) must divide one hour
and names its files ``_{DDHHMMSS}``: those sort by time among themselves, and can never
collide with an hourly name (different length).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

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


@dataclass(frozen=True)
class StreamKey:
    """One archived stream: exchange + market + channel + symbol (+ depth for l2book)."""

    exchange: str
    market: str
    channel: str
    symbol: str
    depth: int | None = None

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
