"""Bybit v5 spot: the real 2026 spot capture replayed over loopback (``/v5/public/spot``), and the
spot simulator (ground truth), next to linear symbols on the same port."""
from __future__ import annotations

import bisect
from collections import Counter

import orjson
import pytest

from actors.errors import ConfigError
from actors.feed.records import ListSink
from actors.venues import get_venue
from actors.venues.base import Endpoints
from actors.venues.sim.recordings import read_recording
from conftest import FIXTURES
from test_venue_bybit import SIM_ID, recorded
from venue_harness import CHANNELS, Harness, check_sim_truth

bybit = get_venue("bybit")
SPOT = FIXTURES / "bybit" / "bybit_v5_spot_btc_2026-08-10.jsonl.zst"


def last_prices(path):
    """The capture's spot tickers as (cross sequence cs, lastPrice), in order."""
    return [(msg["cs"], float(msg["data"]["lastPrice"])) for msg in
            (orjson.loads(rec.payload) for rec in read_recording(path)
             if rec.kind == "recv" and rec.payload.startswith('{"topic":"tickers.'))]


def test_spot_capture_replayed():
    """Every trade once; the u chain holds (one snapshot, no gap); the book at each ticker's cross
    sequence brackets the ticker's last price (spot tickers carry no best bid/ask), and every trade
    happened at the touch of the book before it (a taker buy at the best ask, a sell at the best bid)."""
    path = str(SPOT)
    symbols = sorted(bybit.recording_symbols(path))
    assert symbols == ["spot/BTCUSDT"]
    settings = bybit.replay_settings(bybit.settings({}), path)
    assert settings.spot_book_depth == 200 and settings.book_depth is None
    server = bybit.make_replay_server(path, 0, symbols)
    sink = Harness(bybit, server, symbols, settings=settings, depth=50, replay_clock=True).run(
        until=server.finished.is_set)
    trades, tickers = [(i, p, v, 1 if side == "Buy" else -1) for _, i, p, v, side in recorded(path)[0]], last_prices(path)
    assert [(t[3], t[4], t[5], t[6]) for t in sink.trades] == trades and len(trades) == 11
    assert {t[0] for t in sink.trades} == {"spot/BTCUSDT"}
    kinds = Counter(e[3] for e in sink.events)
    assert kinds["snapshot"] == 1 and not kinds["gap"] and not kinds["error"] and not kinds["crossed"]
    assert len(sink.books) == 300 and all(b[0] == "spot/BTCUSDT" for b in sink.books)
    # the rows carry u; the recording tells each u's cross sequence (seq) for the ticker check
    seq_of = {}
    for rec in read_recording(path):
        if rec.kind == "recv" and rec.payload.startswith('{"topic":"orderbook.'):
            data = orjson.loads(rec.payload)["data"]
            seq_of[data["u"]] = data["seq"]
    rows = sorted(sink.books, key=lambda b: seq_of[b[3]])
    seqs = [seq_of[b[3]] for b in rows]
    bracketed = 0
    for cs, last in tickers:
        i = bisect.bisect_right(seqs, cs) - 1
        if i >= 0:
            assert rows[i][4][0] <= last <= rows[i][6][0], f"ticker cs={cs} last {last} outside the book"
            bracketed += 1
    assert bracketed == len(tickers) == 41
    by_time = sorted(sink.books, key=lambda b: b[2])
    times = [b[2] for b in by_time]
    for t in sink.trades:
        i = bisect.bisect_left(times, t[2]) - 1       # the last book before the fill time
        book = by_time[i]
        assert t[4] == (book[6][0] if t[6] > 0 else book[4][0]), f"trade {t[3]} not at the touch"


def test_spot_and_linear_simulators_on_one_port():
    symbols = ["BTCUSDT", "spot/BTCUSDT", "spot/ETHUSDT"]
    server = bybit.make_sim_server(symbols, {"messages_per_s": 300, "record_truth": True}, 20)
    harness = Harness(bybit, server, symbols, depth=20)
    sink = harness.run(until=lambda: all(len([b for b in harness.sink.books if b[0] == s]) >= 150 for s in symbols))
    check_sim_truth(sink, server, symbols, id_of=SIM_ID)
    assert sorted(c.plan.url.split("/", 3)[3] for c in harness.conns) == ["spot/v5/public/spot", "v5/public/linear"]


def test_spot_depths_and_topics():
    settings = bybit.settings({})
    plans = bybit.plan_connections(settings, bybit.live_endpoints(settings), ["BTCUSDT", "spot/BTCUSDT"], CHANNELS, 20)
    assert sorted((p.url, tuple(s.name for s in p.subscriptions)) for p in plans) == [
        ("wss://stream.bybit.com/v5/public/linear", ("orderbook.50.BTCUSDT", "publicTrade.BTCUSDT")),
        ("wss://stream.bybit.com/v5/public/spot", ("orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"))]
    bybit.validate(settings, ["BTCUSDT"], CHANNELS, 1000)
    with pytest.raises(ConfigError, match="depth: 201"):
        bybit.validate(settings, ["spot/BTCUSDT"], CHANNELS, 201)
    spot_plan = [p for p in plans if "spot" in p.url][0]
    sink = ListSink()
    client = bybit.make_client(spot_plan, settings, sink, 20)
    client.on_connect(0)
    client.on_frame(orjson.dumps({"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": 1, "data": {
        "s": "BTCUSDT", "b": [["100", "1"]], "a": [["101", "1"]], "u": 5, "seq": 9}, "cts": 1}), 1)
    assert sink.books[0][0] == "spot/BTCUSDT" and {e[0] for e in sink.events} == {"spot/BTCUSDT"}
    with pytest.raises(ConfigError, match="no futures market"):
        bybit.qualify("futures/BTCUSDT")
