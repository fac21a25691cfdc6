"""A small archive mixing what real archives mix: several venues and markets, integer-like and text
trade ids, ms / us / ns exchange times, book depths, and files of formats 1, 2 and 3.

Format-3 files are sealed by the real writer core; older ones by the old writers
(tests/legacy_formats.py); every file is in the catalog, as sealing left it. :func:`build` returns
the ground truth: per channel, the rows as handed to the writer (what a format-1/2 file could
not hold, ``trade_type``, is null there), with the layout's ``exchange, market, symbol`` (and
``depth``) columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from actors.feed.records import SCHEMAS, StreamBuffers, conform
from actors.storage.catalog import Catalog
from actors.storage.layout import HOUR_NS, NS, StreamKey
from actors.storage.writer import SymbolStore
from legacy_formats import add_legacy_file, v1_table

T0 = 1_736_100_000 * NS - (1_736_100_000 * NS) % HOUR_NS      # an hour boundary (2025-01-05 18:00 UTC)
HOURS = 2
MS, US = 1_000_000, 1_000


@dataclass(frozen=True)
class Venue:
    exchange: str
    market: str
    symbol: str
    depth: int
    ids: str            # "int": decimal integers (Binance...), "text": anything else
    time_unit: int      # the venue's exchange-time resolution, in ns


VENUES = (Venue("binance", "perp", "BTCUSDT", 20, "int", MS),
          Venue("bybit", "perp", "BTCUSDT", 10, "text", MS),
          Venue("hyperliquid", "perp", "BTC", 20, "int", MS),
          Venue("okx", "spot", "BTC-USDT", 5, "text", US))


def version_of(venue_index: int, hour: int) -> int:
    """Which format the hour's files of a venue are written in (every venue gets a mix)."""
    return (venue_index + hour) % 3 + 1


def rows(venue: Venue, index: int, hour: int) -> StreamBuffers:
    """One hour of trades, books and events of a venue (distinct receive times per stream)."""
    sink = StreamBuffers()
    start = T0 + hour * HOUR_NS
    for k in range(40 + 7 * index):
        ts = start + 60 * NS + k * 37 * MS + index * 101 + k          # ns receive times
        exch = (ts - 3 * MS) // venue.time_unit * venue.time_unit if k % 9 else None
        trade_id = str(5_266_583_935 + 1000 * hour + k) if venue.ids == "int" else f"{index}{k:03d}-{hour}ab-{k * 7:x}"
        price = 60_000.5 + index * 10 + (k % 13) * 0.1
        kind = "LIQUIDATION" if k % 10 == 3 else None
        sink.trade(venue.symbol, ts, exch, trade_id, price, 0.001 * (k % 7 + 1), 1 if k % 3 else -1, kind)
        levels = venue.depth if k % 5 else venue.depth - 2          # a thin book now and then
        sink.book(venue.symbol, ts + 11, exch, 9_000_000 + 1000 * hour + k,
                  [price - 0.1 * i for i in range(levels)], [0.5 + i for i in range(levels)],
                  [price + 0.1 * (i + 1) for i in range(levels)], [1.5 + i for i in range(levels)])
        if k % 20 == 0:                      # the channels format 3 added
            sink.derivative(venue.symbol, ts + 13, exch, (price + 0.2, price + 0.3, 1e-4 * (k % 3), None,
                                                         T0 + 8 * 3600 * NS, 1000.0 + k, price))
        if k % 50 == 7:
            sink.liquidation(venue.symbol, ts + 17, exch, 1 if k % 2 else -1, price, 0.5, None if k % 3 else str(k))
    sink.event(venue.symbol, start + 30 * NS, "", "connect", "ws://127.0.0.1")
    sink.event(venue.symbol, start + 61 * NS, "l2book", "gap", "sequence break", 41, 45)
    return sink


def _with_layout(table: pa.Table, venue: Venue, channel: str) -> pa.Table:
    for name, value, type_ in (("exchange", venue.exchange, pa.string()), ("market", venue.market, pa.string()),
                               ("symbol", venue.symbol, pa.string())):
        table = table.append_column(pa.field(name, type_), pa.array([value] * table.num_rows, type_))
    if channel == "l2book":
        table = table.append_column(pa.field("depth", pa.int32()), pa.array([venue.depth] * table.num_rows,
                                                                            pa.int32()))
    return table


def build(root: str | Path) -> dict[str, pa.Table]:
    """Write the mixed archive under ``root``; the ground truth per channel (see module docstring)."""
    root = Path(root)
    catalog = Catalog(str(root))
    truth: dict[str, list[pa.Table]] = {ch: [] for ch in SCHEMAS}
    for index, venue in enumerate(VENUES):
        for hour in range(HOURS):
            batches = rows(venue, index, hour).take()
            version = version_of(index, hour)
            if version < 3:                      # derivatives and liquidations came with format 3
                batches = {key: b for key, b in batches.items() if key[1] not in ("derivatives", "liquidations")}
            if version == 3:
                core = SymbolStore(str(root), venue.exchange, venue.market, [venue.symbol], venue.depth,
                                        HOUR_NS, f"w-{venue.exchange}", catalog, node="mixed")
                core.write("mixed", hour + 1, batches)
                core.seal_all()
            for (_, channel), batch in batches.items():
                table = pa.Table.from_batches([batch])
                if version < 3:
                    rel = StreamKey.of(venue.exchange, venue.market, channel, venue.symbol, venue.depth).relpath(
                        T0 + hour * HOUR_NS)
                    add_legacy_file(root, rel, table, version, catalog)
                    table = conform(v1_table(table, channel), channel)
                truth[channel].append(_with_layout(table, venue, channel))
    return {ch: pa.concat_tables(parts) for ch, parts in truth.items() if parts}   # the channels it holds


SORT_KEY = ("exchange", "market", "symbol", "ts_local", "kind")


def canonical(table: pa.Table, channel: str) -> list[tuple]:
    """Rows as plain tuples (times as int ns, text as str) in the dataset schema's column order,
    sorted: two readers agree when these are equal."""
    from actors.restore.dataset import dataset_schema

    names = dataset_schema(channel).names
    columns = []
    for name in names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        columns.append(column.to_pylist())
    keys = [names.index(k) for k in SORT_KEY if k in names]
    return sorted(zip(*columns), key=lambda row: tuple((row[i] is None, row[i]) for i in keys))
