"""Coverage: one rule for what an hour of a stream holds and where it lives.

Every view of coverage (``mode=status`` for the whole archive and for one stream, the coverage
picture, ``mode=restore``'s "missing" list and :meth:`actors.restore.restorer.Restorer.coverage`)
is built by :func:`hour_coverage` from the same facts, so they cannot disagree:

* an hour of a stream is *covered* when at least one file of the stream starts in it;
* its *holes* are the ``gap`` and ``lost`` events of the symbol in that hour (:data:`HOLE_KINDS`:
  a sequence break, a stale or crossed book, a damaged spool frame), its *disconnects* the
  ``disconnect`` events; an event counts for a data stream when its channel is the stream's or
  empty (it concerns the whole symbol), and the events stream counts all of them;
* *where* its files are: ``local`` (none verified in the bucket), ``remote`` (only in the bucket),
  ``both`` (every file local and verified in the bucket), ``partial`` (some of each) or
  ``damaged`` (a local copy contradicts its seal hash) — :func:`where`.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from actors.feed.records import DATA_CHANNELS
from actors.logs import get_logger
from actors.storage.layout import HOUR_NS

log = get_logger("status")

from actors.storage.marks import DISCONNECT_KINDS, HOLE_KINDS  # noqa: E402  (one definition, used at seal too)

__all__ = ["DATA_CHANNELS", "DISCONNECT_KINDS", "FileFacts", "HOLE_KINDS", "HourCoverage", "Mark", "counts_for",
           "hour_coverage", "read_marks", "uncovered_hours", "where"]

Mark = tuple[int, str, str]           # (ts_local ns, kind, channel) of one hole or disconnect event


@dataclass(frozen=True)
class FileFacts:
    """What coverage needs to know about one archive file."""

    stream: str                       # binance/perp/l2book/BTCUSDT_depth20
    exchange: str
    symbol: str
    channel: str
    period_start: int                 # ns
    rows: int = 0
    bytes: int = 0
    local: bool = True
    remote: bool = False              # a verified copy is in the bucket
    damaged: bool = False             # the local copy contradicts its seal hash


@dataclass
class HourCoverage:
    """One stream-hour: its files, rows, bytes, where they are, holes and disconnects."""

    stream: str
    channel: str
    hour: int                         # ns, start of the hour
    files: int = 0
    rows: int = 0
    bytes: int = 0
    local: int = 0
    remote: int = 0
    damaged: int = 0
    gaps: int = 0
    disconnects: int = 0

    @property
    def where(self) -> str:
        return where(self.files, self.local, self.remote, self.damaged)


def where(files: int, local: int, remote: int, damaged: int = 0) -> str:
    """``damaged``, ``both``, ``local``, ``remote`` or ``partial`` for a set of files (see module docstring)."""
    if damaged:
        return "damaged"
    if local == files and remote == files:
        return "both"
    if remote == 0:
        return "local"
    if local == 0:
        return "remote"
    return "partial"


def counts_for(event_channel: str, stream_channel: str) -> bool:
    """Whether an event of ``event_channel`` concerns a stream of ``stream_channel``."""
    return stream_channel == "events" or event_channel in ("", stream_channel)


def hour_of(ns: int) -> int:
    return ns - ns % HOUR_NS


def hour_coverage(files: Iterable[FileFacts], marks: dict[tuple[str, str], list[Mark]]) -> dict[
        tuple[str, int], HourCoverage]:
    """Every covered stream-hour of ``files`` with its holes and disconnects from ``marks``
    (``(exchange, symbol) -> [(ts, kind, channel)]``), keyed by ``(stream, hour)``."""
    cells: dict[tuple[str, int], HourCoverage] = {}
    symbol_of: dict[str, tuple[str, str]] = {}
    for f in files:
        hour = hour_of(f.period_start)
        cell = cells.get((f.stream, hour))
        if cell is None:
            cell = cells[(f.stream, hour)] = HourCoverage(f.stream, f.channel, hour)
            symbol_of[f.stream] = (f.exchange, f.symbol)
        cell.files += 1
        cell.rows += f.rows or 0
        cell.bytes += f.bytes or 0
        cell.local += int(f.local)
        cell.remote += int(f.remote)
        cell.damaged += int(f.damaged)
    by_stream: dict[str, list[HourCoverage]] = defaultdict(list)
    for cell in cells.values():
        by_stream[cell.stream].append(cell)
    for stream, stream_cells in by_stream.items():
        channel = stream_cells[0].channel
        per_hour = {cell.hour: cell for cell in stream_cells}
        for ts, kind, ev_channel in marks.get(symbol_of[stream], ()):
            cell = per_hour.get(hour_of(ts))
            if cell is None or not counts_for(ev_channel, channel):
                continue
            cell.gaps += kind in HOLE_KINDS
            cell.disconnects += kind in DISCONNECT_KINDS
    return cells


def read_marks(paths: list[str], start_ns: int | None = None, end_ns: int | None = None) -> list[Mark]:
    """The hole and disconnect events in some events files, within ``[start_ns, end_ns)``.

    A damaged events file is logged and skipped (the other files still count)."""
    if not paths:
        return []
    wanted = pa.array(HOLE_KINDS + DISCONNECT_KINDS)
    flt = pc.is_in(ds.field("kind"), value_set=wanted)
    try:
        table = ds.dataset(paths, format="parquet").to_table(columns=["ts_local", "kind", "channel"], filter=flt)
    except (OSError, pa.ArrowException) as exc:
        log.warning(f"events unreadable ({len(paths)} file(s)): {' '.join(str(exc).split())[:200]}")
        return []
    ts = table.column("ts_local").cast(pa.int64()).to_pylist()
    return [(t, k, c) for t, k, c in zip(ts, table.column("kind").to_pylist(), table.column("channel").to_pylist())
            if (start_ns is None or t >= start_ns) and (end_ns is None or t < end_ns)]


def uncovered_hours(cells: dict[tuple[str, int], HourCoverage], stream: str, hours: Iterable[int]) -> list[int]:
    """The hours of ``hours`` in which ``stream`` has no file."""
    return [h for h in hours if (stream, h) not in cells]
