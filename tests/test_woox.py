"""WOO X v3 against its simulator over loopback (no real capture exists): prevTs sync with the
REST snapshot, truth, faults, and the JSON PING/PONG."""
from __future__ import annotations

from collections import Counter

from actors.venues import woox
from venue_harness import Harness


def test_sim_books_trades_and_faults():
    symbols = ["PERP_BTC_USDT", "PERP_ETH_USDT"]
    server = woox.make_sim_server(symbols, {"messages_per_s": 300, "record_truth": True}, 20)
    sink = Harness(woox, server, symbols, depth=20, idle_timeout_s=1.0).run(6, actions=[
        (1.0, lambda: server.inject("break_chain", symbol="PERP_BTC_USDT")),
        (1.5, lambda: server.inject("malformed")),
        (2.5, lambda: server.inject("drop_connection")),
        (3.5, lambda: server.inject("stall", seconds=2.0)),
    ])
    for sym in symbols:
        truth = server.truth(sym)
        got = [(t[4], t[5], t[6]) for t in sink.trades if t[0] == sym]
        assert got == [(t.price, t.size, t.side) for t in truth.trades] and got
        ids = [t[3] for t in sink.trades if t[0] == sym]
        assert len(ids) == len(set(ids))
        books = [b for b in sink.books if b[0] == sym]
        assert books and all(tuple(b[4:8]) == tuple(list(x) for x in truth.books[b[3]]) for b in books)
    kinds = Counter(e[3] for e in sink.events)
    assert kinds["gap"] == 1 and kinds["resync"] >= 1 and kinds["error"] >= 2 and kinds["disconnect"] >= 4
    gap = next(e for e in sink.events if e[3] == "gap")
    resync = next(e for e in sink.events if e[3] == "resync" and e[1] >= gap[1])
    between = [b for b in sink.books if b[0] == gap[0] and gap[1] <= b[1] < resync[1]]
    assert all(b[3] >= resync[6] for b in between)


def test_plan_limits_topics_per_connection():
    from actors.venues.base import Endpoints
    syms = [f"PERP_C{i}_USDT" for i in range(60)]
    plans = woox.plan_connections({}, Endpoints("ws://h", "http://h"), syms, ["l2book", "trades"], 20)
    assert [len(p.extra["topics"]) for p in plans] == [100, 20]
    assert all(len(__import__("orjson").loads(f)["params"]) <= 20 for p in plans for f in p.subscribe_frames)
