"""Bybit v5 linear: the client on the real 2026 capture, and over loopback against the simulator
(ground truth) and the replay server."""
from __future__ import annotations

import bisect
from collections import Counter

import orjson

from actors.feed.records import ListSink
from actors.venues import get_venue
from actors.venues.base import Endpoints
from actors.venues.bybit import book_depth
from actors.venues.sim.recordings import read_recording
from conftest import FIXTURES
from venue_harness import CHANNELS, Harness, check_sim_truth

bybit = get_venue("bybit")

RECORDING = FIXTURES / "bybit" / "bybit_v5_linear_btc_eth_2026-08-10.jsonl.zst"
SIM_ID = lambda t: f"{t.trade_id:08x}-sim"  # noqa: E731


def recorded(path):
    """The recording's raw trades and tickers, in order."""
    trades, tickers = [], []
    for rec in read_recording(path):
        if rec.kind != "recv":
            continue
        if rec.payload.startswith('{"topic":"publicTrade.'):
            for t in orjson.loads(rec.payload)["data"]:
                trades.append((t["s"], t["i"], float(t["p"]), float(t["v"]), t["S"]))
        elif rec.payload.startswith('{"topic":"tickers.'):
            msg = orjson.loads(rec.payload)
            tickers.append((msg["data"]["symbol"], msg["cs"], msg["data"].get("bid1Price"),
                            msg["data"].get("ask1Price")))
    return trades, tickers


def test_client_on_real_capture():
    path = str(RECORDING)
    settings = bybit.replay_settings(bybit.settings({}), path)
    assert settings.book_depth == 200
    symbols = sorted(bybit.recording_symbols(path))
    assert symbols == ["BTCUSDT", "ETHUSDT"]
    plan, = bybit.plan_connections(settings, Endpoints("ws://t", "http://t"), symbols, CHANNELS, 20)
    sink = ListSink()
    client = bybit.make_client(plan, settings, sink, 20)
    client.on_connect(0)
    after_book = {s: ([], []) for s in symbols}      # per symbol: book seqs, (best bid, best ask) after each
    for rec in read_recording(path):
        if rec.kind != "recv" or rec.payload.startswith('{"topic":"tickers.'):
            continue
        client.on_frame(rec.payload, rec.ts_local)
        if rec.payload.startswith('{"topic":"orderbook.'):
            msg = orjson.loads(rec.payload)
            book = client.states[msg["data"]["s"]].book
            after_book[msg["data"]["s"]][0].append(msg["data"]["seq"])
            after_book[msg["data"]["s"]][1].append((book.best_bid(), book.best_ask()))
    kinds = Counter(e[3] for e in sink.events)
    assert not kinds["gap"] and not kinds["error"] and kinds["snapshot"] == 2   # u chain continuous
    assert len(sink.books) == 835                                               # every orderbook message
    # Matching rule: a ticker's bid1/ask1 equals the book after the last orderbook message whose
    # cross sequence `seq` is <= the ticker's `cs` (same matching-engine moment or just before it).
    trades, tickers = recorded(path)
    compared = 0
    for sym, cs, bid, ask in tickers:
        seqs, bests = after_book[sym]
        i = bisect.bisect_right(seqs, cs) - 1
        if i < 0 or (bid is None and ask is None):
            continue
        compared += 1
        if bid is not None:
            assert float(bid) == bests[i][0], f"{sym} bid at cs={cs}"
        if ask is not None:
            assert float(ask) == bests[i][1], f"{sym} ask at cs={cs}"
    assert compared == 332
    got = [(t[0], t[3], t[4], t[5], t[6]) for t in sink.trades]
    assert got == [(s, i, p, v, 1 if side == "Buy" else -1) for s, i, p, v, side in trades]
    assert len(got) == 79 and {g[4] for g in got} == {1, -1}


def test_depth_maps_to_smallest_book_at_least_as_deep():
    assert [book_depth(d) for d in (1, 5, 20, 50, 51, 200, 500)] == [1, 50, 50, 50, 200, 200, 1000]
    plan, = bybit.plan_connections(bybit.settings({}), Endpoints("ws://h", "http://h"), ["BTCUSDT"], CHANNELS, 20)
    assert [s.name for s in plan.subscriptions] == ["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"]
    assert plan.url == "ws://h/v5/public/linear"
    syms = [f"C{i}USDT" for i in range(6)]                  # 12 topics: subscribe requests of at most 10
    plan, = bybit.plan_connections(bybit.settings({}), Endpoints("ws://h", "http://h"), syms, CHANNELS, 20)
    frames = [orjson.loads(a.frame) for a in bybit.make_client(plan, bybit.settings({}), ListSink(), 20).on_connect(0)]
    assert [len(f["args"]) for f in frames] == [10, 2] and [f["op"] for f in frames] == ["subscribe"] * 2


def test_sim_books_and_trades_equal_truth():
    symbols = ["BTCUSDT", "ETHUSDT"]
    server = bybit.make_sim_server(symbols, {"messages_per_s": 400, "record_truth": True}, 20)
    harness = Harness(bybit, server, symbols, depth=20)
    sink = harness.run(until=lambda: all(len([b for b in harness.sink.books if b[0] == s]) >= 300 for s in symbols))
    check_sim_truth(sink, server, symbols, SIM_ID)
    kinds = Counter(e[3] for e in sink.events)
    assert kinds["snapshot"] == 2 and kinds["subscribed"] == 4 and not kinds["gap"]


def test_replay_server_serves_the_capture():
    path = str(RECORDING)
    settings = bybit.replay_settings(bybit.settings({}), path)
    server = bybit.make_replay_server(path, 0, ["BTCUSDT", "ETHUSDT"])
    sink = Harness(bybit, server, ["BTCUSDT", "ETHUSDT"], settings=settings, depth=20, replay_clock=True).run(
        until=server.finished.is_set)
    trades, _ = recorded(path)
    assert [(t[0], t[3]) for t in sink.trades] == [(s, i) for s, i, *_ in trades]
    assert len(sink.books) == 835 and not [e for e in sink.events if e[3] in ("gap", "error")]
