"""Export to Tardis-style CSV: one gzip file per UTC day per data type, as Tardis's downloads name them
(``{exchange}_{data type}_{YYYY-MM-DD}_{symbol}.csv.gz``).

* ``trades``: ``exchange,symbol,timestamp,local_timestamp,id,side,price,amount`` (side ``buy``/``sell``/
  ``unknown``, the aggressor's);
* ``book_snapshot_{depth}``: ``exchange,symbol,timestamp,local_timestamp`` then, level by level,
  ``asks[i].price,asks[i].amount,bids[i].price,bids[i].amount`` (empty where the book has fewer levels).

``timestamp`` is the venue's time (our receive time where the venue gives none), ``local_timestamp`` our
receive time, both in microseconds since the epoch, as Tardis writes them. Each hour is appended to the
open day file (pyarrow's CSV writer into a gzip stream): memory holds one hour.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv

from actors.export.driver import ExportRequest, Hour
from actors.export.hftbacktest import padded
from actors.storage.layout import NS


def _micros(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    local = table.column("ts_local").cast(pa.int64())
    exch = pc.coalesce(table.column("ts_exchange").cast(pa.int64()), local)
    return pc.divide(exch, 1000), pc.divide(local, 1000)


def trades_table(trades: pa.Table, exchange: str, symbol: str) -> pa.Table:
    """Our trades as Tardis ``trades`` columns."""
    n = trades.num_rows
    ts, local = _micros(trades)
    side = trades.column("side").fill_null(0).to_numpy()
    return pa.table({
        "exchange": pa.array([exchange] * n), "symbol": pa.array([symbol] * n), "timestamp": ts, "local_timestamp": local,
        "id": trades.column("trade_id"),
        "side": pa.array(np.where(side > 0, "buy", np.where(side < 0, "sell", "unknown"))),
        "price": trades.column("price"), "amount": trades.column("size")})


def book_columns(depth: int) -> list[str]:
    """The ``book_snapshot`` level columns, in Tardis's order."""
    return [f"{side}[{i}].{what}" for i in range(depth) for side in ("asks", "bids") for what in ("price", "amount")]


def books_table(books: pa.Table, exchange: str, symbol: str, depth: int) -> pa.Table:
    """Our books as Tardis ``book_snapshot_{depth}`` columns."""
    n = books.num_rows
    ts, local = _micros(books)
    columns = {"exchange": pa.array([exchange] * n), "symbol": pa.array([symbol] * n), "timestamp": ts,
               "local_timestamp": local}
    widest = max(depth, int(pc.max(pc.list_value_length(books.column("bid_px"))).as_py() or 0),
                 int(pc.max(pc.list_value_length(books.column("ask_px"))).as_py() or 0))
    mats = {name: padded(books.column(name), widest)[:, :depth] for name in ("ask_px", "ask_sz", "bid_px", "bid_sz")}
    for i in range(depth):
        for side in ("ask", "bid"):
            for what, ours in (("price", "px"), ("amount", "sz")):
                values = mats[f"{side}_{ours}"][:, i]
                columns[f"{side}s[{i}].{what}"] = pa.array(values, mask=np.isnan(values))
    return pa.table(columns)


class _DayFiles:
    """One gzip CSV per UTC day of one data type, opened as rows of that day arrive."""

    def __init__(self, folder: Path, exchange: str, kind: str, symbol: str) -> None:
        self.folder, self.exchange, self.kind, self.symbol = folder, exchange, kind, symbol
        self.day: str | None = None
        self.writer: csv.CSVWriter | None = None
        self.stream: pa.CompressedOutputStream | None = None
        self.files: list[str] = []

    def write(self, table: pa.Table, local_ns: np.ndarray) -> None:
        days = (local_ns // (86400 * NS)).astype(np.int64)
        for day in np.unique(days):
            part = table.filter(pa.array(days == day))
            name = datetime.fromtimestamp(int(day) * 86400, tz=timezone.utc).strftime("%Y-%m-%d")
            if name != self.day:
                self.close()
                path = self.folder / f"{self.exchange}_{self.kind}_{name}_{self.symbol}.csv.gz"
                self.stream = pa.CompressedOutputStream(str(path), "gzip")
                self.writer = csv.CSVWriter(self.stream, part.schema,
                                            write_options=csv.WriteOptions(quoting_style="none"))
                self.day = name
                self.files.append(str(path))
            self.writer.write_table(part)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.stream.close()
        self.writer = self.stream = None


class TardisWriter:
    """The ``tardis`` export format (see the module docstring): ``out`` is a folder."""

    channels = ("l2book", "trades")

    def __init__(self, out: str | Path, req: ExportRequest) -> None:
        self.folder = Path(out)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.req = req
        self.depth = req.depth or 20
        self.trades = _DayFiles(self.folder, req.exchange, "trades", req.symbol)
        self.books = _DayFiles(self.folder, req.exchange, f"book_snapshot_{self.depth}", req.symbol)

    def write_hour(self, hour: Hour) -> None:
        if hour.trades is not None and hour.trades.num_rows:
            self.trades.write(trades_table(hour.trades, self.req.exchange, self.req.symbol),
                              hour.trades.column("ts_local").cast(pa.int64()).to_numpy())
        if hour.books is not None and hour.books.num_rows:
            self.books.write(books_table(hour.books, self.req.exchange, self.req.symbol, self.depth),
                             hour.books.column("ts_local").cast(pa.int64()).to_numpy())

    def close(self) -> list[str]:
        self.trades.close()
        self.books.close()
        return self.books.files + self.trades.files
