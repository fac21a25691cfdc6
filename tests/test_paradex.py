"""Paradex (JSON shapes) against its simulator over loopback; SBE frames are refused clearly."""
from __future__ import annotations

from collections import Counter

from actors.feed.records import ListSink
from actors.venues import paradex
from actors.venues.base import Endpoints
from venue_harness import CHANNELS, Harness, check_sim_truth


def test_sim_books_trades_and_faults():
    symbols = ["BTC-USD-PERP", "ETH-USD-PERP"]
    server = paradex.make_sim_server(symbols, {"messages_per_s": 300, "record_truth": True}, 20)
    sink = Harness(paradex, server, symbols, depth=20, idle_timeout_s=1.0).run(6, actions=[
        (1.0, lambda: server.inject("break_chain", symbol="BTC-USD-PERP")),
        (1.5, lambda: server.inject("malformed")),
        (2.5, lambda: server.inject("drop_connection")),
        (3.5, lambda: server.inject("stall", seconds=2.0)),
    ])
    check_sim_truth(sink, server, symbols)
    kinds = Counter(e[3] for e in sink.events)
    assert kinds["gap"] == 1 and kinds["resync"] >= 1 and kinds["error"] >= 2 and kinds["disconnect"] >= 4
    gap = next(e for e in sink.events if e[3] == "gap")
    resync = next(e for e in sink.events if e[3] == "resync" and e[1] >= gap[1])
    assert not [b for b in sink.books if b[0] == gap[0] and gap[1] <= b[1] < resync[1]]


def test_binary_sbe_frame_is_a_clear_error_not_a_guess():
    plan, = paradex.plan_connections({}, Endpoints("ws://h", "http://h"), ["BTC-USD-PERP"], CHANNELS, 20)
    sink = ListSink()
    client = paradex.make_client(plan, {}, sink, 20)
    client.on_connect(0)
    client.on_frame(b"\x01\x00\x03\x00" + bytes(40), 1)
    assert sink.events[-1][3] == "error" and "SBE" in sink.events[-1][4] and not sink.books
