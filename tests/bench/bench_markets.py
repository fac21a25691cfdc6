"""What another market costs on the per-frame path, side by side (offline: no sockets, no Ray).

    nice -n 10 .venv/bin/python tests/bench/bench_markets.py [--rounds 5]

1. Renaming: the real Binance USD-M recording (6,551 diffs, 21,313 trades) through our client into
   the row buffers, once archived as ``BTCUSDT`` (rows named as on the wire) and once as if it were
   another market's symbol (every row renamed to its archive name by ``QualifiedSink``).
2. Each new market's client on its own real capture (frames/s, the capture's frames replayed
   ``--repeat`` times through a fresh client): Binance COIN-M and spot, Bybit spot, next to
   USD-M and Bybit linear on theirs.

Median of ``--rounds``; the rows must be the same either way (checked, not timed).
"""
from __future__ import annotations

import argparse
import statistics
import time

from recorded import RECORDING, SYMBOL, REPO, is_snapshot, read_recording

from actors.feed.records import StreamBuffers
from actors.venues import get_venue
from actors.venues.base import Endpoints, FetchSnapshot

FIXTURES = REPO / "tests" / "fixtures" / "real"


def frames_of(path) -> list:
    """(payload, ts_local, snapshot url or None) of the frames a client reads, REST answers included."""
    out = []
    for rec in read_recording(path):
        if rec.kind == "recv" and "@bookTicker" not in rec.payload[:40] and '"topic":"tickers' not in rec.payload[:20]:
            out.append((rec.payload, rec.ts_local, is_snapshot(rec.payload)))
        elif rec.kind == "http" and "/depth?" in rec.url:
            out.append((rec.payload, rec.ts_local, True))
    return sorted(out, key=lambda f: f[1]) if str(path).endswith(".zst") else out


def run_client(venue_name: str, path, symbols: list[str], frames: list, names: dict | None = None) -> tuple[float, int]:
    """Seconds for a fresh client to take every frame into buffered rows, and the rows it made."""
    venue = get_venue(venue_name)
    settings = venue.replay_settings(venue.settings({}), str(path))
    plans = venue.plan_connections(settings, Endpoints("ws://x", "http://x"), symbols, ["l2book", "trades"], 20)
    sink = StreamBuffers()
    clients = []
    for plan in plans:
        if names is not None:
            plan.names = names
        clients.append(venue.make_client(plan, settings, sink, 20))
    for client in clients:
        client.on_connect(0)
    pending: list[tuple] = []
    started = time.perf_counter()
    for payload, ts_local, snapshot in frames:
        if snapshot:
            for client, action in pending:
                client.on_snapshot(action.symbol, payload.encode(), ts_local)
            pending = []
            continue
        for client in clients:
            pending += [(client, a) for a in client.on_frame(payload, ts_local) if isinstance(a, FetchSnapshot)]
    spent = time.perf_counter() - started
    return spent, sum(b.num_rows for b in sink.take().values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    frames = frames_of(RECORDING)
    bare, renamed = [], []
    for _ in range(args.rounds):
        t_bare, rows_bare = run_client("binance", RECORDING, [SYMBOL], frames)
        t_named, rows_named = run_client("binance", RECORDING, [SYMBOL], frames, names={SYMBOL: f"spot/{SYMBOL}"})
        assert rows_bare == rows_named
        bare.append(t_bare)
        renamed.append(t_named)
    b, r = statistics.median(bare), statistics.median(renamed)
    print(f"renaming rows: {len(frames):,} frames, bare {len(frames) / b:,.0f} frames/s, renamed "
          f"{len(frames) / r:,.0f} frames/s  ->  renamed/bare time {r / b:.3f}x")

    captures = [
        ("binance USD-M", "binance", RECORDING, None),
        ("binance COIN-M", "binance", FIXTURES / "binance-cm" / "BINANCE_DELIVERY_2021.jsonl.zst", None),
        ("binance spot", "binance", FIXTURES / "binance-spot" / "BINANCE_SPOT_2021.jsonl.zst", None),
        ("bybit linear", "bybit", FIXTURES / "bybit" / "bybit_v5_linear_btc_eth_2026-08-10.jsonl.zst", None),
        ("bybit spot", "bybit", FIXTURES / "bybit" / "bybit_v5_spot_btc_2026-08-10.jsonl.zst", None),
    ]
    print(f"{'market':16} {'frames':>8} {'rows':>8} {'frames/s':>10}")
    for label, name, path, _ in captures:
        venue = get_venue(name)
        symbols = sorted(venue.recording_symbols(str(path)))
        frames = frames_of(path)
        repeat = 1 if len(frames) > 20_000 else args.repeat
        times = []
        for _ in range(args.rounds):
            spent = 0.0
            for _ in range(repeat):
                t, rows = run_client(name, path, symbols, frames)
                spent += t
            times.append(spent / repeat)
        t = statistics.median(times)
        print(f"{label:16} {len(frames):>8,} {rows:>8,} {len(frames) / t:>10,.0f}")


if __name__ == "__main__":
    main()
