"""Bytes per row and per hour of the derivatives and liquidations channels, side by side with trades.

Runs each venue's simulator against its client for a few seconds, writes the rows through the real
writer core and prints the sealed bytes per row of each channel, and an hour at the venue's own
cadence (Binance markPrice@1s: 3,600 rows/h plus one open-interest row per poll; Bybit tickers:
~1 row/s per symbol in the real capture). Usage: ``.venv/bin/python tests/bench/bench_channels.py``.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from archive_reading import archive_files  # noqa: E402

ROWS_PER_HOUR = {"derivatives": 3600 + 720, "liquidations": 3600}   # upper bounds: 1/s (+ OI polls every 5 s)


def main() -> None:
    from venues.test_channels import archived_sim_run

    print(f"{'venue':12} {'channel':13} {'rows':>6} {'bytes':>8} {'B/row':>7} {'per hour (at most)':>20}")
    for venue in ("binance", "bybit", "okx", "hyperliquid"):
        with tempfile.TemporaryDirectory() as tmp:
            archived_sim_run(venue, ["BTCUSDT" if venue in ("binance", "bybit") else
                                     "BTC-USDT-SWAP" if venue == "okx" else "BTC"], Path(tmp), enough=400)
            for channel in ("trades", "derivatives", "liquidations"):
                files = archive_files(tmp, channel)
                if not files:
                    continue
                rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
                size = sum(f.stat().st_size for f in files)
                hour = f"{size / rows * ROWS_PER_HOUR[channel] / 1024:.0f} KB" if channel in ROWS_PER_HOUR else ""
                print(f"{venue:12} {channel:13} {rows:6} {size:8} {size / rows:7.1f} {hour:>20}")


if __name__ == "__main__":
    main()
