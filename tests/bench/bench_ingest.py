"""An honest ingest limit: the same real Binance frames read by a bare client, by our archiver and by cryptofeed.

    nice -n 10 .venv/bin/python tests/bench/bench_ingest.py [--frames real|small] [--symbols 4] [--events 200000]
        [--rounds 1] [--clients bare,ours,cryptofeed,cryptofeed-count[,feed]]
    (bench-only: pip install cryptofeed==2.4.1 psutil; without cryptofeed its rows are skipped)

For each client a fresh load generator (tests/bench/loadgen.py) runs in its OWN process, serving
pre-encoded real frames over TLS on loopback (re-stamped for ``--symbols`` symbols, 3 depth
diffs : 1 trade, REST snapshots consistent with the ids) as fast as the client reads them, then
the client runs in its own process (tests/bench/ingest_clients.py):

(a) bare: websockets (``async for``, no timer per frame) + orjson.loads per frame, nothing else (the
    transport and parse limit; an ``asyncio.wait_for`` per ``recv`` would halve it);
(b) ours: the whole archiver (Ray, socket and writer actors, durable spool, sealed Parquet,
    catalog), rows counted in the sealed files against what the generator sent (zero loss);
(c) cryptofeed 2.4.1 with callbacks appending a line per update to a file, and (d) the same
    with callbacks that only count.

Every client runs on asyncio's standard event loop (``RAY_USE_UVLOOP=0`` for ours: Ray picks uvloop
up when installed, and cryptofeed installs it; cryptofeed is told ``uvloop: False``); with
``--uvloop`` every client runs on uvloop instead (cryptofeed's default; ours through Ray's
``RAY_USE_UVLOOP=1``; bare and feed through ``uvloop.install()``).

Printed per client: messages/s (first to last frame), CPU-seconds of the client's whole process
tree (sampled from /proc through psutil every 0.1 s; for ours this includes Ray's start-up and
shutdown, sealing and the catalog), messages per CPU-second and CPU µs per message; for ours
also the p50/p99 lag from receive (``ts_local``) to durable (spool fsynced) over every row.
Ratios (each of clients run in the same round; median and range over ``--rounds``): ours/bare
messages/s (goal >= 0.9) and ours/cryptofeed messages per CPU-second (goal >= 2).

``--frames small``: the generator serves diffs of 2 levels a side instead of the recording's
(~68 levels), 3 diffs : 1 trade, on the recorded snapshot's book (loadgen.py); the fixed cost
per message is what it shows. ``--clients ...,feed`` adds our socket process's path without Ray
(ingest_clients.py) to see what the socket alone costs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
PY = sys.executable


def tree_cpu_seconds(proc: subprocess.Popen, poll_s: float = 0.1, breakdown: dict | None = None) -> float:
    """Wait for ``proc``; the CPU seconds (user+system) its whole process tree used, sampled.

    ``breakdown`` (optional) receives CPU seconds per process name (Ray names its workers
    ``ray::<Actor>``)."""
    seen: dict[tuple[int, float], float] = {}
    names: dict[tuple[int, float], str] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                t = p.cpu_times()
                key = (p.pid, p.create_time())
                seen[key] = t.user + t.system
                if breakdown is not None:
                    names[key] = _process_name(p)         # Ray retitles a worker once it hosts an actor
            except psutil.Error:
                pass
        time.sleep(poll_s)
    if breakdown is not None:
        for key, cpu in seen.items():
            breakdown[names.get(key, "?")] = breakdown.get(names.get(key, "?"), 0.0) + cpu
    return sum(seen.values())


def _process_name(p: psutil.Process) -> str:
    """Ray's title for its workers (``ray::SymbolWriter``), else the program's file name."""
    cmd = p.cmdline()
    if cmd and cmd[0].startswith("ray::"):
        return cmd[0].split(".")[0]
    script = next((Path(c).name for c in cmd[1:] if c.endswith(".py")), None)
    return script or (Path(cmd[0]).name if cmd else p.name())


def start_generator(symbols: int, events: int, tls: Path, frames: str = "real") -> tuple[subprocess.Popen, int]:
    gen = subprocess.Popen([PY, str(HERE / "loadgen.py"), "--symbols", str(symbols), "--events", str(events),
                            "--tls", str(tls), "--frames", frames], stdout=subprocess.PIPE, text=True)
    line = gen.stdout.readline()
    if not line.startswith("PORT "):
        gen.kill()
        raise SystemExit(f"load generator did not start: {line!r}")
    return gen, int(line.split()[1])


def run_client(client: str, symbols: int, events: int, work: Path, breakdown: bool = False,
               overrides: list[str] | None = None, frames: str = "real", uvloop: bool = False,
               ray_lock: str | None = None) -> dict:
    tls = work / "tls"
    gen, port = start_generator(symbols, events, tls, frames)
    out = work / f"{client}.json"
    scratch = work / client
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "SSL_CERT_FILE": str(tls / "cert.pem"), "REQUESTS_CA_BUNDLE": str(tls / "cert.pem"), "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(HERE.parents[1]),
           # every client on asyncio's own loop: Ray would run our actors on uvloop if it is installed
           # (cryptofeed brings it), which a default install of ours does not have
           "RAY_USE_UVLOOP": "1" if uvloop else "0", "TICKARCHIVE_BENCH_UVLOOP": "1" if uvloop else ""}
    try:
        t = time.perf_counter()
        lock = ["flock", ray_lock] if ray_lock and client == "ours" else []     # only ours starts Ray
        proc = subprocess.Popen([*lock, PY, str(HERE / "ingest_clients.py"), client, "--port", str(port), "--symbols",
                                 str(symbols), "--out", str(out), "--work", str(scratch),
                                 *[f"--set={o}" for o in overrides or []]], env=env)
        per_process: dict[str, float] = {}
        cpu = tree_cpu_seconds(proc, breakdown=per_process if breakdown else None)
        for name, seconds in sorted(per_process.items(), key=lambda kv: -kv[1])[:12]:
            print(f"    {client} CPU {seconds:6.1f} s  {name}")
        wall = time.perf_counter() - t
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"{client} failed (exit {proc.returncode})")
        import urllib.request
        import ssl
        ctx = ssl.create_default_context(cafile=str(tls / "cert.pem"))
        sent = json.loads(urllib.request.urlopen(f"https://127.0.0.1:{port}/stats", context=ctx).read())
    finally:
        gen.terminate()
        gen.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)
    result = json.loads(out.read_text())
    return {**result, "cpu_s": cpu, "wall_s": wall, "sent": sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--events", type=int, default=200_000,
                        help="loop events per connection (x symbols frames); 200,000 streams ~30 s into ours, so "
                             "Ray's start-up (~5 CPU-s) weighs as little as in the 60 s runs of issue 12")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true", help="every client on uvloop (cryptofeed's default)")
    parser.add_argument("--ray-lock", help="run ours (the one client that starts Ray) under flock on this file "
                                           "(a machine shared by several Ray users)")
    parser.add_argument("--frames", choices=("real", "small"), default="real",
                        help="real: the recording's diffs (~68 levels each); small: 2 levels a side (loadgen.py)")
    parser.add_argument("--clients", default="bare,ours,cryptofeed,cryptofeed-count")
    parser.add_argument("--breakdown", action="store_true", help="print CPU seconds per process")
    parser.add_argument("--set", action="append", default=[],
                        help="config override for our archiver, e.g. --set storage.symbols_per_writer=4")
    args = parser.parse_args()
    clients = args.clients.split(",")
    try:
        import cryptofeed  # noqa: F401
    except ImportError:
        clients = [c for c in clients if not c.startswith("cryptofeed")]
        print("cryptofeed not installed (pip install cryptofeed==2.4.1): its rows are skipped")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    results: dict[str, list[dict]] = {c: [] for c in clients}
    try:
        for _ in range(args.rounds):
            for client in clients:
                results[client].append(run_client(client, args.symbols, args.events, work, args.breakdown, args.set,
                                                  args.frames, args.uvloop, args.ray_lock))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)


def _span(values: list[float], fmt: str = "{:.0f}") -> str:
    """``lo-hi`` of per-round values (one value when there is one round)."""
    lo, hi = min(values), max(values)
    return fmt.format(lo) if len(values) == 1 or fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def report(results: dict[str, list[dict]], args) -> None:
    """Per client: median and range over the rounds; ratios of clients run in the same round."""
    print(f"{args.frames} frames, {args.symbols} symbols, {args.events} loop events per connection, TLS on loopback, "
          f"{'uvloop' if args.uvloop else 'asyncio loop'}, "
          f"{args.rounds} round(s), median [range]{'; ours with ' + ' '.join(args.set) if args.set else ''}:")
    print(f"  {'client':18} {'msgs':>9} {'msgs/s':>20} {'CPU s':>7} {'msgs/CPU-s':>20} {'CPU us/msg':>10}")
    for client, runs in results.items():
        rates = [r["frames"] / r["seconds"] for r in runs]
        per_cpu = [r["frames"] / r["cpu_s"] for r in runs]
        cpu = statistics.median(r["cpu_s"] for r in runs)
        print(f"  {client:18} {runs[-1]['frames']:9d} {statistics.median(rates):9.0f} [{_span(rates):>9}] {cpu:7.1f} "
              f"{statistics.median(per_cpu):9.0f} [{_span(per_cpu):>9}] {1e6 / statistics.median(per_cpu):10.1f}")
    for ours in ("ours", "feed", "feed+writer"):
        if ours not in results:
            continue
        last = results[ours][-1]
        sent, rows = last["sent"], last["rows"]
        lost = sent["depth"] + sent["trades"] - rows["l2book"] - rows["trades"]
        print(f"  {ours}: {'handed over' if ours == 'feed' else 'sealed'} {rows['l2book']} book rows + "
              f"{rows['trades']} trades; generator sent {sent['depth']} diffs + {sent['trades']} trades: "
              f"{'zero loss' if lost == 0 else f'{lost} rows MISSING'}")
        if ours == "ours":
            lag = last.get("lag_ms") or {}
            print(f"  ours: receive -> durable lag p50 {lag.get('p50', float('nan')):.0f} ms, "
                  f"p99 {lag.get('p99', float('nan')):.0f} ms, max {lag.get('max', float('nan')):.0f} ms")

        def ratios(peer: str, key) -> list[float]:
            return [key(a) / key(b) for a, b in zip(results[ours], results[peer])]
        if "bare" in results:
            r = ratios("bare", lambda x: x["frames"] / x["seconds"])
            print(f"  {ours} / bare messages/s: {statistics.median(r):.2f} [{_span(r, '{:.2f}')}] (goal >= 0.9)")
        for peer in ("cryptofeed", "cryptofeed-count"):
            if peer in results:
                r = ratios(peer, lambda x: x["frames"] / x["cpu_s"])
                print(f"  {ours} / {peer} messages per CPU-second: {statistics.median(r):.2f} "
                      f"[{_span(r, '{:.2f}')}] (goal >= 2)")


if __name__ == "__main__":
    main()
