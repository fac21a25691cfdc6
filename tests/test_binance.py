"""Binance USD-M venue: the client on real recorded traffic, and over real loopback websockets
against the simulator (ground truth: every frame it sent, the true book) and the replay server."""
from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest

from actors.venues.sim.recordings import read_recording
from actors.feed.records import ListSink
from actors.venues import binance
from actors.venues.base import Endpoints, FetchSnapshot
from actors.venues.sim.server import ServerThread
from venue_harness import Harness, check_sim_truth

CHANNELS = ["l2book", "trades"]
SIM_CFG = {"depth_stream": "depth@100ms", "snapshot_limit": 1000}


def recorded_truth(path):
    """bookTicker (best bid, best ask) by update id, and the recorded trades."""
    tickers, trades = {}, []
    for rec in read_recording(path):
        if rec.payload.startswith('{"stream":"btcusdt@bookTicker"'):
            d = orjson.loads(rec.payload)["data"]
            tickers[d["u"]] = (float(d["b"]), float(d["a"]))
        elif rec.payload.startswith('{"stream":"btcusdt@trade"'):
            d = orjson.loads(rec.payload)["data"]
            trades.append((str(d["t"]), float(d["p"]), float(d["q"]), -1 if d["m"] else 1, rec.ts_local))
    return tickers, trades


def check_against_recording(sink, tickers, trades):
    matched = 0
    for row in sink.books:
        if row[3] in tickers:
            assert (row[4][0], row[6][0]) == tickers[row[3]], f"book differs from bookTicker at u={row[3]}"
            matched += 1
    assert matched == 629
    got = [(t[3], t[4], t[5], t[6], t[1]) for t in sink.trades]
    assert got == trades and len(got) == 21_313
    assert not [e for e in sink.events if e[3] in ("gap", "stale", "crossed", "error")]


def test_client_on_real_recording(binance_recording):
    path = str(binance_recording)
    cfg = binance.replay_venue_cfg({"snapshot_limit": 1000}, path)
    plan, = binance.plan_connections(cfg, Endpoints("ws://test", "http://test"), ["BTCUSDT"], CHANNELS, 20)
    sink = ListSink()
    client = binance.make_client(plan, cfg, sink, 20)
    client.on_connect(0)
    pending = []
    for rec in read_recording(path):
        if binance._is_snapshot(rec.payload):          # the REST answer, at the moment it was fetched
            assert pending, "the client should have asked for a snapshot before it arrived"
            for action in pending:
                client.on_snapshot(action.symbol, rec.payload.encode(), rec.ts_local)
            pending = []
            continue
        if "@bookTicker" in rec.payload[:40]:
            continue                                    # not subscribed; used as ground truth only
        pending += [a for a in client.on_frame(rec.payload, rec.ts_local) if isinstance(a, FetchSnapshot)]
    tickers, trades = recorded_truth(path)
    check_against_recording(sink, tickers, trades)
    assert [e[3] for e in sink.events] == ["connect", "snapshot"]


def test_plan_routes_streams_and_shards():
    cfg = {"depth_stream": "depth@100ms", "trade_stream": "aggTrade", "max_streams_per_connection": 3}
    plans = binance.plan_connections(cfg, Endpoints("ws://h", "http://h"), ["BTCUSDT", "ETHUSDT"], CHANNELS, 20)
    urls = Counter(p.url for p in plans)
    assert urls == {"ws://h/market/stream": 1, "ws://h/public/stream": 1}
    market = [p for p in plans if "/market" in p.url][0]
    assert market.extra["streams"] == ["btcusdt@aggTrade", "ethusdt@aggTrade"]
    plans = binance.plan_connections({"max_streams_per_connection": 3}, Endpoints("ws://h", "http://h"),
                                     ["A1", "B1", "C1"], CHANNELS, 20)
    assert [len(p.extra["streams"]) for p in plans] == [3, 3]


def test_sim_books_and_trades_equal_truth():
    symbols = ["BTCUSDT", "ETHUSDT"]
    server = binance.make_sim_server(symbols, {"messages_per_s": 500, "record_truth": True, "seed": 3}, 10)
    sink = Harness(binance, server, symbols, cfg=SIM_CFG).run(3)
    check_sim_truth(sink, server, symbols)
    kinds = Counter(e[3] for e in sink.events)
    assert kinds["snapshot"] == 2 and kinds["subscribed"] == 4 and not kinds["gap"]


def test_sim_faults_leave_events_and_books_stay_true():
    symbols = ["BTCUSDT"]
    server = binance.make_sim_server(symbols, {"messages_per_s": 300, "record_truth": True}, 10)
    harness = Harness(binance, server, symbols, cfg=SIM_CFG, idle_timeout_s=1.0)
    sink = harness.run(7, actions=[
        (1.0, lambda: server.inject("break_chain", symbol="BTCUSDT")),
        (2.0, lambda: server.inject("malformed")),
        (3.0, lambda: server.inject("drop_connection")),
        (4.5, lambda: server.inject("stall", seconds=2.5)),
    ])
    kinds = [e[3] for e in sink.events]
    assert "gap" in kinds and "resync" in kinds
    gap_at = next(e[1] for e in sink.events if e[3] == "gap")
    resync = next(e for e in sink.events if e[3] == "resync" and e[1] >= gap_at)
    # rows received between the gap and the resync are only the buffered diffs applied on top of
    # the fresh snapshot (seq >= the first diff that straddles it); all rows are checked true below
    between = [b for b in sink.books if gap_at <= b[1] < resync[1]]
    assert all(b[3] >= resync[6] for b in between), "book written from the broken chain"
    assert any(e[3] == "error" and "malformed" in e[4] for e in sink.events)
    assert kinds.count("disconnect") >= 2 and kinds.count("connect") >= 3   # drop + stalled feed
    assert any(e[3] == "disconnect" and "stalled" in e[4] for e in sink.events)
    check_sim_truth(sink, server, symbols)


def test_wrong_path_is_acked_then_silent():
    server = binance.make_sim_server(["BTCUSDT"], {"messages_per_s": 300}, 10)
    thread = ServerThread(server).start()

    async def main():
        from websockets.asyncio.client import connect
        async with connect(f"{server.ws_base}/market/stream") as ws:
            await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":7}')
            assert orjson.loads(await ws.recv()) == {"result": None, "id": 7}
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 1.0)
        async with connect(f"{server.ws_base}/public/stream") as ws:
            await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":8}')
            assert orjson.loads(await ws.recv()) == {"result": None, "id": 8}
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 2))["stream"] == "btcusdt@depth@100ms"
    try:
        asyncio.run(main())
    finally:
        thread.stop()


def test_replay_server_serves_the_recording(binance_recording):
    path = str(binance_recording)
    cfg = binance.replay_venue_cfg({"snapshot_limit": 1000}, path)
    server = binance.make_replay_server(path, 0, ["BTCUSDT"])
    sink = Harness(binance, server, ["BTCUSDT"], cfg=cfg, depth=20, replay_clock=True).run(
        120, until=lambda: server.finished.is_set())
    assert server.finished.is_set()
    tickers, trades = recorded_truth(path)
    check_against_recording(sink, tickers, trades)
