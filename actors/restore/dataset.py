"""The whole archive as one dataset: every venue, market, symbol and hour of a channel.

:func:`dataset` returns a :class:`pyarrow.dataset.Dataset` over the channel's sealed files with
the record schema (:mod:`actors.feed.records`) plus the columns the layout names
(:mod:`actors.storage.layout`): ``exchange``, ``market``, ``symbol`` and, for books, ``depth``.
They are not stored in the files: each file's values come from its path (a partition expression
per file), so a filter on them skips whole files, as a filter on ``ts_local`` skips row groups.

A time range (``start``/``end``, any form :func:`~actors.restore.timerange.parse_range` takes)
keeps the files whose period overlaps it (found in the catalog when the archive has one, else
from the layout) and the rows with ``start <= ts_local < end``. Files of any format version
read with the one schema (format 1/2 ids and ms times are cast exactly on the fly), so an archive
does not have to be migrated first. Only files on local disk are included (``mode=restore``
brings remote-only hours back).

:func:`duckdb_relation` and :func:`polars_frame` (a LazyFrame) scan the same dataset, with its
projections and filters pushed down; DuckDB and polars are the optional ``query`` extra.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from actors.errors import TickarchiveError
from actors.feed.records import SCHEMAS, TS_TYPE
from actors.storage.layout import HOUR_NS, LayoutError, ParsedPath, parse_relpath, sealed_files, split_market
from actors.restore.timerange import MAX_NS, TimeLike, parse_range

CATALOG_DIR = ".catalog"
LAYOUT_FIELDS = [pa.field("exchange", pa.string()), pa.field("market", pa.string()),
                 pa.field("symbol", pa.string())]
DEPTH_FIELD = pa.field("depth", pa.int32())


class DatasetError(TickarchiveError, ValueError):
    """A dataset request that cannot be answered (unknown channel, bad range)."""


def dataset_schema(channel: str) -> pa.Schema:
    """The record schema of ``channel`` followed by the layout columns."""
    if channel not in SCHEMAS:
        raise DatasetError(f"unknown channel {channel!r} (allowed: {', '.join(SCHEMAS)})")
    extra = LAYOUT_FIELDS + ([DEPTH_FIELD] if channel == "l2book" else [])
    return pa.schema(list(SCHEMAS[channel]) + extra)


def _time_range(start: TimeLike | None, end: TimeLike | None) -> tuple[int, int] | None:
    if start is None and end is None:
        return None
    try:
        if start is not None and end is not None:
            return parse_range(start, end)
        if start is not None:
            return parse_range(start, MAX_NS)[0], MAX_NS
        return 0, parse_range(0, end)[1]
    except ValueError as exc:
        raise DatasetError(str(exc)) from None


def _matches(parsed: ParsedPath, channel: str, exchange: str | None, market: str | None,
             symbol: str | None) -> bool:
    stream = parsed.stream
    return (stream.channel == channel and exchange in (None, stream.exchange) and market in (None, stream.market)
            and symbol in (None, stream.symbol))


def _from_catalog(root: Path, channel: str, span: tuple[int, int], exchange: str | None, market: str | None,
                  symbol: str | None) -> list[str]:
    """Keys of the channel's files whose period overlaps ``span`` (the catalog's period bounds)."""
    from actors.storage.catalog import Catalog, sql_str, ts_literal

    where = [f"channel = {sql_str(channel)}", f"period_start < {ts_literal(span[1])}",
             f"period_end > {ts_literal(span[0])}"]
    for column, value in (("exchange", exchange), ("market", market), ("symbol", symbol)):
        if value is not None:
            where.append(f"{column} = {sql_str(value)}")
    keys = Catalog(str(root)).query(" AND ".join(where), columns=["key"]).column("key").to_pylist()
    return [key for key in keys if (root / key).is_file()]


def archive_files(root: str | Path, channel: str, *, start: TimeLike | None = None, end: TimeLike | None = None,
                  exchange: str | None = None, market: str | None = None,
                  symbol: str | None = None) -> list[tuple[str, ParsedPath]]:
    """The local sealed files a :func:`dataset` reads: (relative path, parsed path), sorted by
    stream and period. A ``symbol`` carrying its market (``spot/BTCUSDT``) selects that market."""
    if symbol is not None and "/" in symbol:
        market, symbol = split_market(symbol)
    root = Path(root)
    span = _time_range(start, end)
    if span is not None and (root / CATALOG_DIR).is_dir():
        keys = _from_catalog(root, channel, span, exchange, market, symbol)
    else:
        keys = list(sealed_files(root))
    found = []
    for key in keys:
        try:
            parsed = parse_relpath(key)
        except LayoutError:
            continue
        if not _matches(parsed, channel, exchange, market, symbol):
            continue
        period_end = parsed.period_end_ns or parsed.period_start_ns + HOUR_NS
        if span is not None and not (parsed.period_start_ns < span[1] and period_end > span[0]):
            continue
        found.append((key, parsed))
    stream = lambda item: (item[1].stream.exchange, item[1].stream.market, item[1].stream.symbol,  # noqa: E731
                           item[1].stream.depth or 0, item[1].period_start_ns, item[0])
    return sorted(found, key=stream)


def _partition(parsed: ParsedPath, channel: str) -> ds.Expression:
    """The layout columns' values of one file, as the expression its rows satisfy."""
    stream = parsed.stream
    expr = ((ds.field("exchange") == stream.exchange) & (ds.field("market") == stream.market)
            & (ds.field("symbol") == stream.symbol))
    if channel == "l2book":
        depth = pa.scalar(stream.depth, pa.int32()) if stream.depth is not None else None
        expr = expr & (ds.field("depth") == depth if depth is not None else ds.field("depth").is_null())
    return expr


