"""What is in an archive and is it healthy: every stream at a glance, and its coverage hour by hour.

:func:`archive_overview` answers ``python launch.py mode=status`` without a stream named: one
:class:`StreamStatus` per archived stream (venue, symbol, channel) with its first and last hour,
rows in its last hour, hours missing between them, gap events (``gap``, ``disconnect``,
``lost`` in the symbol's events channel) and where its files are (``local``: none backed up,
``both``: every local file verified in the bucket, ``remote``: only in the bucket, ``partial``).
:func:`coverage_grid` is the same information as a streams x hours matrix for a picture.

Both read the catalog (one query, no file opened) and the events files of the range (a few KB
an hour); without a readable catalog they read the file tree (footers only).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from actors.logs import get_logger
from actors.storage.catalog import Catalog, CatalogError, as_ns_ints, sql_str, ts_literal
from actors.storage.layout import HOUR_NS, LayoutError, parse_relpath

log = get_logger("status")

GAP_KINDS = ("gap", "lost")
DISCONNECT_KINDS = ("disconnect",)
DATA_CHANNELS = ("l2book", "trades")


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
    backup: str = "local"


@dataclass
class CoverageGrid:
    """Streams x hours: rows, backed up, gap and disconnect events (for :mod:`actors.cli.plot`)."""

    streams: list[str]
    hours: list[int]
    rows: np.ndarray                 # int64 [streams, hours]; 0 = no file
    backed_up: np.ndarray            # bool: every file of the cell is verified in the bucket
    gaps: np.ndarray                 # int64: gap/lost events in the hour
    disconnects: np.ndarray
    events: dict[str, list[tuple[int, str]]] = field(default_factory=dict)


def _files(root: str, catalog: Catalog | None, where: list[str]) -> list[dict[str, Any]]:
    """Catalog rows of the sealed files matching the filters (the tree's footers without a catalog)."""
    columns = ["key", "exchange", "market", "channel", "symbol", "period_start", "rows", "backed_up_at", "local"]
    if catalog is not None:
        try:
            table = catalog.query(" AND ".join(where) if where else None, columns=columns)
            return as_ns_ints(table).to_pylist()
        except CatalogError as exc:
            log.error(f"{exc}; reading the file tree instead")
    return _tree_files(root, where)


def _tree_files(root: str, where: list[str]) -> list[dict[str, Any]]:
    from actors.backup.state import sealed_files
    import pyarrow.parquet as pq

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


def _events(root: str, files: list[dict], start_ns: int | None, end_ns: int | None) -> dict[tuple[str, str], list]:
    """(exchange, symbol) -> [(ts_local, kind, channel)] of the gap/disconnect events in the range."""
    by_symbol: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in files:
        if f["channel"] == "events" and f.get("local", True) and (Path(root) / f["key"]).is_file():
            by_symbol[(f["exchange"], f["symbol"])].append(str(Path(root) / f["key"]))
    wanted = pa.array(GAP_KINDS + DISCONNECT_KINDS)
    out: dict[tuple[str, str], list] = {}
    for key, paths in by_symbol.items():
        flt = pc.is_in(ds.field("kind"), value_set=wanted)
        try:
            table = ds.dataset(paths, format="parquet").to_table(columns=["ts_local", "kind", "channel"], filter=flt)
        except (OSError, pa.ArrowException) as exc:        # a damaged events file: say so, keep going
            log.warning(f"events of {key[0]} {key[1]} unreadable: {exc}")
            continue
        ts = table.column("ts_local").cast(pa.int64()).to_pylist()
        rows = [(t, k, c) for t, k, c in zip(ts, table.column("kind").to_pylist(), table.column("channel").to_pylist())
                if (start_ns is None or t >= start_ns) and (end_ns is None or t < end_ns)]
        out[key] = rows
    return out


def archive_overview(root: str, catalog: Catalog | None = None, exchange: str | None = None,
                     symbol: str | None = None, channel: str | None = None, start_ns: int | None = None,
                     end_ns: int | None = None) -> list[StreamStatus]:
    """Every l2book/trades stream of the archive (narrowed by the filters), sorted by stream id."""
    files = _files(root, catalog, _filters(exchange, symbol, None, start_ns, end_ns))
    events = _events(root, files, start_ns, end_ns)
    streams: dict[str, StreamStatus] = {}
    hours_of: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    local: dict[str, list[bool]] = defaultdict(list)
    backed: dict[str, list[bool]] = defaultdict(list)
    for f in files:
        if f["channel"] not in DATA_CHANNELS or (channel and f["channel"] != channel):
            continue
        sid = _stream_id(f)
        hour = f["period_start"] - f["period_start"] % HOUR_NS
        st = streams.get(sid)
        if st is None:
            st = streams[sid] = StreamStatus(f["exchange"], f["symbol"], f["channel"], sid, hour, hour)
        st.first_hour, st.last_hour = min(st.first_hour, hour), max(st.last_hour, hour)
        st.files += 1
        st.rows += f["rows"] or 0
        hours_of[sid][hour] += f["rows"] or 0
        local[sid].append(bool(f["local"]))
        backed[sid].append(f["backed_up_at"] is not None)
    for sid, st in streams.items():
        st.rows_last_hour = hours_of[sid][st.last_hour]
        st.missing_hours = (st.last_hour - st.first_hour) // HOUR_NS + 1 - len(hours_of[sid])
        for ts, kind, ev_channel in events.get((st.exchange, st.symbol), []):
            if ev_channel in ("", st.channel):
                st.gaps += kind in GAP_KINDS
                st.disconnects += kind in DISCONNECT_KINDS
        st.backup = ("remote" if not any(local[sid]) else "both" if all(backed[sid]) else
                     "local" if not any(backed[sid]) else "partial")
    return [streams[sid] for sid in sorted(streams)]


def coverage_grid(root: str, catalog: Catalog | None = None, exchange: str | None = None,
                  symbol: str | None = None, channel: str | None = None, start_ns: int | None = None,
                  end_ns: int | None = None) -> CoverageGrid:
    """The overview as a streams x hours matrix (hours from the first to the last archived one)."""
    files = [f for f in _files(root, catalog, _filters(exchange, symbol, None, start_ns, end_ns))
             if f["channel"] in DATA_CHANNELS and (not channel or f["channel"] == channel)]
    every = _files(root, catalog, _filters(exchange, symbol, "events", start_ns, end_ns)) if files else []
    events = _events(root, every, start_ns, end_ns)
    streams = sorted({_stream_id(f) for f in files})
    if not streams:
        return CoverageGrid([], [], np.zeros((0, 0), np.int64), np.zeros((0, 0), bool),
                            np.zeros((0, 0), np.int64), np.zeros((0, 0), np.int64))
    first = min(f["period_start"] for f in files)
    last = max(f["period_start"] for f in files)
    hours = list(range(first - first % HOUR_NS, last + 1, HOUR_NS))
    col = {h: i for i, h in enumerate(hours)}
    row = {s: i for i, s in enumerate(streams)}
    shape = (len(streams), len(hours))
    rows, backed, seen = np.zeros(shape, np.int64), np.ones(shape, bool), np.zeros(shape, bool)
    for f in files:
        r, c = row[_stream_id(f)], col[f["period_start"] - f["period_start"] % HOUR_NS]
        rows[r, c] += f["rows"] or 0
        seen[r, c] = True
        backed[r, c] &= f["backed_up_at"] is not None
    gaps, disconnects = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    marks: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for sid in streams:
        exchange_, _, channel_, name = sid.split("/")
        sym = name.split("_depth")[0]
        for ts, kind, ev_channel in events.get((exchange_, sym), []):
            hour = ts - ts % HOUR_NS
            if ev_channel not in ("", channel_) or hour not in col:
                continue
            (gaps if kind in GAP_KINDS else disconnects)[row[sid], col[hour]] += 1
            marks[sid].append((ts, kind))
    return CoverageGrid(streams, hours, rows, backed & seen, gaps, disconnects, dict(marks))
