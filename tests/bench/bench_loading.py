"""Loading five hours of depth-20 books: into Arrow, into quantpylib's shapes, and pandas.read_parquet.

    nice -n 10 .venv/bin/python tests/bench/bench_loading.py [--hours 5] [--rounds 5]
    (bench-only: pip install pandas)

Data: the real Binance USD-M recording's book rows (tests/fixtures/real) tiled back to back to
fill ``--hours`` hours (shifted in time), sealed hour by hour by the real writer core. Timed side
by side, median of ``--rounds``:

* ``load_l2book`` (Arrow table in the record schema: times as timestamps, levels as lists);
* ``load_lob_archives`` (quantpylib's ``[{'ts': ms, 'b': ndarray[[px, sz], ...], 'a': ...}]``);
* ``pandas.read_parquet`` of the same files, concatenated (what a researcher would do by hand).

Goal: the quantpylib shapes cost at most 2x the Arrow load.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_storage import seal, tiled_hour
from recorded import SYMBOL, recorded_rows

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from actors.restore.loading import load_l2book, load_lob_archives  # noqa: E402
from actors.storage.layout import HOUR_NS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import pandas as pd
    from actors.logs import setup_logging
    setup_logging("WARNING")
    book = recorded_rows()["l2book"]
    start = int(book.column("ts_local").cast(pa.int64())[0].as_py()) // HOUR_NS * HOUR_NS
    work = Path(tempfile.mkdtemp(prefix="bench-loading-"))
    try:
        files = []
        for hour in range(args.hours):
            sealed = seal(work, {"l2book": tiled_hour(book, start + hour * HOUR_NS)})
            files.append(str(sealed["l2book"]))
        end = start + args.hours * HOUR_NS
        times: dict[str, list[float]] = {"arrow": [], "quantpylib": [], "pandas": []}
        table = rows = frame = None
        for _ in range(args.rounds):
            del table, rows, frame          # the previous round's results are freed outside the timings
            t = time.perf_counter()
            table = load_l2book(work, "binance", SYMBOL, start, end)
            times["arrow"].append(time.perf_counter() - t)
            t = time.perf_counter()
            rows = load_lob_archives("binance", SYMBOL, 20, start, end, work)
            times["quantpylib"].append(time.perf_counter() - t)
            t = time.perf_counter()
            frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
            times["pandas"].append(time.perf_counter() - t)
        # the shapes hold what the table holds
        assert len(rows) == table.num_rows == len(frame)
        for i in (0, len(rows) // 2, len(rows) - 1):
            assert rows[i]["ts"] == table.column("ts_local")[i].value // 1_000_000
            assert np.array_equal(rows[i]["b"][:, 0], table.column("bid_px")[i].values.to_numpy())
            assert np.array_equal(rows[i]["a"][:, 1], table.column("ask_sz")[i].values.to_numpy())
        med = {k: statistics.median(v) for k, v in times.items()}
        size = sum(Path(f).stat().st_size for f in files)
        print(f"{args.hours} hours of depth-20 books: {table.num_rows} rows in {len(files)} files, "
              f"{size / 1e6:.1f} MB; median of {args.rounds}:")
        print(f"  load_l2book (Arrow)                  {med['arrow'] * 1000:8.0f} ms")
        print(f"  load_lob_archives (quantpylib shape) {med['quantpylib'] * 1000:8.0f} ms   "
              f"{med['quantpylib'] / med['arrow']:.2f}x the Arrow load (goal <= 2)")
        print(f"  pandas.read_parquet + concat         {med['pandas'] * 1000:8.0f} ms   "
              f"Arrow load is {med['pandas'] / med['arrow']:.2f}x faster")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
