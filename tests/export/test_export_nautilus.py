"""Nautilus export: written by nautilus-trader's ParquetDataCatalog and read back by it, compared with the
loaders' rows of the real Binance recording."""
from __future__ import annotations

import pyarrow as pa
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from actors.export import export
from actors.restore.loading import load_l2book, load_trades
from writer_fixtures import SYM

REAL_HOUR = "2024-08-08:23"
INSTRUMENT = "BTCUSDT-PERP.BINANCE"


def test_real_recording_into_a_nautilus_catalog(real_archive, tmp_path):
    summary = export(real_archive, "nautilus", "binance", SYM, REAL_HOUR, REAL_HOUR, tmp_path / "catalog",
                     progress=False)
    catalog = ParquetDataCatalog(str(tmp_path / "catalog"))
    depths = catalog.order_book_depth10(instrument_ids=[INSTRUMENT])
    books = load_l2book(real_archive, "binance", SYM, REAL_HOUR, REAL_HOUR)
    assert summary.rows == books.num_rows + 21_313
    assert len(depths) == books.num_rows == 6_547
    ts = books.column("ts_local").cast(pa.int64()).to_pylist()
    exch = books.column("ts_exchange").cast(pa.int64()).to_pylist()
    rows = books.to_pylist()
    for depth, row, t, e in zip(depths, rows, ts, exch):      # Nautilus is fixed-point: compare decimal text
        assert (depth.ts_init, depth.ts_event, depth.sequence) == (t, e, row["seq"])
        assert [float(str(b.price)) for b in depth.bids] == row["bid_px"][:10]
        assert [float(str(a.size)) for a in depth.asks] == row["ask_sz"][:10]
    assert str(depths[0].instrument_id) == INSTRUMENT

    ticks = catalog.trade_ticks(instrument_ids=[INSTRUMENT])
    want = load_trades(real_archive, "binance", SYM, REAL_HOUR, REAL_HOUR)
    assert len(ticks) == want.num_rows == 21_313
    assert [str(t.trade_id) for t in ticks] == want.column("trade_id").to_pylist()
    assert [float(str(t.price)) for t in ticks] == want.column("price").to_pylist()
    assert [float(str(t.size)) for t in ticks] == want.column("size").to_pylist()
    assert [t.aggressor_side == AggressorSide.BUYER for t in ticks] == [s > 0 for s in want.column("side").to_pylist()]
    assert [t.ts_init for t in ticks] == want.column("ts_local").cast(pa.int64()).to_pylist()
