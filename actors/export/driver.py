"""The export driver: one stream's range, hour by hour, into a format writer (no Ray).

Every format is a :class:`FormatWriter`; :func:`run_export` does what they share:

* checks the range first: an hour that no file covers (the coverage rule of
  :mod:`actors.restore.coverage`, the one ``mode=status`` and ``mode=restore`` use) refuses the
  export, listing the hours, unless ``allow_gaps``;
* makes the range's files local through :class:`~actors.restore.restorer.Restorer` (downloaded
  and verified from the bucket when needed);
* reads them hour by hour through the loaders (so every file format version arrives in the
  record schemas), and hands each hour to the writer: memory holds one hour of rows plus what
  the writer keeps, never the range;
* shows a tqdm bar over the hours and returns an :class:`ExportSummary`.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from actors.errors import TickarchiveError
from actors.restore.coverage import HOLE_KINDS, counts_for
from actors.restore.loading import DEFAULT_MARKET, read_range
from actors.restore.restorer import FileRef, Restorer, RestoreError
from actors.restore.timerange import TimeLike, hour_list, hours_between, parse_range
from actors.storage.layout import HOUR_NS, split_market

FORMATS = ("hftbacktest", "nautilus", "tardis")


class ExportError(TickarchiveError, ValueError):
    """An export that cannot be made (missing hours, unknown format, missing optional package)."""


@dataclass(frozen=True)
class ExportRequest:
    """What to export: one symbol of one venue over ``[start_ns, end_ns)``."""

    exchange: str
    symbol: str
    start_ns: int
    end_ns: int
    depth: int | None = None
    market: str = DEFAULT_MARKET


@dataclass
class Hour:
    """One hour of a stream, as the loaders return it (record schemas, ``ts_*`` as timestamps)."""

    start_ns: int
    books: pa.Table | None          # None: the format does not use books
    trades: pa.Table | None
    holes: list[int] = field(default_factory=list)   # ts_local (ns) of gap/lost events concerning l2book
    missing: tuple[str, ...] = ()   # channels with no file in this hour (only with allow_gaps)

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in (self.books, self.trades) if t is not None)


class FormatWriter(Protocol):
    """One export format: what it reads, and how hours become output."""

    channels: tuple[str, ...]       # data channels it needs ("l2book", "trades")

    def write_hour(self, hour: Hour) -> None: ...

    def close(self) -> list[str]:
        """Finish the output; returns the files written."""


@dataclass
class ExportSummary:
    """What an export wrote."""

    format: str
    files: list[str]
    hours: int
    rows: int                        # archive rows read (books + trades)
    seconds: float
    missing_hours: dict[str, list[int]] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        gaps = sum(len(v) for v in self.missing_hours.values())
        return (f"exported {self.rows:,} rows over {self.hours} hour(s) to {self.format} in {self.seconds:.1f} s "
                f"({rate:,.0f} rows/s): {', '.join(self.files[:3])}{' ...' if len(self.files) > 3 else ''}"
                + (f"; {gaps} missing stream-hour(s) skipped" if gaps else ""))


def missing_hours(restorer: Restorer, req: ExportRequest, channels: tuple[str, ...]) -> dict[str, list[int]]:
    """channel -> hours of the range with no file (locally or in the bucket)."""
    found = {}
    for channel in channels:
        hours = restorer.missing_hours(req.exchange, req.symbol, channel, req.start_ns, req.end_ns, req.depth,
                                       req.market)
        if hours:
            found[channel] = hours
    return found


def _local_files(restorer: Restorer, req: ExportRequest, channel: str) -> list[tuple[FileRef, str]]:
    try:
        refs = restorer.paths(req.exchange, req.symbol, channel, req.start_ns, req.end_ns, req.depth, req.market)
    except RestoreError:
        if channel != "events":       # no events file at all (copied-in data): no holes to mark
            raise
        return []
    return list(zip(refs, restorer.restore_refs(refs)))


def _overlapping(files: list[tuple[FileRef, str]], lo: int, hi: int) -> list[str]:
    return [path for ref, path in files if ref.period_start < hi and ref.period_end > lo]


def holes_of(events: pa.Table) -> list[int]:
    """ts_local (ns) of the gap/lost events in ``events`` that concern the book."""
    if not events.num_rows:
        return []
    kinds = pc.is_in(events.column("kind"), value_set=pa.array(HOLE_KINDS))
    picked = events.filter(kinds)
    return sorted(ts for ts, channel in zip(picked.column("ts_local").cast(pa.int64()).to_pylist(),
                                              picked.column("channel").to_pylist())
                  if counts_for(channel or "", "l2book"))


def iter_hours(restorer: Restorer, req: ExportRequest, channels: tuple[str, ...],
               missing: dict[str, list[int]] | None = None) -> Iterator[Hour]:
    """Every hour of the range with the rows of ``channels`` (and the book's holes), in time order."""
    files = {channel: _local_files(restorer, req, channel) for channel in (*channels, "events")}
    missing = missing or {}
    for hour in hours_between(req.start_ns, req.end_ns):
        lo, hi = max(hour, req.start_ns), min(hour + HOUR_NS, req.end_ns)
        tables = {channel: read_range(_overlapping(files[channel], lo, hi), channel, lo, hi)
                  for channel in (*channels, "events")}
        yield Hour(hour, tables.get("l2book"), tables.get("trades"),
                   holes_of(tables["events"]) if "l2book" in channels else [],
                   tuple(c for c in channels if hour in missing.get(c, ())))


def run_export(restorer: Restorer, writer: FormatWriter, fmt: str, req: ExportRequest, allow_gaps: bool = False,
               progress: bool = True) -> ExportSummary:
    """Export ``req`` through ``writer`` hour by hour (see the module docstring)."""
    from tqdm import tqdm

    started = time.perf_counter()
    missing = missing_hours(restorer, req, writer.channels)
    if missing and not allow_gaps:
        raise ExportError("; ".join(f"no {channel} file for {len(hours)} hour(s): {hour_list(hours)}"
                                    for channel, hours in missing.items())
                          + " (export.allow_gaps=true exports the rest)")
    hours = hours_between(req.start_ns, req.end_ns)
    rows = 0
    with tqdm(total=len(hours), unit="h", desc=f"export {fmt}", file=sys.stderr,
              disable=None if progress else True) as bar:
        for hour in iter_hours(restorer, req, writer.channels, missing):
            writer.write_hour(hour)
            rows += hour.rows
            bar.set_postfix_str(f"{rows:,} rows", refresh=False)
            bar.update(1)
    files = writer.close()
    return ExportSummary(fmt, files, len(hours), rows, time.perf_counter() - started, missing)


def export(root: str | Path, format: str, exchange: str, symbol: str, start: TimeLike, end: TimeLike,
           out: str | Path, depth: int | None = None, market: str = DEFAULT_MARKET, allow_gaps: bool = False,
           restorer: Restorer | None = None, progress: bool = True) -> ExportSummary:
    """Export one symbol's books and trades in a range to ``format`` (hftbacktest, nautilus or tardis) at ``out``.

    ``out`` is a ``.npz`` file for hftbacktest, a catalog folder for nautilus, a folder for tardis.
    Pass ``restorer`` to use a bucket (files not local are fetched and verified)."""
    start_ns, end_ns = parse_range(start, end)
    restorer = restorer or Restorer(root)
    market, symbol = split_market(str(symbol), market)          # spot/BTCUSDT names its market
    req = ExportRequest(exchange, str(symbol), start_ns, end_ns, depth, market)
    if depth is None:                 # the archived depth, as restore picks it
        req = ExportRequest(exchange, str(symbol), start_ns, end_ns,
                            restorer.stream_key(exchange, str(symbol), "l2book", None, market).depth, market)
    return run_export(restorer, make_writer(format, out, req), format, req, allow_gaps, progress)


def make_writer(fmt: str, out: str | Path, req: ExportRequest) -> FormatWriter:
    """The writer of one format (its optional packages are imported here)."""
    if fmt == "hftbacktest":
        from actors.export.hftbacktest import HftbacktestWriter
        return HftbacktestWriter(out, req)
    if fmt == "tardis":
        from actors.export.tardis import TardisWriter
        return TardisWriter(out, req)
    if fmt == "nautilus":
        from actors.export.nautilus import NautilusWriter
        return NautilusWriter(out, req)
    raise ExportError(f"unknown export format {fmt!r} (allowed: {', '.join(FORMATS)})")
