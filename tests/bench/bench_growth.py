"""A year in a box: does the archive's per-seal, per-pass and per-query work stay flat as it grows?

    .venv/bin/python tests/bench/bench_growth.py [--sizes 20000,100000,1000000] [--duration 60] [--keep DIR]

For each size N it builds an archive that already holds N sealed files, as months of archiving
leave it: N catalog rows (400 symbols x l2book/trades/events, hour after hour, each verified in
the bucket with its SHA-256 and ETag), the N files on local disk and the N objects in a real
SeaweedFS bucket (tiny files, so that building a million takes minutes; what is measured is the
work per file, which does not depend on its size). Then, on top of it:

* **audit**: the full audit (``actors.backup.audit``: one listing of the bucket against every
  catalog row, one walk of the local tree), timed;
* **seal -> verified**: the real archiver (``launch.py source=sim``, binance, 10 s files,
  ``backup=s3`` on the same bucket) for ``--duration`` seconds; for every file it sealed, the
  time from its seal to its verified copy in the bucket (catalog ``sealed_at`` -> ``backed_up_at``):
  median and max;
* **restore actor**: its peak memory during that run (RSS of the ``ray::RestoreActor`` process)
  and the time to load the catalog it holds (``IndexedCatalog``, as the actor does at start-up);
* **mode=status**: ``launch.py mode=status`` over the whole archive, wall time;
* **lookup p99**: 2,000 random 4-hour lookups of one stream (``Restorer.paths``, catalog + the
  listings it needs), p50 and p99;
* **catalog size** on disk (after compaction).

It prints one table and, for each figure, the ratio of the largest size to the smallest.
"""
from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from actors.backup import Target, audit  # noqa: E402
from actors.backup.embedded import SeaweedS3  # noqa: E402
from actors.storage.catalog import Catalog, IndexedCatalog, records_table, ts_literal  # noqa: E402
from actors.storage.layout import HOUR_NS, NS, StreamKey  # noqa: E402

SYMBOLS = [f"S{i:03d}USDT" for i in range(400)]
STREAMS = [StreamKey("binance", "perp", channel, symbol, 20 if channel == "l2book" else None)
           for symbol in SYMBOLS for channel in ("l2book", "trades", "events")]
T0 = 1_704_067_200 * NS                     # 2024-01-01: the archive's first hour
BUCKET = "growth"


def body_of(key: str) -> bytes:
    return f"tickarchive growth bench {key}\n".encode()


_client = None
_pool: ThreadPoolExecutor | None = None


def _uploader(endpoint: str, workers: int) -> None:
    """Each upload process: one S3 client, ``workers`` threads."""
    global _client, _pool
    import boto3
    from botocore.config import Config

    _client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="any", aws_secret_access_key="any",
                           region_name="us-east-1",
                           config=Config(max_pool_connections=workers, retries={"max_attempts": 10}))
    _pool = ThreadPoolExecutor(workers)


def _put_chunk(rels: list[str]) -> int:
    list(_pool.map(lambda rel: _client.put_object(Bucket=BUCKET, Key=rel, Body=body_of(rel)), rels))
    return len(rels)


def build(root: Path, size: int, server: SeaweedS3, workers: int = 32) -> None:
    """``size`` files: local, in the catalog (verified), and in the bucket."""
    keys, marks = [], '{"": [0, 0]}'
    hours = -(-size // len(STREAMS))
    for h in range(hours):
        for stream in STREAMS:
            if len(keys) == size:
                break
            keys.append((stream, T0 + h * HOUR_NS))
    started = time.monotonic()
    done = [0]
    rels = [stream.relpath(hour) for stream, hour in keys]
    for rel in rels:
        path = root / rel
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body_of(rel))
    chunks = [rels[i:i + 2000] for i in range(0, len(rels), 2000)]
    with multiprocessing.get_context("spawn").Pool(2, initializer=_uploader, initargs=(server.endpoint, workers)) as pool:
        for n in pool.imap_unordered(_put_chunk, chunks):
            done[0] += n
            if done[0] % 20_000 < n:
                print(f"  [{size}] bucket objects: {done[0]}/{size} ({done[0] / (time.monotonic() - started):.0f}/s)",
                      file=sys.stderr, flush=True)
    verified_at = time.time_ns()
    catalog = Catalog(str(root))
    table = catalog._open(create=True)
    for i in range(0, len(keys), 100_000):
        records = []
        for (stream, hour), rel in zip(keys[i:i + 100_000], rels[i:i + 100_000]):
            body = body_of(rel)
            sha = hashlib.sha256(body).hexdigest()
            records.append({
                "key": rel, "exchange": stream.exchange, "market": stream.market, "channel": stream.channel,
                "symbol": stream.symbol, "depth": stream.depth, "period_start": hour, "period_end": hour + HOUR_NS,
                "ts_local_min": hour, "ts_local_max": hour + HOUR_NS - 1, "ts_exchange_min": hour,
                "ts_exchange_max": hour + HOUR_NS - 1, "rows": 36_000, "row_groups": 1, "bytes": len(body),
                "sha256": sha, "node": "growth", "sealed_at": hour + HOUR_NS, "backed_up_at": verified_at,
                "backup_sha256": sha, "local": True, "backup_etag": hashlib.md5(body).hexdigest(),
                "marks": marks if stream.channel == "events" else None})
        table.add(records_table(records))
    catalog.optimize()
    print(f"  [{size}] built in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


def restore_actor_rss() -> int:
    """RSS (bytes) of the ``ray::RestoreActor`` process, 0 if none runs."""
    best = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if not cmd.startswith(b"ray::RestoreActor"):
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]) * 1024)
        except OSError:
            continue
    return best


