"""The compiled order-book side vs the pure-Python one, on the real Binance recording.

    nice -n 10 .venv/bin/python tests/bench/bench_book.py [--rounds 5]

Two measures, each compiled vs pure Python side by side in one run (median of ``--rounds``):

1. the book alone: the recorded REST snapshot, then every depth diff that follows it (6,545 diffs,
   ~68 levels each, prices and sizes as the venue's strings; already JSON-decoded) applied, and the
   top 20 levels of both sides read after each, as a book row needs them;
2. our Binance client's whole per-frame path, offline: every recorded diff and trade frame (JSON
   text) through ``on_frame`` into the row buffers, flushed to Arrow batches every 500 frames.

Both books must give the same top 20 after every diff (checked, not timed).
"""
from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time

from recorded import RECORDING, SYMBOL, depth_diffs, is_snapshot, read_recording

from actors.feed.book import OrderBook, PySide
from actors.feed.records import StreamBuffers
from actors.venues import get_venue
from actors.venues.base import Endpoints, FetchSnapshot

try:
    from actors.feed._book import Side as CompiledSide
except ImportError:
    raise SystemExit("the compiled side is not built: .venv/bin/pip install -e . (needs a C compiler)")


def time_book(side_type: type, snapshot: dict, diffs: list) -> float:
    """Seconds to apply every diff and read the top 20 after each."""
    book = OrderBook(side_type)
    book.load_snapshot(snapshot["bids"], snapshot["asks"])
    started = time.perf_counter()
    for bids, asks in diffs:
        book.apply_levels(bids, asks)
        book.top(20)
    return time.perf_counter() - started


def time_client(side_type: type, frames: list) -> float:
    """Seconds for our Binance client to turn every frame into buffered rows and Arrow batches."""
    venue = get_venue("binance")
    settings = venue.replay_settings(venue.settings({}), str(RECORDING))
    plan, = venue.plan_connections(settings, Endpoints("ws://x", "http://x"), [SYMBOL], ["l2book", "trades"], 20)
    client_type = type("Client", (venue.Client,), {"book_type": functools.partial(OrderBook, side_type)})
    sink = StreamBuffers()
    client = client_type(venue, plan, settings, sink, 20)
    client.on_connect(0)
    spent, pending = 0.0, []
    for count, (payload, ts_local, snapshot) in enumerate(frames):
        if snapshot:
            for action in pending:
                client.on_snapshot(action.symbol, payload.encode(), ts_local)
            pending = []
            continue
        started = time.perf_counter()
        actions = client.on_frame(payload, ts_local)
        if count % 500 == 0:
            sink.take()
        spent += time.perf_counter() - started
        pending += [a for a in actions if isinstance(a, FetchSnapshot)]
    started = time.perf_counter()
    sink.take()
    return spent + time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    snapshot, diffs = depth_diffs()
    frames = [(rec.payload, rec.ts_local, is_snapshot(rec.payload)) for rec in read_recording(str(RECORDING))
              if "@bookTicker" not in rec.payload[:40]]
    n_frames = sum(1 for f in frames if not f[2])
    compiled, python = OrderBook(CompiledSide), OrderBook(PySide)
    for book in (compiled, python):
        book.load_snapshot(snapshot["bids"], snapshot["asks"])
    for bids, asks in diffs:                          # the same book, level for level
        compiled.apply_levels(bids, asks)
        python.apply_levels(bids, asks)
        if compiled.top(20) != python.top(20):
            raise SystemExit("the compiled and the Python book disagree")
    gc.freeze()
    results: dict[str, list[float]] = {k: [] for k in ("book compiled", "book python", "client compiled",
                                                         "client python")}
    time_client(CompiledSide, frames)                 # warm-up (imports, first allocations), not counted
    for _ in range(args.rounds):
        results["book compiled"].append(time_book(CompiledSide, snapshot, diffs))
        results["book python"].append(time_book(PySide, snapshot, diffs))
        results["client compiled"].append(time_client(CompiledSide, frames))
        results["client python"].append(time_client(PySide, frames))
    median = {k: statistics.median(v) for k, v in results.items()}
    levels = sum(len(b) + len(a) for b, a in diffs) / len(diffs)
    print(f"real Binance BTCUSDT recording: {len(diffs)} diffs ({levels:.0f} levels each), "
          f"{n_frames} diff and trade frames; median of {args.rounds} rounds")
    print(f"  book (apply + top 20)   compiled {median['book compiled'] / len(diffs) * 1e6:6.2f} us/diff   "
          f"python {median['book python'] / len(diffs) * 1e6:6.2f} us/diff   "
          f"-> {median['book python'] / median['book compiled']:.1f}x")
    print(f"  client, frame to Arrow  compiled {median['client compiled'] / n_frames * 1e6:6.2f} us/frame  "
          f"python {median['client python'] / n_frames * 1e6:6.2f} us/frame  "
          f"-> {median['client python'] / median['client compiled']:.1f}x")


if __name__ == "__main__":
    main()
