"""Export speed and peak memory per format, a day against a month (the same rows per hour).

    .venv/bin/python tests/bench/bench_export.py [--hours 720] [--rows-per-hour 600] [--formats ...]

An archive of depth-20 books (a random walk on a 0.1 tick, a few levels changing per row) and trades,
``rows-per-hour`` of each per hour, is written by the real writer core. Each format then exports the first
day and the whole range in a fresh process; the table shows rows/s and the process's peak RSS
(``VmHWM``), and the month/day ratio of the peak (about 1: memory does not grow with the range).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402

T0 = 1_725_148_800 * 1_000_000_000          # 2024-09-01 00:00 UTC
HOUR_NS = 3600 * 1_000_000_000
SYM = "BTCUSDT"


def build(root: Path, hours: int, per_hour: int) -> None:
    """``hours`` hours of books and trades, sealed hourly."""
    from actors.feed.records import StreamBuffers
    from actors.storage.catalog import Catalog
    from actors.storage.writer import SymbolStore
    from tqdm import tqdm

    core = SymbolStore(str(root), "binance", "perp", [SYM], 20, HOUR_NS, "bench", Catalog(str(root)),
                            node="bench")
    core.recover()
    rng = np.random.default_rng(7)
    mid = 600_000                                                  # ticks of 0.1
    sizes = rng.integers(1, 5000, (2, 20)) / 1000
    step = HOUR_NS // per_hour
    for h in tqdm(range(hours), desc="build archive", unit="h", file=sys.stderr):
        sink = StreamBuffers()
        for k in range(per_hour):
            ts = T0 + h * HOUR_NS + k * step
            mid += int(rng.integers(-1, 2))
            for _ in range(3):
                sizes[rng.integers(0, 2), rng.integers(0, 20)] = rng.integers(1, 5000) / 1000
            bids = [(mid - 1 - i) / 10 for i in range(20)]
            asks = [(mid + i) / 10 for i in range(20)]
            sink.book(SYM, ts, ts - 1_000_000, h * per_hour + k, bids, sizes[0].tolist(), asks, sizes[1].tolist())
            sink.trade(SYM, ts + 1, ts - 500_000, str(h * per_hour + k), asks[0], float(sizes[1][0]),
                       1 if k % 2 else -1)
        core.write("bench", h + 1, sink.take())
        core.seal_due(T0 + (h + 1) * HOUR_NS)
    core.seal_all()


def one(root: str, fmt: str, hours: int, out: str) -> None:
    """Child process: export ``hours`` hours in ``fmt``, print rows, seconds and peak RSS as JSON.

    The peak is this process's own high-water mark (``VmHWM``): ``getrusage``'s ``ru_maxrss`` would keep
    the parent's size from before ``exec``."""
    from actors.export import export

    summary = export(root, fmt, "binance", SYM, T0, T0 + hours * HOUR_NS, out, progress=False)
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    print(json.dumps({"rows": summary.rows, "seconds": summary.seconds, "peak_mb": peak_kb / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=int, default=720)
    parser.add_argument("--rows-per-hour", type=int, default=600)
    parser.add_argument("--formats", nargs="*", default=["hftbacktest", "tardis", "nautilus"])
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        one(args.child[0], args.child[1], int(args.child[2]), args.child[3])
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        build(root, args.hours, args.rows_per_hour)
        print(f"archive: {args.hours} h x {args.rows_per_hour} books (depth 20) + {args.rows_per_hour} trades/h")
        print(f"{'format':<12} {'range':>6} {'rows':>10} {'rows/s':>10} {'peak RSS MB':>12}")
        for fmt in args.formats:
            peaks = []
            for hours in (min(24, args.hours), args.hours):
                out = Path(tmp) / f"{fmt}-{hours}" / ("out.npz" if fmt == "hftbacktest" else "out")
                proc = subprocess.run([sys.executable, __file__, "--child", str(root), fmt, str(hours), str(out)],
                                      capture_output=True, text=True, check=True)
                got = json.loads(proc.stdout.strip().splitlines()[-1])
                peaks.append(got["peak_mb"])
                print(f"{fmt:<12} {hours:>5}h {got['rows']:>10,} {got['rows'] / got['seconds']:>10,.0f} "
                      f"{got['peak_mb']:>12,.0f}")
            print(f"{fmt:<12} peak RSS, {args.hours} h / {min(24, args.hours)} h: {peaks[1] / peaks[0]:.2f}x")


if __name__ == "__main__":
    main()
