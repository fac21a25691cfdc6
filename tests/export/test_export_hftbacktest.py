"""Export to hftbacktest, checked by hftbacktest itself: its event-order validation, and backtests whose
book is compared with ground truth (the real recording's bookTicker messages; the archived books)."""
from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest
from hftbacktest.data import validate_event_order

from actors.export import export
from actors.export.driver import ExportError
from actors.export.hftbacktest import DEPTH_CLEAR, DEPTH_SNAPSHOT, EXCH, LOCAL, TRADE, BUY, SELL
from actors.feed.records import StreamBuffers
from actors.restore.loading import load_l2book, load_trades
from actors.storage.layout import HOUR_NS, NS
from actors.venues.sim.recordings import read_recording
from bench.recorded import RECORDING
from writer_fixtures import SYM, T0, make_core

TICK = 0.1
REAL_HOUR = "2024-08-08:23"          # the recording's hour (23:54:15 to 23:59:59 UTC)


def backtest(path, tick=TICK):
    asset = (BacktestAsset().data([str(path)]).linear_asset(1.0).constant_order_latency(0, 0)
             .risk_adverse_queue_model().no_partial_fill_exchange().trading_value_fee_model(0.0, 0.0)
             .tick_size(tick).lot_size(0.001))
    hbt = HashMapMarketDepthBacktest([asset])
    hbt.elapse(0)                      # starts the clock at the first event
    return hbt


def advance(hbt, ts):
    if ts > hbt.current_timestamp:
        hbt.elapse(ts - hbt.current_timestamp)


def book_tickers():
    """The recording's bookTicker messages: update id -> (best bid, best ask), the venue's own figures."""
    tickers = {}
    for rec in read_recording(str(RECORDING)):
        if rec.payload.startswith('{"stream":"btcusdt@bookTicker"'):
            d = orjson.loads(rec.payload)["data"]
            tickers[d["u"]] = (float(d["b"]), float(d["a"]))
    return tickers


def test_real_recording_replays_with_the_venues_best_bid_ask(real_archive, tmp_path):
    out = tmp_path / "btcusdt.npz"
    summary = export(real_archive, "hftbacktest", "binance", SYM, REAL_HOUR, REAL_HOUR, out, progress=False)
    assert summary.rows == 6_547 + 21_313 and summary.files == [str(out)]
    data = np.load(out)["data"]
    validate_event_order(data)                              # hftbacktest's own check
    ev = data["ev"]
    assert ((ev & EXCH) != 0).sum() == ((ev & LOCAL) != 0).sum()      # every event reaches both sides once
    trades = data[(ev & 0xFF) == TRADE]
    want = load_trades(real_archive, "binance", SYM, REAL_HOUR, REAL_HOUR)
    local = trades[(trades["ev"] & LOCAL) != 0]
    assert len(local) == 21_313
    assert np.array_equal(local["px"], want.column("price").to_numpy())
    buy = np.where(want.column("side").to_numpy() > 0, BUY, SELL)
    assert np.array_equal(local["ev"] & (BUY | SELL), buy)

    books = load_l2book(real_archive, "binance", SYM, REAL_HOUR, REAL_HOUR)
    ts = books.column("ts_local").cast(pa.int64()).to_pylist()
    last_at = {t: i for i, t in enumerate(ts)}              # the book after every diff received at that time
    tickers = book_tickers()
    targets = [(t, tickers[s]) for i, (t, s) in enumerate(zip(ts, books.column("seq").to_pylist()))
               if s in tickers and last_at[t] == i]
    assert len(targets) == 629
    hbt = backtest(out)
    for t, (bid, ask) in targets:
        advance(hbt, t)
        depth = hbt.depth(0)
        assert (depth.best_bid_tick, depth.best_ask_tick) == (round(bid / TICK), round(ask / TICK)), t
    hbt.close()


def _book(sink, ts, bids, asks):
    sink.book(SYM, ts, ts - 1_000_000, None, [p for p, _ in bids], [q for _, q in bids],
              [p for p, _ in asks], [q for _, q in asks])


