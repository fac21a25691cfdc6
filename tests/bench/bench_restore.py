"""Catalog lookups at a million files, and range loads vs whole-file reads, side by side in one run.

    .venv/bin/python tests/bench/bench_restore.py [--files 1000000] [--lookups 300] [--rows-per-s 20]

1. Builds a LanceDB catalog of ``--files`` file rows (1,000 streams x hours), then times
   ``Catalog.lookup(exchange, symbol, channel, range)`` with the scalar indexes
   (after ``optimize()``) and without them (same table, fresh copy before indexing):
   p50/p99 and the ratio; then the in-memory interval index (``IndexedCatalog``) for an hour
   and a month range, in-process and through the ``restore`` actor that owns the catalog.
2. Writes one hour of depth-20 l2book rows through the real writer (row groups of at most
   5 minutes), then times loading a 10-minute range (``read_range``, row groups pruned by
   statistics) against reading the whole file and filtering: median times and the ratio.
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from actors.storage.catalog import CATALOG_SCHEMA, Catalog, IndexedCatalog  # noqa: E402
from actors.storage.layout import HOUR_NS, NS  # noqa: E402
from actors.restore.loading import read_range  # noqa: E402
from actors.feed.records import StreamBuffers  # noqa: E402
from actors.storage.writer import SymbolStore  # noqa: E402

T0 = 1_735_689_600 * NS   # 2025-01-01 00:00 UTC


def build_catalog(root: Path, files: int) -> None:
    streams = [(f"S{i:04d}USDT", ch) for i in range(500) for ch in ("l2book", "trades")]
    hours = files // len(streams)
    catalog = Catalog(str(root))
    catalog.upsert([])
    table = catalog._open()
    batch = []
    for h in range(hours):
        start = T0 + h * HOUR_NS
        for sym, ch in streams:
            batch.append((sym, ch, start))
        if len(batch) >= 200_000 or h == hours - 1:
            n = len(batch)
            cols = {
                "key": [f"binance/perp/{c}/2025/01/{s}_{(t - T0) // HOUR_NS:06d}.parquet" for s, c, t in batch],
                "exchange": ["binance"] * n, "market": ["perp"] * n, "channel": [c for _, c, _ in batch],
                "symbol": [s for s, _, _ in batch], "depth": [20 if c == "l2book" else None for _, c, _ in batch],
                "period_start": [t for _, _, t in batch], "period_end": [t + HOUR_NS for _, _, t in batch],
                "ts_local_min": [t for _, _, t in batch], "ts_local_max": [t + HOUR_NS - 1 for _, _, t in batch],
                "ts_exchange_min": [t for _, _, t in batch], "ts_exchange_max": [t for _, _, t in batch],
                "rows": [36000] * n, "row_groups": [12] * n, "bytes": [1_000_000] * n, "sha256": ["0" * 64] * n,
                "node": ["bench"] * n, "sealed_at": [t for _, _, t in batch], "backed_up_at": [None] * n,
                "backup_sha256": [None] * n, "local": [True] * n,
            }
            arrays = [pa.array(cols[f.name], type=f.type) for f in CATALOG_SCHEMA]
            table.add(pa.Table.from_arrays(arrays, schema=CATALOG_SCHEMA))
            batch = []


def time_lookups(catalog, n: int, hours: int, span_h: int = 4) -> list[float]:
    """``n`` lookups of a random ``span_h``-hour range (not hour-aligned): seconds each."""
    rng = random.Random(1)
    out = []
    for _ in range(n):
        sym = f"S{rng.randrange(500):04d}USDT"
        start = T0 + rng.randrange(hours - span_h - 1) * HOUR_NS + rng.randrange(3600) * NS
        t = time.perf_counter()
        found = catalog.lookup("binance", sym, "l2book", start, start + span_h * HOUR_NS, depth=20)
        out.append(time.perf_counter() - t)
        assert found.num_rows == span_h + 1, found.num_rows
    return out


def time_actor_lookups(root: Path, n: int, hours: int) -> dict[str, list[float]]:
    """The same lookups through the ``restore`` actor that owns the catalog (a real local Ray)."""
    import ray

    from actors.remote.catalog import RemoteCatalog
    from actors.remote.restore import start_restore_actor

    ray.init(address="local", include_dashboard=False, num_cpus=1, log_to_driver=False)
    try:
        t = time.perf_counter()
        actor = start_restore_actor(str(root), None, ["binance"])
        catalog = RemoteCatalog(actor)
        catalog.count()
        print(f"  restore actor ready (index loaded) in {time.perf_counter() - t:.1f}s")
        return {"hour": time_lookups(catalog, n, hours, 1), "month": time_lookups(catalog, n, hours, 720)}
    finally:
        ray.shutdown()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def bench_catalog(files: int, lookups: int, with_actor: bool = True) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    try:
        t = time.perf_counter()
        build_catalog(work / "a", files)
        built = time.perf_counter() - t
        hours = files // 1000
        shutil.copytree(work / "a", work / "plain")
        t = time.perf_counter()
        Catalog(str(work / "a")).optimize()
        indexed_s = time.perf_counter() - t
        plain = time_lookups(Catalog(str(work / "plain")), max(20, lookups // 10), hours)
        indexed = time_lookups(Catalog(str(work / "a")), lookups, hours)
        count = Catalog(str(work / "a")).count()
        print(f"catalog: {count} file rows (built in {built:.1f}s, indexes+compaction {indexed_s:.1f}s)")
        print(f"  lookup without indexes  p50 {pct(plain, .5):8.2f} ms  p99 {pct(plain, .99):8.2f} ms")
        print(f"  lookup with indexes     p50 {pct(indexed, .5):8.2f} ms  p99 {pct(indexed, .99):8.2f} ms")
        print(f"  ratio (unindexed / indexed, p50): {pct(plain, .5) / pct(indexed, .5):.1f}x")
        t = time.perf_counter()
        memory = IndexedCatalog(str(work / "a"))
        loaded = time.perf_counter() - t
        nbytes = sum(table.nbytes for table, _ in memory.index.streams.values())
        print(f"  in-memory interval index: loaded in {loaded:.1f}s, {nbytes / 2**20:.0f} MiB of Arrow rows")
        for span, label in ((1, "hour "), (720, "month")):
            got = time_lookups(memory, lookups, hours, span)
            print(f"  index lookup, {label} range   p50 {pct(got, .5):8.3f} ms  p99 {pct(got, .99):8.3f} ms  "
                  f"(LanceDB indexed / index p50: {pct(indexed, .5) / pct(got, .5):.0f}x)")
        del memory
        if with_actor:
            for label, got in time_actor_lookups(work / "a", lookups, hours).items():
                print(f"  via the restore actor, {label} range  p50 {pct(got, .5):8.3f} ms  "
                      f"p99 {pct(got, .99):8.3f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_range_load(rows_per_s: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        core = SymbolStore(str(work), "binance", "perp", ["BTCUSDT"], 20, HOUR_NS, "bench", None)
        rng = random.Random(2)
        seq = 0
        for second in range(3600):
            sink = StreamBuffers()
            for k in range(rows_per_s):
                ts = T0 + second * NS + k * (NS // rows_per_s)
                bids = [60000.0 - i * 0.1 for i in range(20)]
                asks = [60000.1 + i * 0.1 for i in range(20)]
                sink.book("BTCUSDT", ts, ts - 1000, second * 1000 + k, bids,
                          [rng.random() for _ in range(20)], asks, [rng.random() for _ in range(20)])
            seq += 1
            core.write("bench", seq, sink.take())
        core.seal_all()
        path = next(work.rglob("*.parquet"))
        meta = pq.ParquetFile(path).metadata
        start, end = T0 + 25 * 60 * NS, T0 + 35 * 60 * NS
        part, whole = [], []
        for _ in range(7):
            t = time.perf_counter()
            got = read_range([str(path)], "l2book", start, end)
            part.append(time.perf_counter() - t)
            t = time.perf_counter()
            table = pq.read_table(path)
            ts = table.column("ts_local").cast(pa.int64())
            full = table.filter(pc.and_(pc.greater_equal(ts, start), pc.less(ts, end)))
            whole.append(time.perf_counter() - t)
        assert got.num_rows == full.num_rows == 600 * rows_per_s
        p, w = statistics.median(part), statistics.median(whole)
        print(f"range load: one hour depth-20 file, {meta.num_rows} rows, {meta.num_row_groups} row groups, "
              f"{path.stat().st_size / 1e6:.1f} MB")
        print(f"  10 minutes via read_range (pruned)  {p * 1000:8.1f} ms")
        print(f"  whole file read + filter            {w * 1000:8.1f} ms")
        print(f"  ratio (whole / range): {w / p:.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--rows-per-s", type=int, default=20)
    parser.add_argument("--no-actor", action="store_true", help="skip the lookups through the Ray actor")
    args = parser.parse_args()
    bench_range_load(args.rows_per_s)
    bench_catalog(args.files, args.lookups, not args.no_actor)


if __name__ == "__main__":
    main()
