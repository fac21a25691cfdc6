"""Our reconcile pass vs a quantpylib-style backup, side by side against a local SeaweedFS.

    nice -n 10 .venv/bin/python tests/bench/bench_backup.py [--files 2000] [--mb 1000] [--noop-objects 100000] [--workers 8] [--rounds 1]
    (bench-only: pip install psutil)

1. Upload ``--files`` archive files totalling ``--mb`` MB, each pass into a fresh server with an
   empty bucket: quantpylib's way (``head_object`` per file, then a sequential ``put_object``
   for each missing key) and ours (one listing, concurrent verified uploads: presigned PUTs
   carrying the SHA-256 that the server checks and echoes). Ours runs as the archive runs it,
   with the catalog whose rows hold each file's SHA-256 from seal (files are sent unread and
   checked by the server), and once more without catalog rows (every file hashed here first).
   Prints seconds and the ratios. Dirty pages are synced before each timed pass, so none pays
   for another's writes. The CPU seconds SeaweedFS and the client used in each pass are
   printed too: the server shares the machine's cores, so its CPU time for a pass, divided by
   the cores, bounds how fast any client can be here.
2. A no-op pass over ``--noop-objects`` small objects already in the bucket: quantpylib-style
   (a ``head_object`` per file) vs ours (one paged listing, nothing else). Prints the ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors.backup import Target, reconcile  # noqa: E402
from actors.storage.layout import sealed_files  # noqa: E402
from actors.storage.catalog import Catalog, file_record  # noqa: E402
from actors.storage.layout import HOUR_NS, NS, StreamKey, parse_relpath  # noqa: E402
from actors.backup.embedded import SeaweedS3  # noqa: E402

T0 = 1_735_689_600 * NS


def make_tree(root: Path, files: int, total_bytes: int, catalog: bool = False) -> None:
    """``files`` archive-layout files with random content (sizes sum to ``total_bytes``); with
    ``catalog``, their rows in the archive's catalog carry the SHA-256, as the writer records
    it when it seals a file."""
    size = max(1, total_bytes // files)
    rows = []
    for n in range(files):
        rel = StreamKey("binance", "perp", "trades", f"S{n // 24:05d}USDT").relpath(T0 + (n % 24) * HOUR_NS)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        if catalog:
            rows.append(file_record(rel, parse_relpath(rel), T0 + (n % 24 + 1) * HOUR_NS, {"rows": 0}, size,
                                    hashlib.sha256(data).hexdigest(), "bench"))
    if rows:
        Catalog(root).upsert(rows)


def quantpylib_pass(client, bucket: str, root: Path) -> int:
    """quantpylib's backup_folder: head per file; put the ones that are missing, one by one."""
    uploaded = 0
    for rel in sorted(sealed_files(str(root))):
        try:
            client.head_object(Bucket=bucket, Key=rel)
            continue
        except client.exceptions.ClientError:
            pass
        with open(root / rel, "rb") as f:
            client.put_object(Bucket=bucket, Key=rel, Body=f)
        uploaded += 1
    return uploaded


CPU: dict[str, float] = {}


def timed(fn, label: str = ""):
    """Seconds ``fn`` took (and, under ``label``, the CPU seconds SeaweedFS and this process used)."""
    os.sync()              # the previous pass's (or the tree's) dirty pages are written before timing
    me = psutil.Process()
    servers = [p for p in me.children(recursive=True) if p.name() == "weed"]
    server_cpu = lambda: sum(sum(p.cpu_times()[:4]) for p in servers)     # noqa: E731
    own_cpu = lambda: sum(me.cpu_times()[:2])                             # noqa: E731
    before = server_cpu(), own_cpu()
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    if label:
        CPU[f"{label} server"], CPU[f"{label} client"] = server_cpu() - before[0], own_cpu() - before[1]
    return seconds, out


def upload_pass(label: str, work: Path, root: Path, files: int, workers: int) -> float:
    """Seconds one upload pass of ``root`` takes into a fresh server: ``quantpylib``, ``ours``
    (with the catalog's seal hashes) or ``unsealed`` (ours without catalog rows)."""
    with fresh_server(work, f"s3-{label}") as server:
        if label == "quantpylib":
            seconds, uploaded = timed(lambda: quantpylib_pass(server.client(), "bench", root), label)
            assert uploaded == files
            return seconds
        target = Target("s3", server.endpoint, "bench", access_key="any", secret_key="any", workers=workers)
        catalog = Catalog(root) if label == "ours" else None
        shutil.rmtree(root / ".backup", ignore_errors=True)      # no file hashes remembered from a pass
        seconds, summary = timed(lambda: reconcile(str(root), target, catalog), label)
        assert summary.failed == 0 and summary.uploaded == files
        return seconds


