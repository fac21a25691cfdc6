"""Binance USD-M venue: the client on real recorded traffic, and over real loopback websockets
against the simulator (ground truth: every frame it sent, the true book) and the replay server."""
from __future__ import annotations

import asyncio
from collections import Counter

import orjson

from actors.feed.records import ListSink, StreamBuffers
from actors.venues import get_venue
from actors.venues.base import Endpoints, FetchSnapshot
from actors.venues.binance import is_snapshot
from actors.venues.sim.recordings import read_recording
from actors.venues.sim.server import ServerThread
from venue_harness import CHANNELS, Harness, check_sim_truth

binance = get_venue("binance")


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


def replay_recording(path: str, sink):
    """The recording through a Binance client into ``sink``, each REST answer when it was fetched."""
    settings = binance.replay_settings(binance.settings({}), path)
    assert (settings.depth_stream, settings.trade_stream) == ("depth@0ms", "trade")
    plan, = binance.plan_connections(settings, Endpoints("ws://test", "http://test"), ["BTCUSDT"], CHANNELS, 20)
    client = binance.make_client(plan, settings, sink, 20)
    client.on_connect(0)
    pending = []
    for rec in read_recording(path):
        if is_snapshot(rec.payload):          # the REST answer, at the moment it was fetched
            assert pending, "the client should have asked for a snapshot before it arrived"
            for action in pending:
                client.on_snapshot(action.symbol, rec.payload.encode(), rec.ts_local)
            pending = []
            continue
        if "@bookTicker" in rec.payload[:40]:
            continue                                    # not subscribed; used as ground truth only
        pending += [a for a in client.on_frame(rec.payload, rec.ts_local) if isinstance(a, FetchSnapshot)]
    return client


def test_client_on_real_recording(binance_recording):
    path = str(binance_recording)
    sink = ListSink()
    replay_recording(path, sink)
    tickers, trades = recorded_truth(path)
    check_against_recording(sink, tickers, trades)
    assert [e[3] for e in sink.events] == ["connect", "snapshot"]


def test_row_buffers_take_the_one_call_path_with_the_same_rows(binance_recording):
    """Into StreamBuffers a diff is applied and its row copied in one compiled call (``apply_top``):
    the rows are ListSink's (book and ticker checked above), value for value; a crossing diff there
    gives the ``crossed`` event, no row, and a fresh snapshot is fetched."""
    path = str(binance_recording)
    buffers, reference = StreamBuffers(), ListSink()
    client = replay_recording(path, buffers)
    assert client.book_buffer is not None
    replay_recording(path, reference)
    books = buffers.take()[("BTCUSDT", "l2book")].to_pylist()
    assert len(books) == len(reference.books) == 6547
    for row, ref in zip(books, reference.books):
        assert (row["ts_local"].value, row["ts_exchange"].value, row["seq"]) == ref[1:4]
        assert (row["bid_px"], row["bid_sz"], row["ask_px"], row["ask_sz"]) == tuple(ref[4:8])
    st = client.states["BTCUSDT"]
    best_ask = st.book.best_ask()
    frame = orjson.dumps({"stream": "btcusdt@depth@0ms", "data": {
        "e": "depthUpdate", "E": 1, "T": 1, "s": "BTCUSDT", "U": st.last_seq + 1, "u": st.last_seq + 2,
        "pu": st.last_seq, "b": [[str(best_ask + 1), "1.0"]], "a": []}}).decode()
    actions = client.on_frame(frame, 10)
    assert [type(a) for a in actions] == [FetchSnapshot]
    taken = buffers.take()
    assert taken.keys() == {("BTCUSDT", "events")}                       # the event, and no book row
    assert taken[("BTCUSDT", "events")].column("kind").to_pylist() == ["crossed"]
    assert not st.synced


def test_plan_routes_streams_and_shards():
    settings = binance.settings({"trade_stream": "aggTrade", "max_streams_per_connection": 3})
    plans = binance.plan_connections(settings, Endpoints("ws://h", "http://h"), ["BTCUSDT", "ETHUSDT"], CHANNELS, 20)
    urls = Counter(p.url for p in plans)
    assert urls == {"ws://h/market/stream": 1, "ws://h/public/stream": 1}
    market = [p for p in plans if "/market" in p.url][0]
    assert [s.name for s in market.subscriptions] == ["btcusdt@aggTrade", "ethusdt@aggTrade"]
    plans = binance.plan_connections(binance.settings({"max_streams_per_connection": 3}), Endpoints("ws://h", "http://h"),
                                     ["A1", "B1", "C1"], CHANNELS, 20)
    assert [len(p.subscriptions) for p in plans] == [3, 3]
    client = binance.make_client(plans[0], binance.settings({}), ListSink(), 20)
    frame, = client.on_connect(0)                           # one SUBSCRIBE for every stream of the socket
    assert orjson.loads(frame.frame)["params"] == ["a1@depth@100ms", "a1@trade", "b1@depth@100ms"]


def test_sim_books_and_trades_equal_truth():
    symbols = ["BTCUSDT", "ETHUSDT"]
    server = binance.make_sim_server(symbols, {"messages_per_s": 500, "record_truth": True, "seed": 3}, 10)
    harness = Harness(binance, server, symbols)
    sink = harness.run(until=lambda: all(len([b for b in harness.sink.books if b[0] == s]) >= 300 for s in symbols))
    check_sim_truth(sink, server, symbols)
    kinds = Counter(e[3] for e in sink.events)
    assert kinds["snapshot"] == 2 and kinds["subscribed"] == 4 and not kinds["gap"]


def test_wrong_path_is_acked_then_silent():
    server = binance.make_sim_server(["BTCUSDT"], {"messages_per_s": 300}, 10)
    thread = ServerThread(server).start()

    async def main():
        from websockets.asyncio.client import connect
        async with connect(f"{server.ws_base}/market/stream") as market, \
                connect(f"{server.ws_base}/public/stream") as public:
            await market.send('{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":7}')
            assert orjson.loads(await market.recv()) == {"result": None, "id": 7}
            await public.send('{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":8}')
            assert orjson.loads(await public.recv()) == {"result": None, "id": 8}
            for _ in range(20):                             # the right path delivers the stream ...
                assert orjson.loads(await asyncio.wait_for(public.recv(), 10))["stream"] == "btcusdt@depth@100ms"
            # ... while the wrong one sent nothing: the next frame there answers this request
            await market.send('{"method":"LIST_SUBSCRIPTIONS","id":9}')
            assert orjson.loads(await market.recv()) == {"result": ["btcusdt@depth@100ms"], "id": 9}
    try:
        asyncio.run(main())
    finally:
        thread.stop()


def test_replay_server_serves_the_recording(binance_recording):
    path = str(binance_recording)
    settings = binance.replay_settings(binance.settings({}), path)
    server = binance.make_replay_server(path, 0, ["BTCUSDT"])
    sink = Harness(binance, server, ["BTCUSDT"], settings=settings, depth=20, replay_clock=True).run(
        until=server.finished.is_set, timeout_s=120)
    assert server.finished.is_set()
    tickers, trades = recorded_truth(path)
    check_against_recording(sink, tickers, trades)
