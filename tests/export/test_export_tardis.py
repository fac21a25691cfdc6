"""Tardis-style CSV export, read back by pandas (as Tardis users read their files) and compared with the
loaders' rows."""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa

from actors.export import export
from actors.feed.records import StreamBuffers
from actors.restore.loading import load_l2book, load_trades
from actors.storage.layout import HOUR_NS, NS
from writer_fixtures import SYM, T0, make_core

REAL_HOUR = "2024-08-08:23"


def test_real_recording_as_tardis_csv(real_archive, tmp_path):
    summary = export(real_archive, "tardis", "binance", SYM, REAL_HOUR, REAL_HOUR, tmp_path, progress=False)
    names = sorted(p.split("/")[-1] for p in summary.files)
    assert names == ["binance_book_snapshot_20_2024-08-08_BTCUSDT.csv.gz", "binance_trades_2024-08-08_BTCUSDT.csv.gz"]
    trades = pd.read_csv(tmp_path / names[1], dtype={"id": str})
    want = load_trades(real_archive, "binance", SYM, REAL_HOUR, REAL_HOUR)
    assert list(trades.columns) == ["exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price",
                                    "amount"]
    assert len(trades) == 21_313 and set(trades["exchange"]) == {"binance"} and set(trades["symbol"]) == {SYM}
    assert trades["id"].tolist() == want.column("trade_id").to_pylist()
    assert trades["price"].tolist() == want.column("price").to_pylist()
    assert trades["amount"].tolist() == want.column("size").to_pylist()
    assert trades["side"].tolist() == ["buy" if s > 0 else "sell" for s in want.column("side").to_pylist()]
    assert (trades["local_timestamp"].to_numpy() == want.column("ts_local").cast(pa.int64()).to_numpy() // 1000).all()
    assert (trades["timestamp"].to_numpy() == want.column("ts_exchange").cast(pa.int64()).to_numpy() // 1000).all()

    books = pd.read_csv(tmp_path / names[0])
    want = load_l2book(real_archive, "binance", SYM, REAL_HOUR, REAL_HOUR).to_pylist()
    assert list(books.columns[:8]) == ["exchange", "symbol", "timestamp", "local_timestamp", "asks[0].price",
                                       "asks[0].amount", "bids[0].price", "bids[0].amount"]
    assert len(books.columns) == 4 + 4 * 20 and len(books) == len(want) == 6_547
    for i in (0, 1, 3000, 6546):
        row, ours = books.iloc[i], want[i]
        assert row["local_timestamp"] == ours["ts_local"].value // 1000
        for level in range(20):
            assert row[f"bids[{level}].price"] == ours["bid_px"][level]
            assert row[f"asks[{level}].amount"] == ours["ask_sz"][level]


def test_one_file_per_day_and_short_books(tmp_path):
    root = tmp_path / "a"
    core = make_core(root, rollover_s=3600)
    sink = StreamBuffers()
    midnight = T0 - T0 % (86400 * NS) + 86400 * NS
    sink.book(SYM, midnight - NS, None, 1, [100.0], [1.0], [100.5, 101.0], [2.0, 3.0])      # one bid level
    sink.book(SYM, midnight + NS, midnight, 2, [99.0, 98.0], [1.0, 4.0], [99.5], [2.0])
    sink.trade(SYM, midnight + NS, None, "x-7", 99.0, 1.5, 0)
    core.write("p", 1, sink.take())
    core.seal_all()
    summary = export(root, "tardis", "binance", SYM, midnight - HOUR_NS, midnight + HOUR_NS, tmp_path / "out",
                     depth=20, allow_gaps=True, progress=False)
    assert len([f for f in summary.files if "book_snapshot" in f]) == 2
    first, second = sorted(f for f in summary.files if "book_snapshot" in f)
    with gzip.open(first, "rt") as f:
        lines = f.read().splitlines()
    assert lines[1].startswith(f"binance,{SYM},{(midnight - NS) // 1000},{(midnight - NS) // 1000},100.5,2,100,1,"
                               "101,3,,,")
    day2 = pd.read_csv(second)
    assert day2["timestamp"][0] == midnight // 1000 and np.isnan(day2["asks[1].price"][0])
    trades = pd.read_csv(next(f for f in summary.files if "trades" in f))
    assert trades["side"].tolist() == ["unknown"] and trades["id"].tolist() == ["x-7"]
