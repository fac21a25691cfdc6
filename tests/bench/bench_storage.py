"""Bytes per row of sealed files, and partial-hour reads, against the baselines, in one run.

    nice -n 10 .venv/bin/python tests/bench/bench_storage.py [--rounds 7]

Data: the real Binance USD-M recording (tests/fixtures/real/binance-usdm/btcusdt_20240808.gz)
replayed offline through our client (6,547 depth-20 book rows, 21,313 trades), sealed by the
real writer core. Printed side by side:

1. bytes/row of our files (format 3: one schema per channel, per-column encodings, see
   actors/storage/fileformat.py) vs format 2 (per-file types: int64 ids, ms times; written by
   its own writer, tests/legacy_formats.py) vs format 1 (the record schema with pyarrow's zstd
   defaults) vs quantpylib-style Parquet (``ts, bp, bs, ap, as`` and ``ts, price, size, dir`` in
   ms, pyarrow defaults), and all our files against the archived raw JSON frames gzip'd (level 6).
2. encode and load: median time to write each channel's file (format 3's ``write_sealed`` vs
   format 2's writer) and to load it whole with ``read_range`` (ratio > 1: format 3 faster).
3. partial-hour reads: the recording's book rows tiled to one hour (shifted in time), sealed in
   formats 3, 2 and 1 with the same row groups; median time of ``read_range`` for 10 minutes.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from recorded import REPO, SYMBOL, archived_payloads, recorded_rows

sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from actors.feed.records import SCHEMAS  # noqa: E402
from actors.restore.loading import read_range  # noqa: E402
from actors.storage.layout import HOUR_NS, NS  # noqa: E402
from actors.storage.fileformat import write_sealed  # noqa: E402
from actors.storage.writer import ROW_GROUP_ROWS, ROW_GROUP_SPAN_NS, SymbolStore  # noqa: E402
from legacy_formats import write_legacy  # noqa: E402


def seal(root: Path, tables: dict[str, pa.Table]) -> dict[str, Path]:
    """Seal the rows with the real writer core (hourly files); channel -> file."""
    core = SymbolStore(str(root), "binance", "perp", [SYMBOL], 20, HOUR_NS, "bench", None)
    core.write("bench", 1, {(SYMBOL, ch): t.combine_chunks().to_batches()[0] for ch, t in tables.items()})
    files: dict[str, Path] = {}
    for rec in core.seal_all():
        if rec["channel"] in files:
            raise SystemExit("the rows span two hours; the bench expects one file per channel")
        files[rec["channel"]] = root / rec["key"]
    return files


def write_format1(path: Path, table: pa.Table) -> None:
    """How the writer sealed files before format 2: the record schema, zstd defaults, same row groups."""
    ts = table.column("ts_local").cast(pa.int64()).to_numpy()
    cuts = [0, *(np.flatnonzero(np.diff(ts // ROW_GROUP_SPAN_NS)) + 1).tolist(), len(ts)]
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            writer.write_table(table.slice(lo, hi - lo), row_group_size=ROW_GROUP_ROWS)


def quantpylib_tables(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """The same rows in quantpylib's raw schemas (ms times, no exchange time, seq or trade id)."""
    book, trades = tables["l2book"], tables["trades"]
    ms = lambda t: pc.divide(t.column("ts_local").cast(pa.int64()), 1_000_000)  # noqa: E731
    return {"l2book": pa.table({"ts": ms(book), "bp": book.column("bid_px"), "bs": book.column("bid_sz"),
                                "ap": book.column("ask_px"), "as": book.column("ask_sz")}),
            "trades": pa.table({"ts": ms(trades), "price": trades.column("price"), "size": trades.column("size"),
                                "dir": trades.column("side")})}


