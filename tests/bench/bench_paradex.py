"""Paradex: the same market stream as SBE binary frames vs the old JSON payloads, offline.

    nice -n 10 .venv/bin/python tests/bench/bench_paradex.py [--frames 50000] [--rounds 5]

One seeded synthetic market (the simulator's, ~200 levels a side) gives a whole-book snapshot and
``--frames`` steps (depth deltas and trades, 3:1 roughly); each is encoded both ways by the
simulator's own encoders. Printed side by side (median of ``--rounds``): bytes per frame, the
decode alone (``paradex_sbe.decode`` vs ``orjson.loads``), and our client's whole per-frame path
(``ParadexClient.on_frame`` into the row buffers, depth 20, flushed to Arrow every 500 frames).
Both paths must write the same books and trades (checked, not timed).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

import orjson

from actors.feed.records import ListSink, StreamBuffers
from actors.venues import get_venue
from actors.venues import paradex_sbe as sbe
from actors.venues.base import Endpoints
from actors.venues.sim.market import SimSymbol

SYMBOL = "BTC-USD-PERP"
paradex = get_venue("paradex")


def frames(n: int) -> tuple[list[bytes], list[str]]:
    """The snapshot and ``n`` steps as SBE frames and as JSON text, by the simulator's encoders."""
    out = {}
    for payloads in ("sbe", "json"):
        server = paradex.make_sim_server([SYMBOL], {"paradex_payloads": payloads, "seed": 3}, 20)
        s = server.symbols[SYMBOL]
        sent: list = []

        async def push(key, payload, sent=sent):
            sent.append(payload)
            return 1

        async def send_data(session, payload, sent=sent):
            sent.append(payload)
            return True

        server.push, server.send_data = push, send_data

        async def run(server=server, s=s):
            await server.on_subscribe(None, f"order_book.{SYMBOL}.deltas")
            for _ in range(n):
                await server.step(s)
        asyncio.run(run())
        out[payloads] = sent
    return out["sbe"], out["json"]


def client(sink):
    settings = paradex.settings({})
    plan, = paradex.plan_connections(settings, Endpoints("ws://h", "http://h"), [SYMBOL], ["l2book", "trades"], 20)
    c = paradex.make_client(plan, settings, sink, 20)
    c.on_connect(0)
    return c


def time_path(data: list) -> float:
    sink = StreamBuffers()
    c = client(sink)
    gc.collect()
    started = time.perf_counter()
    for k, frame in enumerate(data):
        c.on_frame(frame, k)
        if k % 500 == 499:
            sink.take()
    sink.take()
    return time.perf_counter() - started


def time_decode(data: list, decode) -> float:
    gc.collect()
    started = time.perf_counter()
    for frame in data:
        decode(frame)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    binary, text = frames(args.frames)
    a, b = ListSink(), ListSink()                       # same rows both ways (not timed)
    ca, cb = client(a), client(b)
    for k, frame in enumerate(binary):
        ca.on_frame(frame, k)
    for k, frame in enumerate(text):
        cb.on_frame(frame, k)
    assert [r[3:] for r in a.books] == [r[3:] for r in b.books] and a.books
    assert [r[3:] for r in a.trades] == [r[3:] for r in b.trades] and a.trades
    assert not [e for e in a.events + b.events if e[3] in ("error", "gap")]

    rows = []
    for name, fn in (("decode only", lambda d, dec: time_decode(d, dec)), ("client on_frame -> Arrow", None)):
        sbe_s = statistics.median(fn(binary, sbe.decode) if fn else time_path(binary) for _ in range(args.rounds))
        json_s = statistics.median(fn(text, orjson.loads) if fn else time_path(text) for _ in range(args.rounds))
        rows.append((name, len(binary) / sbe_s, len(text) / json_s))
    steps = binary[1:]
    sbe_bytes = sum(map(len, steps)) / len(steps)
    json_bytes = sum(len(t.encode()) for t in text[1:]) / len(steps)
    print(f"{len(binary)} frames ({len(a.books)} book rows, {len(a.trades)} trades), snapshot "
          f"{len(binary[0])} B SBE vs {len(text[0])} B JSON, median of {args.rounds} rounds")
    print(f"{'':28} {'SBE':>12} {'JSON':>12} {'SBE/JSON':>9}")
    print(f"{'bytes per frame (steps)':28} {sbe_bytes:12.0f} {json_bytes:12.0f} {sbe_bytes / json_bytes:9.2f}")
    for name, s_rate, j_rate in rows:
        print(f"{name + ' (frames/s)':28} {s_rate:12,.0f} {j_rate:12,.0f} {s_rate / j_rate:9.2f}")


if __name__ == "__main__":
    main()
