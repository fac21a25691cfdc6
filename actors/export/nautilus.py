"""Export to a Nautilus Trader data catalog: ``OrderBookDepth10`` from our books and ``TradeTick`` from our
trades, written by nautilus-trader's own ``ParquetDataCatalog`` (optional extra ``nautilus``).

* the instrument id is ``{symbol}-PERP.{EXCHANGE}`` for perpetuals (Nautilus's crypto convention, e.g.
  ``BTCUSDT-PERP.BINANCE``), ``{symbol}.{EXCHANGE}`` for spot, ``{symbol}-{MARKET}.{EXCHANGE}`` otherwise;
* each depth row holds our top 10 levels per side (a book with fewer levels is padded with Nautilus's
  null order); ``sequence`` is the venue's update id where there is one;
* ``ts_event`` is the venue's time (our receive time where the venue gives none), ``ts_init`` our receive
  time; a trade's ``aggressor_side`` is the taker's side, its ``trade_id`` the venue's id;
* price and size precisions are the fewest decimals that hold every value of the first hour (Nautilus
  keeps one precision per instrument).

Every hour is one ``write_data`` call (one Parquet file per data type and hour): memory holds one hour.
Trades of size 0 cannot be a ``TradeTick`` and are left out (counted in ``skipped``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from actors.export.driver import ExportError, ExportRequest, Hour

LEVELS = 10


def instrument_id_text(exchange: str, symbol: str, market: str) -> str:
    """Our stream's instrument id in Nautilus's convention (see the module docstring)."""
    venue = exchange.upper()
    if market == "perp":
        return f"{symbol}-PERP.{venue}"
    if market == "spot":
        return f"{symbol}.{venue}"
    return f"{symbol}-{market.upper()}.{venue}"


def decimals(values: np.ndarray, most: int = 9) -> int:
    """The fewest decimals (up to ``most``) that write every value exactly."""
    values = values[np.isfinite(values)]
    for p in range(most + 1):
        if np.all(np.abs(np.round(values, p) - values) <= 1e-9 * np.maximum(1.0, np.abs(values))):
            return p
    return most


def _import():
    try:
        from nautilus_trader.model import data, enums, identifiers, objects
        from nautilus_trader.persistence.catalog import ParquetDataCatalog
    except ImportError:
        raise ExportError("export.format=nautilus needs nautilus-trader: pip install 'tickarchive[nautilus]'") \
            from None
    return data, enums, identifiers, objects, ParquetDataCatalog


class NautilusWriter:
    """The ``nautilus`` export format (see the module docstring): ``out`` is the catalog folder."""

    channels = ("l2book", "trades")

    def __init__(self, out: str | Path, req: ExportRequest) -> None:
        self.data, self.enums, ids, self.objects, catalog_type = _import()
        Path(out).mkdir(parents=True, exist_ok=True)
        self.catalog = catalog_type(str(out))
        self.out = str(out)
        self.instrument = ids.InstrumentId.from_str(instrument_id_text(req.exchange, req.symbol, req.market))
        self.trade_id = ids.TradeId
        self.precision: tuple[int, int] | None = None
        self.skipped = 0
        self.written = {"OrderBookDepth10": 0, "TradeTick": 0}

    def _precisions(self, hour: Hour) -> tuple[int, int]:
        if self.precision is None:
            prices, sizes = [np.zeros(0)], [np.zeros(0)]
            if hour.books is not None and hour.books.num_rows:
                prices += [hour.books.column(c).combine_chunks().values.to_numpy() for c in ("bid_px", "ask_px")]
                sizes += [hour.books.column(c).combine_chunks().values.to_numpy() for c in ("bid_sz", "ask_sz")]
            if hour.trades is not None and hour.trades.num_rows:
                prices.append(hour.trades.column("price").to_numpy())
                sizes.append(hour.trades.column("size").to_numpy())
            if sum(len(p) for p in prices) == 0:
                return 8, 8
            self.precision = (decimals(np.concatenate(prices)), decimals(np.concatenate(sizes)))
        return self.precision

    def write_hour(self, hour: Hour) -> None:
        px_prec, sz_prec = self._precisions(hour)
        if hour.books is not None and hour.books.num_rows:
            depths = self._depths(hour.books, px_prec, sz_prec)
            self.catalog.write_data(depths)
            self.written["OrderBookDepth10"] += len(depths)
        if hour.trades is not None and hour.trades.num_rows:
            ticks = self._ticks(hour.trades, px_prec, sz_prec)
            if ticks:
                self.catalog.write_data(ticks)
                self.written["TradeTick"] += len(ticks)

    @staticmethod
    def _times(table: pa.Table) -> tuple[list[int], list[int]]:
        local = table.column("ts_local").cast(pa.int64()).to_pylist()
        exch = table.column("ts_exchange").cast(pa.int64()).to_pylist()
        return [e if e else t for e, t in zip(exch, local)], local

    def _depths(self, books: pa.Table, px_prec: int, sz_prec: int) -> list:
        BookOrder, Price, Quantity = self.data.BookOrder, self.objects.Price, self.objects.Quantity
        buy, sell, null = self.enums.OrderSide.BUY, self.enums.OrderSide.SELL, self.data.NULL_ORDER
        ts_event, ts_init = self._times(books)
        seqs = books.column("seq").to_pylist()
        columns = [books.column(c).to_pylist() for c in ("bid_px", "bid_sz", "ask_px", "ask_sz")]
        zeros = [0] * LEVELS
        out = []
        for i, (bp, bs, ap, asz) in enumerate(zip(*columns)):
            bids = [BookOrder(buy, Price(p, px_prec), Quantity(q, sz_prec), 0) for p, q in zip(bp[:LEVELS], bs)]
            asks = [BookOrder(sell, Price(p, px_prec), Quantity(q, sz_prec), 0) for p, q in zip(ap[:LEVELS], asz)]
            bids += [null] * (LEVELS - len(bids))
            asks += [null] * (LEVELS - len(asks))
            out.append(self.data.OrderBookDepth10(self.instrument, bids, asks, zeros, zeros, 0, seqs[i] or 0,
                                                  ts_event[i], ts_init[i]))
        return out

    def _ticks(self, trades: pa.Table, px_prec: int, sz_prec: int) -> list:
        Price, Quantity, TradeTick = self.objects.Price, self.objects.Quantity, self.data.TradeTick
        sides = {1: self.enums.AggressorSide.BUYER, -1: self.enums.AggressorSide.SELLER}
        no_side = self.enums.AggressorSide.NO_AGGRESSOR
        ts_event, ts_init = self._times(trades)
        out = []
        for i, (tid, price, size, side) in enumerate(zip(*(trades.column(c).to_pylist()
                                                             for c in ("trade_id", "price", "size", "side")))):
            if not size or size <= 0:
                self.skipped += 1
                continue
            out.append(TradeTick(self.instrument, Price(price, px_prec), Quantity(size, sz_prec),
                                 sides.get(side, no_side), self.trade_id(tid or f"{ts_init[i]}-{i}"),
                                 ts_event[i], ts_init[i]))
        return out

    def close(self) -> list[str]:
        return [self.out]
