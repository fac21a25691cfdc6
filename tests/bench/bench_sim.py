"""Simulator and client throughput on loopback, measured side by side in one run.

    .venv/bin/python tests/bench/bench_sim.py [--rate 20000] [--symbols 4] [--seconds 10]

Runs the Binance simulator at ``--rate`` messages/s in total and reads it with
(a) a bare websockets client that only counts frames (the transport ceiling), and
(b) our FeedConnection + BinanceClient (parse, sequence, book, rows into Arrow buffers).
Prints messages/s achieved by each and the ratios to the requested rate and to each other.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors.feed.connection import FeedConnection, FeedOptions  # noqa: E402
from actors.feed.records import StreamBuffers  # noqa: E402
from actors.venues import get_venue  # noqa: E402
from actors.venues.base import Endpoints  # noqa: E402
from actors.venues.sim.server import ServerThread  # noqa: E402


binance = get_venue("binance")


def run_bare(rate: float, symbols: list[str], seconds: float) -> float:
    server = binance.make_sim_server(symbols, {"messages_per_s": rate / len(symbols)}, 20)
    thread = ServerThread(server).start()
    streams = [f"{s.lower()}@depth@100ms" for s in symbols] + [f"{s.lower()}@trade" for s in symbols]

    async def main() -> float:
        from websockets.asyncio.client import connect
        async with connect(f"{server.ws_base}/public/stream?streams={'/'.join(streams)}", max_size=2 ** 24) as ws:
            count, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < seconds:
                await ws.recv()
                count += 1
            return count / (time.monotonic() - t0)
    try:
        return asyncio.run(main())
    finally:
        thread.stop()


def run_ours(rate: float, symbols: list[str], seconds: float) -> tuple[float, int]:
    server = binance.make_sim_server(symbols, {"messages_per_s": rate / len(symbols)}, 20)
    thread = ServerThread(server).start()
    settings = binance.settings({"depth_stream": "depth@100ms", "snapshot_limit": 1000})
    sink = StreamBuffers()
    plan, = binance.plan_connections(settings, Endpoints(server.ws_base, server.rest_base), symbols,
                                     ["l2book", "trades"], 20)
    conn = FeedConnection(plan, binance.make_client(plan, settings, sink, 20), FeedOptions())
    rows = 0

    async def main() -> float:
        nonlocal rows
        stop = asyncio.Event()
        task = asyncio.ensure_future(conn.run(stop))
        await asyncio.sleep(1.0)                     # connect + snapshot
        start_frames, t0 = conn.stats.frames, time.monotonic()
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(0.2)
            rows += sum(b.num_rows for b in sink.take().values())   # what the socket actor does
        achieved = (conn.stats.frames - start_frames) / (time.monotonic() - t0)
        stop.set()
        await asyncio.wait([task], timeout=5)
        return achieved
    try:
        return asyncio.run(main()), rows
    finally:
        thread.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20000)
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    symbols = [f"SYM{i}USDT" for i in range(args.symbols)]
    bare = run_bare(args.rate, symbols, args.seconds)
    ours, rows = run_ours(args.rate, symbols, args.seconds)
    print(f"requested                      {args.rate:10.0f} msgs/s over {args.symbols} symbols")
    print(f"bare websockets reader         {bare:10.0f} msgs/s   ({bare / args.rate:.2f} of requested)")
    print(f"our client (parse+book+Arrow)  {ours:10.0f} msgs/s   ({ours / args.rate:.2f} of requested, "
          f"{ours / bare:.2f} of bare), {rows} rows buffered")


if __name__ == "__main__":
    main()
