"""The three clients of bench_ingest.py, each run in its own process against loadgen.py.

    python tests/bench/ingest_clients.py bare|ours|feed|feed+writer|cryptofeed|cryptofeed-count --port P --symbols N --out FILE

Each reads every frame the generator sends (it stops once the generator finished and everything
it sent has been read) and writes a JSON result to ``--out``:

* ``bare``: a websockets client that receives (``async for``) and orjson-parses each frame, nothing else;
* ``ours``: the whole archiver (``run_archive``, as ``launch.py`` runs it: Ray, socket actor,
  writer actors, spool, sealing, catalog) with the generator as its live Binance endpoints;
  rows are counted in the sealed Parquet files afterwards, and the writers' receive-to-durable
  lag is read from their stats;
* ``feed``: our socket process's path without Ray in this process (Binance client, VenueFeed,
  StreamBuffers, Outbox; the writers' call only takes the batches): where the socket's CPU goes
  (``TICKARCHIVE_BENCH_PROFILE=FILE`` writes a cProfile of it); ``feed+writer`` hands the batches
  to the writers' StoreGroup in the same process (spool, seal, catalog: ours without Ray);
* ``cryptofeed``: cryptofeed 2.4.1's BinanceFutures pointed at the generator (l2_book depth 20
  and trades), callbacks appending one line per book update (its delta, the form cryptofeed's
  own backends archive) / trade to a file; ``cryptofeed-count`` the same with callbacks that
  only count. (A callback writing the top 20 levels per update, as we archive, costs cryptofeed
  ~1 ms per update: its order book re-sorts its ~3,000 levels for every top-N read.)

TLS: the generator's self-signed certificate is trusted through ``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE`` (set by
bench_ingest.py), so every client speaks wss/https exactly as against the real venue.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson  # noqa: E402

UVLOOP = bool(os.environ.get("TICKARCHIVE_BENCH_UVLOOP"))     # bench_ingest.py --uvloop


def generator_stats(port: int) -> dict:
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/stats", timeout=10) as resp:
        return orjson.loads(resp.read())


class Progress:
    """Our two connections' frame count, sampled: when it grew first and last, and whether it stopped."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0
        self.frames = 0

    def stalled(self, frames: int) -> bool:
        """Record a sample; True once frames came and then stopped coming."""
        if frames > self.frames:
            self.frames, self.last = frames, time.perf_counter()
            self.first = self.first or self.last
            return False
        return self.first is not None

    def done(self, stats: dict) -> bool:
        """Both connections were sent everything, and it was read (+ the 2 SUBSCRIBE acks)."""
        return stats["finished"] >= 2 and self.frames >= stats["depth"] + stats["trades"] + 2

    @property
    def seconds(self) -> float:
        return self.last - (self.first or self.last)


def streams(symbols: int) -> list[str]:
    return [f"s{i}usdt@{kind}" for i in range(symbols) for kind in ("depth@100ms", "aggTrade")]


def run_bare(port: int, symbols: int) -> dict:
    from websockets.asyncio.client import connect

    async def main() -> dict:
        url = f"wss://127.0.0.1:{port}/stream?streams={'/'.join(streams(symbols))}"
        count, first, last = 0, None, None
        async with connect(url, max_size=2 ** 24, compression=None) as ws:
            async def watch() -> None:        # closes the socket once everything sent was read
                seen = -1
                while True:
                    await asyncio.sleep(1.0)
                    if count == seen:
                        st = await asyncio.to_thread(generator_stats, port)
                        if st["finished"] >= 1 and count >= st["depth"] + st["trades"]:
                            await ws.close()
                            return
                    seen = count
            watcher = asyncio.ensure_future(watch())
            async for data in ws:               # no timer per frame: the cheapest way to read
                orjson.loads(data)
                count += 1
                last = time.perf_counter()
                if first is None:
                    first = last
            await watcher
        return {"frames": count, "seconds": last - first}
    return asyncio.run(main())


def sealed_rows(root: str) -> dict[str, int]:
    """Book and trade rows in the sealed Parquet files under ``root``."""
    import pyarrow.parquet as pq

    rows = {"l2book": 0, "trades": 0}
    for path in Path(root).rglob("*.parquet"):
        if ".catalog" in path.parts or ".spool" in str(path):
            continue
        channel = path.relative_to(root).parts[2]
        if channel in rows:
            rows[channel] += pq.ParquetFile(path).metadata.num_rows
    return rows


