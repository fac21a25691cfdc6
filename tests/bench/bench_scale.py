"""Many streams on one machine: memory (PSS), processes and throughput of a real archive run.

    .venv/bin/python tests/bench/bench_scale.py [--symbols 200] [--rate 10] [--duration 90] [--rollover 10s] [--default-set]

Runs ``launch.py source=sim`` (binance simulator, ``--symbols`` symbols x book + trades, each at
``--rate`` msgs/s, ``--rollover`` files, 10 s by default) in a subprocess with default settings otherwise, samples the
PSS of its whole process tree (driver with the simulator, Ray's own processes, sockets,
writers, restore) every 5 s, and prints, from that one run: peak and last PSS, the largest
number of processes, frames/s and rows/s from the run's summary, and how many seconds after
launch each symbol had its first file sealed (from the catalog). ``--default-set`` runs
quantpylib's ten default symbols on three venues instead (200 msgs/s each).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, i = [root_pid], 0
    while i < len(tree):
        tree += children.get(tree[i], [])
        i += 1
    return tree


def pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            text = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    match = re.match(r"ray::(\w+)", text)
    return match.group(1) if match else Path(text.split(" ")[0]).name or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--rate", type=int, default=10, help="simulator msgs/s per symbol")
    parser.add_argument("--duration", type=int, default=90)
    parser.add_argument("--rollover", default="10s", help="file period (storage.rollover)")
    parser.add_argument("--default-set", action="store_true", help="quantpylib's ten symbols, 200 msgs/s each")
    args = parser.parse_args()
    from actors.venues import supported_venues

    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    overrides = ["source=sim", f"duration_s={args.duration}", f"storage.rollover={args.rollover}", f"storage.root={root}",
                 "log.console=plain", "log.status_every=30s"]
    if not args.default_set:
        symbols = [f"S{i:04d}USDT" for i in range(args.symbols)]
        overrides += [f"archive.binance=[{','.join(symbols)}]", f"source.messages_per_s={args.rate}",
                      *(f"archive.{v}=[]" for v in supported_venues() if v != "binance")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    launched = time.time_ns()
    log_path = root / "launch-output.txt"          # a file, not a pipe: a full pipe would stall the run
    out = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "launch.py"), *overrides], cwd=REPO, env=env,
                            stdout=out, stderr=subprocess.STDOUT, text=True)
    samples: list[tuple[float, int, int, dict[str, int]]] = []
    while proc.poll() is None:
        time.sleep(5)
        tree = process_tree(proc.pid)
        by_kind: dict[str, int] = {}
        for pid in tree:
            by_kind[command_of(pid)] = by_kind.get(command_of(pid), 0) + pss_bytes(pid)
        samples.append(((time.time_ns() - launched) / 1e9, sum(by_kind.values()), len(tree), by_kind))
    out.close()
    output = log_path.read_text()
    summary = [line for line in output.splitlines() if line.startswith("archived ")]
    if proc.returncode != 0 or not summary:
        print(output[-3000:])
        raise SystemExit(f"run failed (exit {proc.returncode})")
    steady = [s for s in samples if s[0] > 30] or samples
    peak = max(steady, key=lambda s: s[1])
    print(f"run: {summary[-1]}")
    print(f"PSS: peak {peak[1] / 2**30:.2f} GiB at {peak[0]:.0f}s, last {steady[-1][1] / 2**30:.2f} GiB; "
          f"processes: {max(s[2] for s in samples)}")
    print("PSS at peak by process kind: " + ", ".join(
        f"{k} {v / 2**20:.0f} MiB" for k, v in sorted(peak[3].items(), key=lambda kv: -kv[1])))
    match = re.search(r"archived (\d+) rows from (\d+) frames in ([\d.]+)s", summary[-1])
    rows, frames, seconds = int(match[1]), int(match[2]), float(match[3])
    print(f"throughput: {frames / seconds:.0f} frames/s, {rows / seconds:.0f} rows/s")
    from actors.storage.catalog import Catalog, as_ns_ints

    table = as_ns_ints(Catalog(str(root)).query(columns=["exchange", "symbol", "sealed_at"]))
    first: dict[tuple[str, str], int] = {}
    for venue, symbol, sealed in zip(*(table.column(c).to_pylist() for c in ("exchange", "symbol", "sealed_at"))):
        first[(venue, symbol)] = min(first.get((venue, symbol), sealed), sealed)
    delays = sorted((t - launched) / 1e9 for t in first.values())
    print(f"first sealed file per symbol: {len(delays)} symbols, after launch min {delays[0]:.0f}s, "
          f"median {delays[len(delays) // 2]:.0f}s, max {delays[-1]:.0f}s; {len(table)} files sealed")
    subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    main()