def dataset(root: str | Path, channel: str, *, start: TimeLike | None = None, end: TimeLike | None = None,
            exchange: str | None = None, market: str | None = None, symbol: str | None = None) -> ds.Dataset:
    """Every local file of ``channel`` under ``root`` (optionally one venue / market / symbol and a
    time range) as one :class:`pyarrow.dataset.Dataset` (see module docstring)."""
    schema = dataset_schema(channel)
    files = archive_files(root, channel, start=start, end=end, exchange=exchange, market=market, symbol=symbol)
    root = Path(root).absolute()
    data = ds.FileSystemDataset.from_paths(
        [os.path.join(str(root), rel) for rel, _ in files], schema=schema, format=ds.ParquetFileFormat(),
        filesystem=pafs.LocalFileSystem(), partitions=[_partition(parsed, channel) for _, parsed in files])
    span = _time_range(start, end)
    if span is None:
        return data
    lo, hi = (pa.scalar(t, type=TS_TYPE) for t in span)
    return data.filter((ds.field("ts_local") >= lo) & (ds.field("ts_local") < hi))


def duckdb_relation(root: str | Path, channel: str, *, connection: Any = None, **query: Any):
    """The :func:`dataset` as a DuckDB relation (on ``connection``, default DuckDB's own); ``query``
    takes :func:`dataset`'s keywords. Register it as a view to use it in SQL:
    ``duckdb_relation(...).create_view("trades")``."""
    try:
        import duckdb
    except ImportError:
        raise DatasetError("duckdb is not installed (pip install 'tickarchive[query]')") from None
    con = connection if connection is not None else duckdb.default_connection()
    return con.from_arrow(dataset(root, channel, **query))


def polars_frame(root: str | Path, channel: str, **query: Any):
    """The :func:`dataset` as a polars LazyFrame; ``query`` takes :func:`dataset`'s keywords."""
    try:
        import polars as pl
    except ImportError:
        raise DatasetError("polars is not installed (pip install 'tickarchive[query]')") from None
    return pl.scan_pyarrow_dataset(dataset(root, channel, **query))