def test_gap_is_clear_and_snapshot_and_levels_leave_the_book(tmp_path):
    """A gap event, a level leaving the top N, and exchange times out of order across the hour boundary."""
    root = tmp_path / "a"
    core = make_core(root, rollover_s=3600)
    sink = StreamBuffers()
    t = T0 + HOUR_NS - 2 * NS
    _book(sink, t, [(100.0, 1), (99.9, 2)], [(100.1, 1), (100.2, 3)])
    _book(sink, t + 1, [(100.0, 5), (99.8, 1)], [(100.1, 1), (100.3, 3)])     # 99.9 and 100.2 leave
    sink.trade(SYM, t + 2, t + HOUR_NS, "1", 100.1, 0.5, 1)       # venue clock far ahead: later than hour 2
    sink.event(SYM, T0 + HOUR_NS + NS, "l2book", "gap", "test", 1, 5)
    _book(sink, T0 + HOUR_NS + 2 * NS, [(98.0, 1), (97.5, 2)], [(98.1, 1), (98.2, 3)])   # after the gap
    _book(sink, T0 + HOUR_NS + 3 * NS, [(98.0, 2)], [(98.1, 1), (98.2, 3)])
    sink.trade(SYM, T0 + HOUR_NS + 3 * NS, T0 + HOUR_NS, "2", 98.0, 1.0, -1)     # same time as a book: first
    core.write("p", 1, sink.take())
    core.seal_all()
    out = tmp_path / "x.npz"
    export(root, "hftbacktest", "binance", SYM, T0, T0 + 2 * HOUR_NS, out, progress=False)
    data = np.load(out)["data"]
    validate_event_order(data)
    ev = data["ev"]
    assert ((ev & EXCH) != 0).sum() == ((ev & LOCAL) != 0).sum() < len(data)     # the early trade was split
    local = data[(ev & LOCAL) != 0]
    kinds = [(int(e) & 0xFF, float(p), float(q)) for e, p, q in zip(local["ev"], local["px"], local["qty"])]
    assert sum(k == DEPTH_CLEAR for k, _, _ in kinds) == 4      # first book and after the gap, both sides
    assert sum(k == DEPTH_SNAPSHOT for k, _, _ in kinds) == 4 + 4
    hbt = backtest(out)
    expected = [(t + 1, {100.0: 5, 99.8: 1}, {100.1: 1, 100.3: 3}),
                (T0 + HOUR_NS + 2 * NS, {98.0: 1, 97.5: 2}, {98.1: 1, 98.2: 3}),
                (T0 + HOUR_NS + 3 * NS, {98.0: 2}, {98.1: 1, 98.2: 3})]
    for ts, bids, asks in expected:
        advance(hbt, ts)
        depth = hbt.depth(0)
        assert depth.best_bid_tick == round(max(bids) / TICK) and depth.best_ask_tick == round(min(asks) / TICK)
        for px in (100.0, 99.9, 99.8, 98.0, 97.5):
            assert depth.bid_qty_at_tick(round(px / TICK)) == bids.get(px, 0), (ts, px)
        for px in (100.1, 100.2, 100.3, 98.1, 98.2):
            assert depth.ask_qty_at_tick(round(px / TICK)) == asks.get(px, 0), (ts, px)
    hbt.close()


def test_missing_hours_are_refused_and_listed(tmp_path):
    root = tmp_path / "a"
    core = make_core(root, rollover_s=3600)
    for hour in (0, 2):
        sink = StreamBuffers()
        _book(sink, T0 + hour * HOUR_NS + NS, [(100.0, 1)], [(100.1, 1)])
        sink.trade(SYM, T0 + hour * HOUR_NS + NS, None, str(hour), 100.0, 1.0, -1)
        core.write("p", hour + 1, sink.take())
    core.seal_all()
    with pytest.raises(ExportError, match=r"no l2book file for 1 hour\(s\): .*:\d\d; no trades file for 1 hour"):
        export(root, "hftbacktest", "binance", SYM, T0, T0 + 3 * HOUR_NS, tmp_path / "x.npz", progress=False)
    summary = export(root, "hftbacktest", "binance", SYM, T0, T0 + 3 * HOUR_NS, tmp_path / "x.npz",
                     allow_gaps=True, progress=False)
    assert summary.rows == 4 and summary.missing_hours == {"l2book": [T0 + HOUR_NS], "trades": [T0 + HOUR_NS]}
    data = np.load(tmp_path / "x.npz")["data"]
    validate_event_order(data)
    local = data["ev"][(data["ev"] & LOCAL) != 0]
    assert sum(int(e) & 0xFF == DEPTH_CLEAR for e in local) == 4      # the missing hour is a hole too