def run_ours(port: int, symbols: int, root: str, overrides: list[str]) -> dict:
    import threading

    import ray

    from actors.cli.config import load_settings
    from actors.remote.archive import run_archive

    names = [f"S{i}USDT" for i in range(symbols)]
    settings = load_settings([
        "source=live", f"storage.root={root}", f"archive.binance=[{','.join(names)}]", "archive.bybit=[]",
        "archive.hyperliquid=[]", f"venues.binance.ws_base=wss://127.0.0.1:{port}",
        f"venues.binance.rest_base=https://127.0.0.1:{port}", "venues.binance.depth_stream=depth@100ms",
        "venues.binance.trade_stream=aggTrade", "ray.dashboard=false", "log.console=json", "log_level=WARNING",
        "duration_s=3600", *overrides])      # an upper bound: a finite run seals everything when stopped
    stop = threading.Event()
    seen: dict = {}

    def watch(runs) -> None:
        run = runs[0]
        writers = list(run.writers.values())
        progress = Progress()
        while True:
            time.sleep(0.1)
            stats = run.socket_stats()
            if not progress.stalled(stats.frames if stats is not None else 0):
                continue
            if progress.done(generator_stats(port)):      # only once the frames stopped: asking costs CPU
                seen["seconds"] = progress.seconds
                seen["frames"] = progress.frames - 2
                time.sleep(0.5)                                 # the last flush reaches the writers
                seen["writers"] = ray.get([w.stats.remote() for w in {w._actor_id: w for w in writers}.values()])
                stop.set()
                return

    report = run_archive(settings, stop_flag=stop,
                         on_started=lambda runs: threading.Thread(target=watch, args=(runs,), daemon=True).start())
    rows = sealed_rows(root)
    lags = [w.durable_lag_ms for w in seen.get("writers", [])]
    return {"frames": seen.get("frames", report.frames), "seconds": seen.get("seconds", report.seconds),
            "rows": rows, "lag_ms": {k: max(x.get(k) or 0 for x in lags) for k in ("p50", "p99", "max")} if lags else {}}


def run_feed(port: int, symbols: int, profile: str | None = None, root: str | None = None) -> dict:
    """Our socket process's path without Ray: the Binance client, VenueFeed, StreamBuffers and the
    Outbox in this process, the writers replaced by a call that takes the batches and acknowledges
    (``root`` given: a call to an in-process StoreGroup, spools and sealed files under ``root``, the
    rows counted in its sealed files). ``profile``: write a cProfile of the run there (``python -m
    pstats`` reads it)."""
    from actors.feed.connection import FeedOptions
    from actors.feed.venue_feed import VenueFeed
    from actors.venues import get_venue
    from actors.venues.base import Endpoints

    venue = get_venue("binance")
    settings = venue.settings({"depth_stream": "depth@100ms", "trade_stream": "aggTrade"})
    names = [f"S{i}USDT" for i in range(symbols)]
    plans = venue.plan_connections(settings, Endpoints(f"wss://127.0.0.1:{port}", f"https://127.0.0.1:{port}"),
                                   names, ["l2book", "trades"], 20)
    rows = {"l2book": 0, "trades": 0, "events": 0}

    group = None
    if root is not None:
        from actors.storage.catalog import Catalog
        from actors.storage.sealing import CatalogBuffer, StoreGroup
        from actors.storage.writer import SymbolStore

        catalog = CatalogBuffer(Catalog(root))
        group = StoreGroup(lambda venue, symbol: SymbolStore(root, venue, "perp", [symbol], 20, 3600 * 10 ** 9,
                                                             f"w-{symbol}", catalog),
                           [("binance", n) for n in names], 0, catalog=catalog)

    async def send(writer, producer, seq, batches) -> None:
        if group is not None:
            group.write("binance", producer, seq, batches)
            return
        for (_, channel), batch in batches.items():
            rows[channel] += batch.num_rows

    async def main() -> dict:
        feed = VenueFeed("binance", plans, lambda plan, sink: venue.make_client(plan, settings, sink, 20),
                         {n: "writer" for n in names}, send, "bench", FeedOptions(tags={"exchange": "binance"}))
        feed.start()
        progress = Progress()
        while True:
            await asyncio.sleep(0.1)
            if progress.stalled(feed.frames) and progress.done(await asyncio.to_thread(generator_stats, port)):
                await feed.stop()
                if group is not None:
                    group.seal_all()
                    group.stop()
                    rows.update(sealed_rows(root))
                return {"frames": progress.frames - 2, "seconds": progress.seconds, "rows": rows}

    if not profile:
        return asyncio.run(main())
    import cProfile

    with cProfile.Profile() as prof:
        result = asyncio.run(main())
    prof.dump_stats(profile)
    return result


