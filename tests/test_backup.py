"""Backup against a real SeaweedFS S3 server: reconcile, verify, faults, errors, retention."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from actors.backup import Target, VerifiedState, apply_retention, reconcile, sealed_files, sha256_of
from actors.catalog import Catalog
from actors.layout import HOUR_NS, NS, StreamKey
from actors.seaweed import SeaweedS3
from conftest import REPO
from test_writer import call_batches, make_core

OLD = 1_736_100_000 * NS - (1_736_100_000 * NS) % HOUR_NS       # Jan 2025


def build_archive(root: Path, periods: int = 6) -> list[str]:
    """Sealed files through the real writer (with catalog rows), plus things never to upload."""
    core = make_core(root)
    for i in range(periods):
        core.write("p1", i + 1, call_batches(i * 10, 10, OLD + i * 10 * NS))
    core.seal_all()
    core.write("p1", periods + 1, call_batches(999, 5, OLD + periods * 10 * NS))   # open period: spool only
    folder = next(root.rglob("*.parquet")).parent
    (folder / ".BTCUSDT_0518.parquet.1234.tmp").write_bytes(b"partial")
    (root / "notes.txt").write_text("not an archive file")
    return sorted(sealed_files(str(root)))


def bucket_keys(target: Target, client) -> dict[str, int]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["Size"]
    return out


def verifies(client, target: Target, root: Path, rel: str) -> bool:
    head = client.head_object(Bucket=target.bucket, Key=target.key_of(rel))
    return head["Metadata"].get("sha256") == sha256_of(root / rel) and head["ContentLength"] == (root / rel).stat().st_size


def test_reconcile_uploads_sealed_only_then_nothing_then_repairs(tmp_path, seaweed, bucket_target):
    root = tmp_path / "archive"
    files = build_archive(root)
    client = seaweed.client()
    first = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert (first.uploaded, first.failed) == (len(files), 0)
    assert set(bucket_keys(bucket_target, client)) == set(files)          # no spool, temp or stray file
    assert all(verifies(client, bucket_target, root, rel) for rel in files)
    rows = {r["key"]: r for r in Catalog(str(root)).rows()}
    assert all(rows[rel]["backed_up_at"] and rows[rel]["backup_sha256"] == rows[rel]["sha256"] for rel in files)

    second = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert (second.uploaded, second.skipped, second.failed) == (0, len(files), 0)

    changed, deleted, truncated = files[0], files[1], files[2]
    pq.write_table(pa.table({"x": [1, 2, 3]}), root / changed)            # same key, new content
    client.delete_object(Bucket=bucket_target.bucket, Key=deleted)
    client.put_object(Bucket=bucket_target.bucket, Key=truncated, Body=(root / truncated).read_bytes()[:100],
                      Metadata={"sha256": sha256_of(root / truncated)})
    third = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert (third.uploaded, third.failed) == (3, 0)
    assert all(verifies(client, bucket_target, root, rel) for rel in files)


def test_prefix_keys_are_relative_paths(tmp_path, seaweed, bucket_target):
    root = tmp_path / "archive"
    files = build_archive(root, periods=2)
    target = Target("s3", bucket_target.endpoint, bucket_target.bucket, prefix="desk/archives",
                    access_key="any", secret_key="any")
    reconcile(str(root), target)
    assert set(bucket_keys(target, seaweed.client())) == {f"desk/archives/{rel}" for rel in files}


def write_plain_files(root: Path, n: int, size: int = 200_000) -> list[str]:
    rels = []
    for i in range(n):
        key = StreamKey("binance", "perp", "trades", f"S{i:03d}USDT")
        rel = key.relpath(OLD)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"blob": [os.urandom(size)]}), root / rel, compression="none")
        rels.append(rel)
    return rels


def test_server_killed_mid_pass_then_next_pass_completes(tmp_path):
    root = tmp_path / "archive"
    rels = write_plain_files(root, 80)
    server = SeaweedS3(tmp_path / "s3", buckets=("archives",)).start()
    target = Target("s3", server.endpoint, "archives", access_key="any", secret_key="any", workers=2)
    try:
        done = []

        def progress(n, nbytes):
            done.append(n)
            if len(done) == 15:
                server.kill()

        t0 = time.monotonic()
        first = reconcile(str(root), target, progress=progress)
        assert first.failed > 0 and first.uploaded < len(rels), first.line()
        assert time.monotonic() - t0 < 240
        verified_before = set(VerifiedState(str(root), target).entries)
        assert len(verified_before) == first.uploaded
        server.start()                                   # same ports, same data
        client = server.client()
        for rel in verified_before:                      # nothing was recorded that does not verify
            assert verifies(client, target, root, rel)
        second = reconcile(str(root), target)
        assert second.failed == 0 and second.uploaded + second.skipped == len(rels)
        assert all(verifies(client, target, root, rel) for rel in rels)
    finally:
        server.stop()


def run_cli(args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BACKBLAZE_"))}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "launch.py", "mode=backup", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=180, env=env)


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_bad_endpoint_credentials_bucket_are_one_clear_line(tmp_path, seaweed):
    root = tmp_path / "archive"
    write_plain_files(root, 2, size=100)
    creds = {"AWS_ACCESS_KEY_ID": "AKTEST", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}
    secured = SeaweedS3(tmp_path / "s3", access_key="AKTEST", secret_key="s3cr3t-value", buckets=("archives",)).start()
    try:
        common = ["backup=s3", f"storage.root={root}"]
        line = one_error_line(run_cli([*common, "backup.endpoint=http://127.0.0.1:9", "backup.bucket=archives"], creds))
        assert "cannot reach" in line
        line = one_error_line(run_cli([*common, f"backup.endpoint={secured.endpoint}", "backup.bucket=archives"],
                                      {**creds, "AWS_SECRET_ACCESS_KEY": "wrong"}))
        assert "rejected the credentials" in line and "wrong" not in line
        line = one_error_line(run_cli([*common, f"backup.endpoint={secured.endpoint}", "backup.bucket=nope-bucket"],
                                      creds))
        assert "does not exist" in line
        line = one_error_line(run_cli([*common, f"backup.endpoint={secured.endpoint}", "backup.bucket=archives"]))
        assert "no credentials" in line
        ok = run_cli([*common, f"backup.endpoint={secured.endpoint}", "backup.bucket=archives"], creds)
        assert ok.returncode == 0 and "uploaded 2 files" in ok.stdout, ok.stderr
        assert "s3cr3t-value" not in ok.stdout + ok.stderr
    finally:
        secured.stop()


def test_archiver_keeps_archiving_when_the_bucket_is_unreachable(tmp_path, ray_session):
    from actors.app import run_archive
    from actors.config import load_settings

    root = tmp_path / "archive"
    settings = load_settings(["source=sim", "archive.binance=[BTCUSDT]", "archive.bybit=[]", "duration_s=4", "storage.rollover=2s",
                              f"storage.root={root}", "backup=s3", "backup.endpoint=http://127.0.0.1:9",
                              "backup.bucket=archives", "storage.seal_grace=0.2s"])
    report = run_archive(settings)
    assert report.rows > 0 and report.files_sealed > 0
    # the cluster's processes may or may not hold keys; either way the backup fails with one line
    error = report.backup.get("error", "")
    assert "cannot reach" in error or "no credentials" in error, report.backup
    assert len(sealed_files(str(root))) == report.files_sealed


def test_retention_deletes_only_verified_files(tmp_path, seaweed, bucket_target):
    root = tmp_path / "archive"
    files = build_archive(root, periods=4)
    reconcile(str(root), bucket_target, Catalog(str(root)))
    modified = files[0]
    pq.write_table(pa.table({"x": [1]}), root / modified)        # changed since verified: must stay
    state = VerifiedState(str(root), bucket_target)
    deleted = apply_retention(str(root), state, sealed_files(str(root)), Catalog(str(root)), days=1)
    assert deleted == len(files) - 1
    assert (root / modified).exists() and not any((root / rel).exists() for rel in files[1:])
    rows = {r["key"]: r for r in Catalog(str(root)).rows()}
    assert rows[modified]["local"] and not any(rows[rel]["local"] for rel in files[1:])
    assert len(rows) == len(files)                                 # catalog rows are kept