@contextlib.contextmanager
def fresh_server(work: Path, name: str) -> Iterator[SeaweedS3]:
    """A new SeaweedFS with one empty bucket ``bench``, removed afterwards.

    Each pass gets its own: on one long-lived server, identical passes cost it more CPU the
    more it already holds (8.3 -> 10.4 CPU-s for the 1st -> 4th pass of the same 1 GB here),
    which would favour whichever pass runs first. One small object is written first: a new
    bucket's first writes wait ~1 s while SeaweedFS grows its volumes, when they come at once.
    """
    server = SeaweedS3(work / name, buckets=("bench",)).start()
    try:
        server.client().put_object(Bucket="bench", Key=".warm-up", Body=b"x")
        yield server
    finally:
        server.stop()
        shutil.rmtree(work / name, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mb", type=float, default=1000)
    parser.add_argument("--noop-objects", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=Target.workers, help="concurrent uploads (the archive's default)")
    parser.add_argument("--rounds", type=int, default=1, help="upload rounds (each pass on a fresh server); "
                        "the median ratio is printed")
    args = parser.parse_args()
    from actors.logs import setup_logging
    setup_logging("WARNING")                  # no JSON line per upload in the measurements
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    try:
        root = work / "archive"
        make_tree(root, args.files, int(args.mb * 1e6), catalog=True)
        n = len(sealed_files(str(root)))
        rows = {"quantpylib": "quantpylib-style (head + sequential put)",
                "ours": f"ours ({args.workers} workers; catalog rows, checked by the server)",
                "unsealed": "ours without catalog rows (every file hashed here)"}
        print(f"upload {n} files, {args.mb:.0f} MB (SeaweedFS on loopback, a fresh server per pass, "
              f"{os.cpu_count()} cores):")
        ratios: dict[str, list[float]] = {"ours": [], "unsealed": []}
        for round_no in range(1, args.rounds + 1):
            seconds = {label: upload_pass(label, work, root, n, args.workers) for label in rows}
            q_s = seconds["quantpylib"]
            print(f" round {round_no}:")
            for label, what in rows.items():
                ratio = ""
                if label != "quantpylib":
                    ratios[label].append(q_s / seconds[label])
                    ratio = f"   ratio quantpylib / this {ratios[label][-1]:.2f}x"
                print(f"  {what:56} {seconds[label]:6.1f} s{ratio}   CPU-s: SeaweedFS "
                      f"{CPU[label + ' server']:4.1f}, client {CPU[label + ' client']:4.1f}")
            floor = CPU["ours server"] / (os.cpu_count() or 1)
            print(f"  SeaweedFS alone needs {floor:.1f} s of the cores for our pass: no client can beat "
                  f"{q_s / floor:.2f}x here")
        if args.rounds > 1:
            print(f" median ratio over {args.rounds} rounds: ours {statistics.median(ratios['ours']):.2f}x, "
                  f"without catalog rows {statistics.median(ratios['unsealed']):.2f}x")
        shutil.rmtree(root)
        if not args.noop_objects:
            return

        # no-op pass over many objects
        noop_root = work / "noop"
        make_tree(noop_root, args.noop_objects, args.noop_objects * 16)
        with fresh_server(work, "s3-noop") as server:
            noop = Target("s3", server.endpoint, "bench", access_key="any", secret_key="any", workers=args.workers)
            t_fill, fill = timed(lambda: reconcile(str(noop_root), noop))
            assert fill.failed == 0
            q_s, q_n = timed(lambda: quantpylib_pass(server.client(), "bench", noop_root))
            o_s, again = timed(lambda: reconcile(str(noop_root), noop))
        assert q_n == 0 and again.uploaded == 0 and again.skipped == args.noop_objects
        print(f"no-op pass over {args.noop_objects} objects already in the bucket (filled in {t_fill:.0f} s):")
        print(f"  quantpylib-style (head per file)  {q_s:8.1f} s")
        print(f"  ours (one paged listing)          {o_s:8.1f} s")
        print(f"  ratio quantpylib / ours: {q_s / o_s:.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