def run_cryptofeed(port: int, symbols: int, out_file: str | None) -> dict:
    from cryptofeed import FeedHandler
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
    from cryptofeed.defines import L2_BOOK, TRADES
    from cryptofeed.exchanges import BinanceFutures

    class Loopback(BinanceFutures):
        websocket_endpoints = [WebsocketEndpoint(f"wss://127.0.0.1:{port}", options={"compression": None})]
        rest_endpoints = [RestEndpoint(f"https://127.0.0.1:{port}", routes=Routes(
            "/fapi/v1/exchangeInfo", l2book="/fapi/v1/depth?symbol={}&limit={}", authentication="/fapi/v1/listenKey",
            open_interest="/fapi/v1/openInterest?symbol={}"))]

    counts = {"book": 0, "trades": 0}
    times: dict = {}
    sink = open(out_file, "w") if out_file else None

    async def book(b, receipt) -> None:
        counts["book"] += 1
        times.setdefault("first", time.perf_counter())
        if sink is not None:       # cryptofeed's own archive form: the delta of each update
            sink.write(f"{receipt} {b.symbol} {b.sequence_number} {b.delta}\n")

    async def trade(t, receipt) -> None:
        counts["trades"] += 1
        times.setdefault("first", time.perf_counter())
        if sink is not None:
            sink.write(f"{receipt} {t.symbol} {t.id} {t.price} {t.amount} {t.side} {t.timestamp}\n")

    fh = FeedHandler(config={"log": {"disabled": True}, "uvloop": UVLOOP})
    std = [f"S{i}-USDT-PERP" for i in range(symbols)]
    fh.add_feed(Loopback(symbols=std, channels=[L2_BOOK, TRADES], max_depth=20, depth_interval="100ms",
                         callbacks={L2_BOOK: book, TRADES: trade}))

    async def watch() -> None:
        progress, since = -1, time.monotonic()
        last_progress = time.perf_counter()
        while True:
            await asyncio.sleep(0.1)
            total = counts["book"] + counts["trades"]
            if total != progress:
                progress, since, last_progress = total, time.monotonic(), time.perf_counter()
                continue
            if time.monotonic() - since > 30:
                raise SystemExit(f"cryptofeed made no progress for 30 s at {total} messages")
            st = await asyncio.to_thread(generator_stats, port)   # only once the messages stopped
            # every diff and trade gives one callback (plus one per symbol for the REST snapshot)
            done = counts["book"] + counts["trades"] >= st["depth"] + st["trades"] + symbols
            if st["finished"] >= 1 and done:
                times["last"] = last_progress
                fh.stop_tasks() if hasattr(fh, "stop_tasks") else None
                asyncio.get_running_loop().stop()
                return

    loop = asyncio.new_event_loop()       # (FeedHandler installed uvloop's policy when told to)
    asyncio.set_event_loop(loop)
    loop.create_task(watch())
    try:
        fh.run(start_loop=False)
        loop.run_forever()
    finally:
        if sink is not None:
            sink.close()
    return {"frames": counts["book"] + counts["trades"], "seconds": times["last"] - times["first"], "rows": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("client", choices=["bare", "ours", "feed", "feed+writer", "cryptofeed", "cryptofeed-count"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", required=True, help="a scratch folder (archive root, cryptofeed's file)")
    parser.add_argument("--set", action="append", default=[], help="a config override for ours (Hydra syntax)")
    args = parser.parse_args()
    if UVLOOP and args.client in ("bare", "feed", "feed+writer"):
        import uvloop

        uvloop.install()
    if args.client == "bare":
        result = run_bare(args.port, args.symbols)
    elif args.client in ("feed", "feed+writer"):
        result = run_feed(args.port, args.symbols, os.environ.get("TICKARCHIVE_BENCH_PROFILE"),
                          str(Path(args.work) / "archive") if args.client == "feed+writer" else None)
    elif args.client == "ours":
        result = run_ours(args.port, args.symbols, str(Path(args.work) / "archive"), args.set)
    else:
        out = str(Path(args.work) / "cryptofeed.txt") if args.client == "cryptofeed" else None
        result = run_cryptofeed(args.port, args.symbols, out)
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
