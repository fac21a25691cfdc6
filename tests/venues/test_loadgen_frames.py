"""The small frames bench_ingest.py --frames small serves (tests/bench/loadgen.py) are a true Binance
feed: through our client, two loops (the reset diff between them) give one row per diff, no gap, and
after every diff the book a naive replay of the same diffs holds."""
from __future__ import annotations

import orjson

from actors.feed.records import ListSink
from actors.venues import get_venue
from actors.venues.base import Endpoints, FetchSnapshot
from bench import loadgen

binance = get_venue("binance")


def frames_of(loop: loadgen.Loop, loops: int):
    """(payload, levels) of every depth diff the generator sends one symbol over ``loops`` loops."""
    first_pu = loop.diffs[0][2]
    for k in range(loops):
        if k:
            u = first_pu + k * loop.id_step
            yield u, u, u - 1, loop.reset_levels
        for is_diff, i in loop.events:
            if is_diff:
                first, last, prev, levels = loop.diffs[i]
                shift = k * loop.id_step
                yield first + shift, last + shift, prev + shift, levels


def test_small_frames_are_a_consistent_feed():
    loop = loadgen.build_small_loop(diffs=3000)
    assert len(loop.diffs) == 3000 and len(loop.trades) == 1000
    settings = binance.settings({"depth_stream": "depth@100ms", "trade_stream": "aggTrade"})
    plan = [p for p in binance.plan_connections(settings, Endpoints("ws://x", "http://x"), ["S0USDT"],
                                                ["l2book", "trades"], 20) if "public" in p.url][0]
    sink = ListSink()
    client = binance.make_client(plan, settings, sink, 20)
    client.on_connect(0)
    gen = loadgen.Generator(loop, 1, 0)
    naive = {"b": {}, "a": {}}
    sent = 0
    for first, last, prev, levels in frames_of(loop, 2):
        frame = loadgen.Generator._diff(b"s0usdt@depth@100ms", b"S0USDT", first, last, prev, levels)
        payload = frame[frame.index(b"{"):]
        data = orjson.loads(payload)["data"]
        assert len(data["b"]) == len(data["a"]) == 2 or levels == loop.reset_levels
        for action in client.on_frame(payload.decode(), 1 + sent):
            assert isinstance(action, FetchSnapshot)        # the first diff: the REST snapshot of loop 0
            status, body = gen.rest("/fapi/v1/depth", {"symbol": ["S0USDT"], "limit": ["1000"]})
            client.on_snapshot("S0USDT", body, 1 + sent)
            snap = orjson.loads(body)
            naive = {"b": {float(p): float(q) for p, q in snap["bids"]}, "a": {float(p): float(q) for p, q in snap["asks"]}}
        for side in ("b", "a"):
            for p, q in data[side]:
                if float(q) == 0.0:
                    naive[side].pop(float(p), None)
                else:
                    naive[side][float(p)] = float(q)
        sent += 1
        row = sink.books[-1]
        assert row[3] == last and row[4][0] == max(naive["b"]) and row[6][0] == min(naive["a"])
    assert len(sink.books) == sent == 2 * 3000 + 1
    assert [e[3] for e in sink.events] == ["connect", "snapshot"]