def tiled_hour(book: pa.Table, start_ns: int) -> pa.Table:
    """The book rows repeated back to back (shifted in time) to fill one hour from ``start_ns``."""
    ts = book.column("ts_local").cast(pa.int64()).to_numpy()
    span = int(ts[-1] - ts[0]) + 1
    parts = []
    for k in range(HOUR_NS // span + 1):
        shift = start_ns - int(ts[0]) + k * span
        part = book.set_column(0, book.schema.field(0), pa.array(ts + shift).cast(book.schema.field(0).type))
        parts.append(part)
    table = pa.concat_tables(parts)
    keep = pc.less(table.column("ts_local").cast(pa.int64()), start_ns + HOUR_NS)
    return table.filter(keep).combine_chunks()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--keep", help="copy the one-hour file here (for profiling)")
    args = parser.parse_args()
    from actors.logs import setup_logging
    setup_logging("WARNING")                  # no JSON line per sealed file in the output
    tables = {ch: t for ch, t in recorded_rows().items() if ch in ("l2book", "trades")}
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        ours = seal(work / "ours", tables)
        qp = quantpylib_tables(tables)
        print("bytes per row on the real recording (Binance USD-M BTCUSDT, depth 20):")
        print(f"  {'channel':8} {'rows':>7} {'ours':>8} {'format 2':>9} {'format 1':>9} {'quantpylib':>11}"
              "   ours/format 2  ours/quantpylib")
        ours_total = 0
        for ch in ("l2book", "trades"):
            rows = tables[ch].num_rows
            write_format1(work / f"{ch}.v1.parquet", tables[ch])
            write_legacy(work / f"{ch}.v2.parquet", tables[ch], ch, 2)
            pq.write_table(qp[ch], work / f"{ch}.qp.parquet")
            o = ours[ch].stat().st_size
            v2 = (work / f"{ch}.v2.parquet").stat().st_size
            b = (work / f"{ch}.v1.parquet").stat().st_size
            q = (work / f"{ch}.qp.parquet").stat().st_size
            ours_total += o
            print(f"  {ch:8} {rows:7d} {o / rows:8.2f} {v2 / rows:9.2f} {b / rows:9.2f} {q / rows:11.2f}"
                  f"   {o / v2:13.2f}  {o / q:15.2f}")
        raw = "\n".join(archived_payloads()).encode()
        gz = len(gzip.compress(raw, 6))
        print(f"  all our files {ours_total / 1e3:.0f} kB vs archived raw JSON {len(raw) / 1e6:.1f} MB gzip'd "
              f"{gz / 1e3:.0f} kB: {ours_total / gz:.2f}x")

        print(f"encode and load, median of {args.rounds} (ratio > 1: format 3 faster):")
        for ch in ("l2book", "trades"):
            encode: dict[str, list[float]] = {"3": [], "2": []}
            decode: dict[str, list[float]] = {"3": [], "2": []}
            files = {"3": work / f"{ch}.enc3.parquet", "2": work / f"{ch}.enc2.parquet"}
            for _ in range(args.rounds):
                t = time.perf_counter()
                write_sealed(str(files["3"]), tables[ch], ch, {})
                encode["3"].append(time.perf_counter() - t)
                t = time.perf_counter()
                write_legacy(files["2"], tables[ch], ch, 2)
                encode["2"].append(time.perf_counter() - t)
                for version, path in files.items():
                    t = time.perf_counter()
                    got = read_range([str(path)], ch, 0, 2**63 - 1)
                    decode[version].append(time.perf_counter() - t)
                    assert got.num_rows == tables[ch].num_rows
            e3, e2, d3, d2 = (statistics.median(x) for x in (encode["3"], encode["2"], decode["3"], decode["2"]))
            print(f"  {ch:8} encode format 3 {e3 * 1000:6.1f} ms, format 2 {e2 * 1000:6.1f} ms: {e2 / e3:.2f}x;"
                  f"  load format 3 {d3 * 1000:6.1f} ms, format 2 {d2 * 1000:6.1f} ms: {d2 / d3:.2f}x")

        # partial-hour reads: one hour tiled from the recording, formats 3, 2 and 1
        start = int(tables["l2book"].column("ts_local").cast(pa.int64())[0].as_py()) // HOUR_NS * HOUR_NS
        hour = tiled_hour(tables["l2book"], start)
        new = seal(work / "hour", {"l2book": hour})["l2book"]
        old = work / "hour.v1.parquet"
        write_format1(old, hour)
        v2 = work / "hour.v2.parquet"
        write_legacy(v2, hour, "l2book", 2)
        lo, hi = start + 25 * 60 * NS, start + 35 * 60 * NS
        times: dict[str, list[float]] = {"new": [], "v2": [], "old": []}
        for _ in range(args.rounds):
            for name, path in (("new", new), ("v2", v2), ("old", old)):
                t = time.perf_counter()
                got = read_range([str(path)], "l2book", lo, hi)
                times[name].append(time.perf_counter() - t)
                assert got.schema.equals(SCHEMAS["l2book"])
        expect = read_range([str(old)], "l2book", lo, hi)
        assert got.num_rows == expect.num_rows > 0 and read_range([str(new)], "l2book", lo, hi).equals(expect)
        n, m, o = (statistics.median(times[k]) for k in ("new", "v2", "old"))
        print(f"10 minutes of a one-hour depth-20 file ({hour.num_rows} rows; {new.stat().st_size / 1e6:.1f} MB "
              f"format 3, {v2.stat().st_size / 1e6:.1f} MB format 2, {old.stat().st_size / 1e6:.1f} MB format 1), "
              f"median of {args.rounds}:")
        print(f"  read_range format 3 {n * 1000:.1f} ms, format 2 {m * 1000:.1f} ms, format 1 {o * 1000:.1f} ms: "
              f"format 2/format 3 {m / n:.2f}x")
        if args.keep:
            shutil.copy(new, args.keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