def run_archiver(root: Path, server: SeaweedS3, duration: int) -> tuple[list[float], int, float]:
    """The real archiver on top of the archive: (seal -> verified seconds per file, restore actor
    peak RSS, seconds of the run)."""
    started_ns = time.time_ns()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "any", "AWS_SECRET_ACCESS_KEY": "any", "TICKARCHIVE_NODE": "growth"}
    argv = [sys.executable, "launch.py", "source=sim", "archive.binance=[BTCUSDT,ETHUSDT]", "archive.bybit=[]",
            "archive.hyperliquid=[]", "archive.okx=[]", "archive.woox=[]", "archive.paradex=[]",
            f"duration_s={duration}", "storage.rollover=10s", "storage.seal_grace=1s", f"storage.root={root}",
            "backup=s3", f"backup.endpoint={server.endpoint}", f"backup.bucket={BUCKET}", "backup.interval=1m",
            "backup.settle_s=0.5", "ray.dashboard=false", "log_level=WARNING"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    t0 = time.monotonic()
    while proc.poll() is None:
        peak = max(peak, restore_actor_rss())
        time.sleep(1.0)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"the archive run failed ({proc.returncode}):\n{out[-3000:]}")
    rows = Catalog(str(root)).rows(f"sealed_at >= {ts_literal(started_ns)}")
    lags = [(r["backed_up_at"] - r["sealed_at"]) / 1e9 for r in rows if r["backed_up_at"] is not None]
    if len(lags) != len(rows) or not rows:
        raise SystemExit(f"{len(rows) - len(lags)} of {len(rows)} files sealed in the run were not backed up:\n{out[-2000:]}")
    return lags, peak, time.monotonic() - t0


def timed_status(root: Path) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "launch.py", "mode=status", f"storage.root={root}"], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"mode=status failed: {proc.stderr[-2000:]}")
    return time.monotonic() - t0


def lookups(root: Path, catalog: IndexedCatalog, size: int, n: int = 2000) -> tuple[float, float]:
    from actors.restore.restorer import Restorer

    restorer = Restorer(str(root), catalog=catalog)
    hours = max(1, -(-size // len(STREAMS)))
    rng = random.Random(7)
    times = []
    for _ in range(n):
        stream = rng.choice(STREAMS)
        start = T0 + rng.randrange(max(1, hours - 4)) * HOUR_NS
        t0 = time.perf_counter()
        refs = restorer.paths(stream.exchange, stream.symbol, stream.channel, start, start + 4 * HOUR_NS,
                              stream.depth)
        times.append(time.perf_counter() - t0)
        assert refs, (stream, start)
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.99 * len(times))] * 1e3


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(work: Path, size: int, duration: int) -> dict[str, float]:
    root = work / f"archive-{size}"
    server = SeaweedS3(work / f"s3-{size}", buckets=(BUCKET,)).start()
    try:
        build(root, size, server)
        target = Target("s3", server.endpoint, BUCKET, access_key="any", secret_key="any")
        t0 = time.monotonic()
        summary = audit(str(root), target, Catalog(str(root)))
        audit_s = time.monotonic() - t0
        if summary.audited < size or summary.repaired or summary.failed:
            raise SystemExit(f"audit at {size}: {summary.line()}")
        t0 = time.monotonic()
        index = IndexedCatalog(str(root))
        load_s = time.monotonic() - t0
        lags, rss, _ = run_archiver(root, server, duration)
        status_s = timed_status(root)
        p50, p99 = lookups(root, IndexedCatalog(str(root)), size)
        del index
        Catalog(str(root)).optimize()
        return {"files": size, "audit s": audit_s, "seal->verified median s": statistics.median(lags),
                "seal->verified max s": max(lags), "files sealed in run": len(lags),
                "restore actor RSS MB": rss / 1e6, "catalog load s": load_s, "mode=status s": status_s,
                "lookup p50 ms": p50, "lookup p99 ms": p99, "catalog MB": du(root / ".catalog") / 1e6}
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work / f"s3-{size}", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,100000,1000000")
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--keep", help="work directory (default: a temporary one, removed)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-growth-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for size in sizes:
            results.append(measure(work, size, args.duration))
            print("  " + ", ".join(f"{k} {v:.3g}" for k, v in results[-1].items()), file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    names = list(results[0])
    print("| figure | " + " | ".join(f"{r['files']:,} files" for r in results) +
          f" | {results[-1]['files']:,} / {results[0]['files']:,} |")
    print("|---" * (len(results) + 2) + "|")
    for name in names[1:]:
        ratio = results[-1][name] / results[0][name] if results[0][name] else float("nan")
        print(f"| {name} | " + " | ".join(f"{r[name]:.3g}" for r in results) + f" | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
