"""Hyperliquid: the client on the real capture, and over loopback against the replay server
(the simulator's faults are in test_venues.py)."""
from __future__ import annotations

import orjson

from actors.feed.records import ListSink
from actors.venues import get_venue
from actors.venues.base import Endpoints
from actors.venues.hyperliquid import GREETING
from actors.venues.sim.recordings import read_recording
from conftest import FIXTURES
from venue_harness import CHANNELS, Harness

hyperliquid = get_venue("hyperliquid")

RECORDING = FIXTURES / "hyperliquid" / "btcusd_20250126.gz"


def recorded(path):
    books, trades = [], []
    for rec in read_recording(path):
        msg = orjson.loads(rec.payload)
        if msg["channel"] == "l2Book":
            books.append(msg["data"])
        elif msg["channel"] == "trades":
            trades.extend(msg["data"])
    return books, trades


def test_client_on_real_capture_and_duplicate_trades_dropped():
    path = str(RECORDING)
    assert hyperliquid.recording_matches(path) and hyperliquid.recording_symbols(path) == {"BTC"}
    settings = hyperliquid.settings({})
    plan, = hyperliquid.plan_connections(settings, Endpoints("ws://t", "http://t"), ["BTC"], CHANNELS, 20)
    sink = ListSink()
    client = hyperliquid.make_client(plan, settings, sink, 20)
    client.on_connect(0)
    client.on_frame(GREETING, 0)                              # tolerated greeting
    first_trades = None
    for rec in read_recording(path):
        client.on_frame(rec.payload, rec.ts_local)
        if first_trades is None and '"channel":"trades"' in rec.payload:
            first_trades = rec.payload
    books, trades = recorded(path)
    # the real capture opens with the same book twice (same block time, same levels): written once
    assert len(books) == 46 and books[0]["time"] == books[1]["time"] and books[0]["levels"] == books[1]["levels"]
    books = books[1:]
    assert len(sink.books) == len(books) and client.repeated_books == 1
    for row, book in zip(sink.books, books):                 # every snapshot parsed exactly
        bids, asks = book["levels"]
        assert row[4] == [float(lv["px"]) for lv in bids] and row[5] == [float(lv["sz"]) for lv in bids]
        assert row[6] == [float(lv["px"]) for lv in asks] and row[7] == [float(lv["sz"]) for lv in asks]
        assert row[2] == book["time"] * 1_000_000 and row[3] is None
    want = [(str(t["tid"]), float(t["px"]), float(t["sz"]), 1 if t["side"] == "B" else -1) for t in trades]
    assert [(t[3], t[4], t[5], t[6]) for t in sink.trades] == want and len(set(w[0] for w in want)) == len(want)
    # a resubscription repeats recent trades: they are dropped, not archived twice
    client.on_disconnect(10, "test")
    client.on_connect(11)
    client.on_frame(first_trades, 12)
    assert len(sink.trades) == len(want) and client.duplicate_trades == len(orjson.loads(first_trades)["data"])
    assert not [e for e in sink.events if e[3] in ("error", "crossed")]


def test_replay_server_serves_the_capture():
    path = str(RECORDING)
    server = hyperliquid.make_replay_server(path, 0, ["BTC"])
    sink = Harness(hyperliquid, server, ["BTC"], depth=20, replay_clock=True).run(until=server.finished.is_set)
    books, trades = recorded(path)
    assert len(sink.books) == len(books) - 1 and [t[3] for t in sink.trades] == [str(t["tid"]) for t in trades]
    times = [rec.ts_local for rec in read_recording(path) if '"channel":"l2Book"' in rec.payload]
    assert [b[1] for b in sink.books] == times[:1] + times[2:]   # the recording's receive times (repeated book once)
