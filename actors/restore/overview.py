"""What is in an archive and is it healthy: every stream at a glance, and its coverage hour by hour.

:func:`archive_overview` answers ``python launch.py mode=status`` without a stream named: one
:class:`StreamStatus` per archived stream (venue, symbol, channel) with its first and last hour,
rows in its last hour, hours missing between them, holes and disconnects, and where its files
are. :func:`coverage_grid` is the same information as a streams x hours matrix for a picture.
Both apply the one coverage rule of :mod:`actors.restore.coverage` (also used by
:meth:`actors.restore.restorer.Restorer.coverage` and ``mode=restore``).

Both read the catalog, one query and no file opened: each events file's row carries its hole and
disconnect counts (``marks``, counted at seal, :mod:`actors.storage.marks`), so a status over a
year of files reads no events file. Events files sealed before marks existed, and ranges that
start or end within an hour, are read (a few KB an hour); without a readable catalog they read
the file tree (footers only).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from actors.logs import get_logger
from actors.restore.coverage import (DATA_CHANNELS, FileFacts, HourCoverage, Mark, hour_coverage, read_marks,
                                     where)
from actors.storage.catalog import Catalog, CatalogError, as_ns_ints, sql_str, ts_literal
from actors.storage.layout import HOUR_NS, LayoutError, parse_relpath

log = get_logger("status")


@dataclass
class StreamStatus:
    """One archived stream (see module docstring)."""

    exchange: str
    symbol: str
    channel: str
    stream: str                      # binance/perp/l2book/BTCUSDT_depth20
    first_hour: int                  # ns
    last_hour: int
    files: int = 0
    rows: int = 0
    rows_last_hour: int = 0
    missing_hours: int = 0
    gaps: int = 0
    disconnects: int = 0
    where: str = "local"             # see actors.restore.coverage.where


@dataclass
class CoverageGrid:
    """Streams x hours: rows, backed up, gap and disconnect events (for :mod:`actors.cli.plot`)."""

    streams: list[str]
    hours: list[int]
    rows: np.ndarray                 # int64 [streams, hours]; 0 = no file
    backed_up: np.ndarray            # bool: every file of the cell is verified in the bucket
    gaps: np.ndarray                 # int64: hole events (gap/lost) in the hour
    disconnects: np.ndarray


def _files(root: str, catalog: Catalog | None, where: list[str]) -> list[dict[str, Any]]:
    """Catalog rows of the sealed files matching the filters (the tree's footers without a catalog)."""
    columns = ["key", "exchange", "market", "channel", "symbol", "period_start", "rows", "backed_up_at", "local",
               "marks"]
    if catalog is not None:
        try:
            table = catalog.query(" AND ".join(where) if where else None, columns=columns)
            return as_ns_ints(table).to_pylist()
        except CatalogError as exc:
            log.error(f"{exc}; reading the file tree instead")
    return _tree_files(root, where)


def _tree_files(root: str, where: list[str]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from actors.storage.layout import sealed_files

    out = []
    for rel in sorted(sealed_files(root)):
        try:
            parsed = parse_relpath(rel)
            rows = pq.ParquetFile(Path(root) / rel).metadata.num_rows
        except (LayoutError, OSError, pa.ArrowException):
            continue
        s = parsed.stream
        out.append({"key": rel, "exchange": s.exchange, "market": s.market, "channel": s.channel,
                    "symbol": s.symbol, "period_start": parsed.period_start_ns, "rows": rows,
                    "backed_up_at": None, "local": True})
    return [f for f in out if _matches(f, where)]


def _matches(row: dict, where: list[str]) -> bool:
    for clause in where:          # only the equality clauses built by _filters apply to tree rows
        column, _, value = clause.partition(" = ")
        if value.startswith("'") and str(row.get(column)) != value.strip("'").replace("''", "'"):
            return False
    return True


def _filters(exchange: str | None, symbol: str | None, channel: str | None, start_ns: int | None,
             end_ns: int | None) -> list[str]:
    where = [f"{column} = {sql_str(value)}" for column, value in
             (("exchange", exchange), ("symbol", symbol), ("channel", channel)) if value]
    if start_ns is not None:
        where.append(f"period_start >= {ts_literal(start_ns - start_ns % HOUR_NS)}")
    if end_ns is not None:
        where.append(f"period_start < {ts_literal(end_ns)}")
    return where


def _stream_id(row: dict) -> str:
    return "/".join(row["key"].split("/")[:3] + [Path(row["key"]).name.rsplit("_", 1)[0]])


def _marks(root: str, files: list[dict], start_ns: int | None, end_ns: int | None) -> dict[tuple[str, str], list[Mark]]:
    """(exchange, symbol) -> the hole and disconnect events of its events files in the range:
    from the catalog's ``marks`` (one mark per event, at the start of its file's hour) where the
    range is whole hours, else read from the local events files."""
    from actors.storage.marks import decode_marks

    whole_hours = all(t is None or t % HOUR_NS == 0 for t in (start_ns, end_ns))
    out: dict[tuple[str, str], list[Mark]] = defaultdict(list)
    by_symbol: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in files:
        if f["channel"] != "events":
            continue
        counted = decode_marks(f.get("marks")) if whole_hours else None
        if counted is not None:
            for channel, (holes, disconnects) in counted.items():
                out[(f["exchange"], f["symbol"])] += ([(f["period_start"], "gap", channel)] * holes +
                                                      [(f["period_start"], "disconnect", channel)] * disconnects)
        elif f.get("local", True) and (Path(root) / f["key"]).is_file():
            by_symbol[(f["exchange"], f["symbol"])].append(str(Path(root) / f["key"]))
    for key, paths in by_symbol.items():
        out[key] += read_marks(paths, start_ns, end_ns)
    return dict(out)


def _facts(rows: list[dict]) -> list[FileFacts]:
    return [FileFacts(_stream_id(f), f["exchange"], f["symbol"], f["channel"], f["period_start"], f["rows"] or 0,
                      0, bool(f["local"]), f["backed_up_at"] is not None) for f in rows]


def _data_cells(root: str, catalog: Catalog | None, exchange: str | None, symbol: str | None, channel: str | None,
                start_ns: int | None, end_ns: int | None) -> dict[tuple[str, int], HourCoverage]:
    files = _files(root, catalog, _filters(exchange, symbol, None, start_ns, end_ns))
    data = [f for f in files if f["channel"] in DATA_CHANNELS and (not channel or f["channel"] == channel)]
    return hour_coverage(_facts(data), _marks(root, files, start_ns, end_ns) if data else {})


def archive_overview(root: str, catalog: Catalog | None = None, exchange: str | None = None,
                     symbol: str | None = None, channel: str | None = None, start_ns: int | None = None,
                     end_ns: int | None = None) -> list[StreamStatus]:
    """Every l2book/trades stream of the archive (narrowed by the filters), sorted by stream id."""
    by_stream: dict[str, list[HourCoverage]] = defaultdict(list)
    for cell in _data_cells(root, catalog, exchange, symbol, channel, start_ns, end_ns).values():
        by_stream[cell.stream].append(cell)
    out = []
    for sid in sorted(by_stream):
        cells = sorted(by_stream[sid], key=lambda c: c.hour)
        exchange_, _, channel_, name = sid.split("/")
        first, last = cells[0].hour, cells[-1].hour
        out.append(StreamStatus(
            exchange_, name.split("_depth")[0], channel_, sid, first, last, files=sum(c.files for c in cells),
            rows=sum(c.rows for c in cells), rows_last_hour=cells[-1].rows,
            missing_hours=(last - first) // HOUR_NS + 1 - len(cells), gaps=sum(c.gaps for c in cells),
            disconnects=sum(c.disconnects for c in cells),
            where=where(*(sum(getattr(c, k) for c in cells) for k in ("files", "local", "remote", "damaged")))))
    return out


def coverage_grid(root: str, catalog: Catalog | None = None, exchange: str | None = None,
                  symbol: str | None = None, channel: str | None = None, start_ns: int | None = None,
                  end_ns: int | None = None) -> CoverageGrid:
    """The overview as a streams x hours matrix (hours from the first to the last archived one)."""
    cells = _data_cells(root, catalog, exchange, symbol, channel, start_ns, end_ns)
    streams = sorted({cell.stream for cell in cells.values()})
    if not streams:
        return CoverageGrid([], [], np.zeros((0, 0), np.int64), np.zeros((0, 0), bool),
                            np.zeros((0, 0), np.int64), np.zeros((0, 0), np.int64))
    hours = list(range(min(c.hour for c in cells.values()), max(c.hour for c in cells.values()) + 1, HOUR_NS))
    col = {h: i for i, h in enumerate(hours)}
    row = {s: i for i, s in enumerate(streams)}
    shape = (len(streams), len(hours))
    rows, backed = np.zeros(shape, np.int64), np.zeros(shape, bool)
    gaps, disconnects = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    for cell in cells.values():
        r, c = row[cell.stream], col[cell.hour]
        rows[r, c], backed[r, c] = cell.rows, cell.remote == cell.files
        gaps[r, c], disconnects[r, c] = cell.gaps, cell.disconnects
    return CoverageGrid(streams, hours, rows, backed, gaps, disconnects)
