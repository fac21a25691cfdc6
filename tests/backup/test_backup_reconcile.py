"""Backup against a real SeaweedFS S3 server: reconcile, verify, faults, errors, retention."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.backup import Bucket, Target, apply_retention, reconcile
from actors.backup.bucket import fast_pages, make_client
from actors.backup.embedded import SeaweedS3
from actors.storage.catalog import Catalog
from actors.storage.integrity import sha256_file as sha256_of
from actors.storage.layout import HOUR_NS, NS, StreamKey, sealed_files
from conftest import REPO
from writer_fixtures import call_batches, make_core

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


@pytest.mark.s3
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
    # a sealed file whose bytes changed contradicts its seal hash: never uploaded over the good copy
    assert (third.uploaded, third.failed, third.damaged) == (2, 0, [changed])
    assert all(verifies(client, bucket_target, root, rel) for rel in files if rel != changed)
    from actors.restore.restorer import reindex
    reindex(root, Catalog(str(root)))                                     # replaced on purpose: re-record it
    fourth = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert (fourth.uploaded, fourth.failed, fourth.damaged) == (1, 0, [])
    assert all(verifies(client, bucket_target, root, rel) for rel in files)


@pytest.mark.s3
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


def catalog_rows_for(root: Path, rels: list[str]) -> Catalog:
    """Real catalog rows (sha256 of each file, not backed up yet) for files written without the writer."""
    catalog = Catalog(str(root))
    catalog.upsert([{"key": rel, "sha256": sha256_of(root / rel), "bytes": (root / rel).stat().st_size,
                     "local": True} for rel in rels])
    return catalog


def backed_up(root: Path) -> dict[str, str]:
    return {r["key"]: r["backup_sha256"] for r in Catalog(str(root)).rows() if r["backed_up_at"]}


@pytest.mark.s3
def test_server_killed_mid_pass_then_next_pass_completes(tmp_path, monkeypatch):
    monkeypatch.setattr("actors.backup.retry.FIRST_WAIT_S", 0.05)      # the same policy, shorter waits
    root = tmp_path / "archive"
    rels = write_plain_files(root, 80)
    catalog_rows_for(root, rels)
    server = SeaweedS3(tmp_path / "s3", buckets=("archives",)).start()
    target = Target("s3", server.endpoint, "archives", access_key="any", secret_key="any", workers=2)
    try:
        done = []

        def progress(n, nbytes):
            done.append(n)
            if len(done) == 15:
                server.kill()

        t0 = time.monotonic()
        first = reconcile(str(root), target, Catalog(str(root)), progress=progress)
        assert first.failed > 0 and first.uploaded < len(rels), first.line()
        assert time.monotonic() - t0 < 240
        verified_before = set(backed_up(root))
        assert len(verified_before) == first.uploaded    # the catalog marks exactly the verified uploads
        server.start()                                   # same ports, same data
        client = server.client()
        for rel in verified_before:                      # nothing was recorded that does not verify
            assert verifies(client, target, root, rel)
        second = reconcile(str(root), target, Catalog(str(root)))
        assert second.failed == 0 and second.uploaded + second.skipped == len(rels)
        assert all(verifies(client, target, root, rel) for rel in rels)
        assert backed_up(root) == {rel: sha256_of(root / rel) for rel in rels}
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


@pytest.mark.s3
def test_bad_endpoint_credentials_bucket_are_one_clear_line(tmp_path, seaweed):
    root = tmp_path / "archive"
    write_plain_files(root, 2, size=100)
    creds = {"AWS_ACCESS_KEY_ID": "AKTEST", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}
    secured = SeaweedS3(tmp_path / "s3", access_key="AKTEST", secret_key="s3cr3t-value", buckets=("archives",)).start()
    try:
        from concurrent.futures import ThreadPoolExecutor

        common = ["backup=s3", f"storage.root={root}"]
        at = [f"backup.endpoint={secured.endpoint}"]
        runs = {"unreachable": ([*common, "backup.endpoint=http://127.0.0.1:9", "backup.bucket=archives"], creds),
                "credentials": ([*common, *at, "backup.bucket=archives"], {**creds, "AWS_SECRET_ACCESS_KEY": "wrong"}),
                "bucket": ([*common, *at, "backup.bucket=nope-bucket"], creds),
                "nokeys": ([*common, *at, "backup.bucket=archives"], {})}
        with ThreadPoolExecutor(len(runs)) as pool:     # independent processes: run them side by side
            procs = dict(zip(runs, pool.map(lambda args: run_cli(*args), runs.values())))
        assert "cannot reach" in one_error_line(procs["unreachable"])
        line = one_error_line(procs["credentials"])
        assert "rejected the credentials" in line and "wrong" not in line
        assert "does not exist" in one_error_line(procs["bucket"])
        assert "no credentials" in one_error_line(procs["nokeys"])
        ok = run_cli([*common, *at, "backup.bucket=archives"], creds)
        assert ok.returncode == 0 and "uploaded 2 files" in ok.stdout, ok.stderr
        assert ok.stderr.count("File exists<NO> upload<binance/perp/trades/") == 2      # one JSON line per upload
        assert "s3cr3t-value" not in ok.stdout + ok.stderr
    finally:
        secured.stop()


@pytest.mark.ray
def test_archiver_keeps_archiving_when_the_bucket_is_unreachable(tmp_path, ray_session):
    from actors.remote.archive import run_archive
    from actors.cli.config import load_settings

    root = tmp_path / "archive"
    settings = load_settings(["source=sim", "archive.binance=[BTCUSDT]", "archive.bybit=[]", "archive.hyperliquid=[]", "archive.okx=[]", "duration_s=4", "storage.rollover=2s",
                              f"storage.root={root}", "backup=s3", "backup.endpoint=http://127.0.0.1:9",
                              "backup.bucket=archives", "storage.seal_grace=0.2s"])
    report = run_archive(settings)
    assert report.rows > 0 and report.files_sealed > 0
    # the cluster's processes may or may not hold keys; either way the backup fails with one line
    error = report.backup.get("error", "")
    assert "cannot reach" in error or "no credentials" in error, report.backup
    assert len(sealed_files(str(root))) == report.files_sealed


@pytest.mark.s3
def test_retention_deletes_only_verified_files(tmp_path, seaweed, bucket_target):
    root = tmp_path / "archive"
    files = build_archive(root, periods=4)
    reconcile(str(root), bucket_target, Catalog(str(root)))
    modified = files[0]
    pq.write_table(pa.table({"x": [1]}), root / modified)        # changed since verified: must stay
    deleted = apply_retention(str(root), Catalog(str(root)), days=1)
    assert deleted == len(files) - 1
    assert (root / modified).exists() and not any((root / rel).exists() for rel in files[1:])
    rows = {r["key"]: r for r in Catalog(str(root)).rows()}
    assert rows[modified]["local"] and not any(rows[rel]["local"] for rel in files[1:])
    assert len(rows) == len(files)                                 # catalog rows are kept


@pytest.mark.s3
def test_multipart_and_endpoint_without_checksums(tmp_path, seaweed, bucket_target):
    """Large files go in parts (verified by the multipart ETag); an endpoint that refuses
    x-amz-checksum-* headers (Backblaze B2) is detected and served with Content-MD5/ETag."""
    from botocore.awsrequest import AWSResponse

    root = tmp_path / "archive"
    rels = write_plain_files(root, 3, size=50_000)
    big = StreamKey("binance", "perp", "l2book", "BIGUSDT", 20).relpath(OLD)
    (root / big).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"blob": [os.urandom(12 << 20)]}), root / big, compression="none")
    target = Target("s3", bucket_target.endpoint, bucket_target.bucket, access_key="any", secret_key="any",
                    multipart_mb=5, workers=2)
    client = make_client(target)
    refused = []

    class Raw:
        def __init__(self, body):
            self.body = body

        def stream(self, **_):
            yield self.body

    def like_b2(request, **_):          # what B2 answers to additional-checksum headers
        if any(h.lower().startswith("x-amz-checksum") or h.lower() == "x-amz-sdk-checksum-algorithm"
               for h in request.headers.keys()):
            refused.append(request.url)
            body = (b"<Error><Code>InvalidArgument</Code><Message>Unsupported header "
                    b"'x-amz-checksum-sha256' received for this API call.</Message></Error>")
            return AWSResponse(request.url, 400, {"Content-Type": "application/xml"}, Raw(body))
        return None

    client.meta.events.register("before-send.s3", like_b2)
    first = reconcile(str(root), target, client=client)
    assert (first.uploaded, first.failed) == (4, 0), first.errors
    assert refused and target.checksums is False
    head = seaweed.client().head_object(Bucket=target.bucket, Key=big)
    assert head["ETag"].strip('"').endswith("-3") and verifies(seaweed.client(), target, root, big)
    assert all(verifies(seaweed.client(), target, root, rel) for rel in rels)
    again = reconcile(str(root), target, client=client)
    assert (again.uploaded, again.skipped, again.failed) == (0, 4, 0)


@pytest.mark.s3
def test_files_without_catalog_rows_are_backed_up(tmp_path, seaweed, bucket_target):
    """The audit records local files the catalog does not list (a catalog lost and recreated,
    files copied in by hand) from their footers, as mode=reindex would, and backs them up; the
    next pass uploads nothing."""
    import shutil as _shutil

    root = tmp_path / "archive"
    files = build_archive(root, periods=2)                 # sealed by the writer
    extra = write_plain_files(root, 2, size=1000)          # copied in by hand, not archive files
    _shutil.rmtree(root / ".catalog")                      # the catalog was lost
    summary = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert (summary.uploaded, summary.failed) == (len(files) + 2, 0), summary.line()
    assert set(bucket_keys(bucket_target, seaweed.client())) == set(files) | set(extra)
    assert backed_up(root) == {rel: sha256_of(root / rel) for rel in files + extra}
    again = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert (again.uploaded, again.skipped, again.failed) == (0, len(files) + 2, 0), again.line()


def test_config_rejects_bad_backup_keys_in_one_line(tmp_path):
    from actors.cli.config import load_settings
    from actors.errors import ConfigError

    root = f"storage.root={tmp_path}"
    ok = load_settings(["mode=backup", root, "backup=s3", "backup.bucket=archives", "backup.workers=4"])
    assert ok.backup.workers == 4 and ok.backup.name.value == "s3"
    for override, needle in (("backup.workers=abc", "backup.workers"), ("backup.interval=soon", "backup.interval"),
                             ("backup.prefix=../up", "backup.prefix"), ("backup.bucket=null", "backup.bucket"),
                             ("backup.retention.local_days=-1", "local_days"),
                             ("backup.multipart_mb=1", "backup.multipart_mb")):
        args = ["mode=backup", root, "backup=s3", "backup.bucket=archives", override]
        try:
            load_settings(args)
        except ConfigError as exc:
            assert needle in str(exc) and "\n" not in str(exc), exc
        else:
            raise AssertionError(f"{override} accepted")
    assert load_settings(["mode=backup", root]).backup.name.value == "none"


@pytest.mark.ray
@pytest.mark.s3
def test_backup_actor_poke_schedule_and_errors(tmp_path, ray_session, seaweed, bucket_target):
    import ray

    from actors.remote import NAMESPACE
    from actors.remote.backup import BackupActor
    from actors.remote.restore import RestoreActor

    root = tmp_path / "archive"
    files = build_archive(root, periods=2)
    section = {"name": "local", "endpoint": seaweed.endpoint, "bucket": bucket_target.bucket,
               "interval": "1h", "audit_interval": "1d", "settle_s": 0.2}
    owner = RestoreActor.options(name=f"catalog-test-{bucket_target.bucket}", namespace=NAMESPACE).remote(
        str(root), None, ["binance"])                     # the catalog's owner, as in a run
    actor = BackupActor.options(name=f"backup-test-{bucket_target.bucket}", namespace=NAMESPACE).remote(
        str(root), section, catalog_owner=owner)
    broken = BackupActor.options(name=f"backup-test-broken-{bucket_target.bucket}", namespace=NAMESPACE).remote(
        str(root), {**section, "endpoint": "http://127.0.0.1:9", "bucket": "archives"}, catalog_owner=owner)
    try:
        assert ray.get(actor.stats.remote())["passes"] == 0      # the schedule waits (interval 1h)
        actor.poke.remote()
        deadline = time.time() + 60
        while time.time() < deadline and ray.get(actor.stats.remote())["passes"] == 0:
            time.sleep(0.2)
        stats = ray.get(actor.stats.remote())
        assert stats["last"]["uploaded"] == len(files) and stats["backlog"] == 0, stats
        assert set(bucket_keys(bucket_target, seaweed.client())) == set(files)
        assert ray.get(actor.run_once.remote())["uploaded"] == 0      # nothing new: the catalog says so
        deadline = time.time() + 60                        # never audited against this bucket: an audit runs
        while time.time() < deadline and not ray.get(actor.stats.remote())["audits"]:
            time.sleep(0.2)
        audit = ray.get(actor.stats.remote())["last_audit"]
        assert audit["ok"] and audit["audited"] == len(files) and audit["repaired"] == 0, audit
        seaweed.client().delete_object(Bucket=bucket_target.bucket, Key=files[0])   # lost in the bucket
        assert ray.get(actor.run_once.remote())["uploaded"] == 0      # a pass does not list the bucket
        audit = ray.get(actor.audit.remote())
        assert audit["repaired"] == 1, audit
        deadline = time.time() + 60                        # the audit pokes a pass, which uploads it again
        while time.time() < deadline and files[0] not in bucket_keys(bucket_target, seaweed.client()):
            time.sleep(0.2)
        assert set(bucket_keys(bucket_target, seaweed.client())) == set(files)
        result = ray.get(broken.audit.remote())                # endpoint down: one line, actor alive
        assert not result["ok"] and "cannot reach" in result["error"] and "\n" not in result["error"]
        pokes = ray.get(broken.stats.remote())["pokes"]
        ray.get(broken.poke.remote())
        assert ray.get(broken.stats.remote())["pokes"] == pokes + 1
    finally:
        for handle in (actor, broken, owner):
            ray.kill(handle)


@pytest.mark.s3
def test_transient_errors_are_retried(tmp_path, seaweed, bucket_target):
    """SlowDown/503 answers and connection resets on uploads are retried; the pass completes verified."""
    from botocore.awsrequest import AWSResponse
    from botocore.exceptions import ConnectionClosedError

    root = tmp_path / "archive"
    rels = write_plain_files(root, 6, size=20_000)
    client = make_client(bucket_target)
    faults = ["slowdown"] * 5 + ["reset"] * 4
    injected = []

    class Raw:
        def stream(self, **_):
            yield b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    def flaky(request, **_):
        if request.method != "PUT" or not faults:
            return None
        fault = faults.pop(0)
        injected.append(fault)
        if fault == "reset":
            raise ConnectionClosedError(endpoint_url=request.url)
        return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, Raw())

    client.meta.events.register("before-send.s3.PutObject", flaky)
    summary = reconcile(str(root), bucket_target, client=client)
    assert len(injected) == 9 and (summary.uploaded, summary.failed) == (len(rels), 0), summary.errors
    assert all(verifies(seaweed.client(), bucket_target, root, rel) for rel in rels)


@pytest.mark.s3
def test_fast_listing_matches_the_boto3_paginator(seaweed, bucket_target):
    client = make_client(bucket_target)
    keys = [f"desk/a/binance/perp/trades/2025/01/S{i:04d} +&%<x>_0518.parquet" for i in range(1203)] + ["other/k"]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket_target.bucket, Key=k, Body=k.encode()), keys))
    target = Target("s3", bucket_target.endpoint, bucket_target.bucket, prefix="desk/a", access_key="any",
                    secret_key="any")
    pages = fast_pages(client, {"Bucket": target.bucket, "Prefix": "desk/a/"})
    assert pages is not None and [len(p) for p in pages] == [1000, 203]
    fast = {rel: (obj.size, obj.etag, obj.modified_ns) for rel, obj in Bucket(target, client).list().items()}
    slow = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix="desk/a/"):
        for obj in page["Contents"]:
            slow[obj["Key"][len("desk/a/"):]] = (obj["Size"], obj["ETag"].strip('"'),
                                                 int(obj["LastModified"].timestamp() * 1e9))
    assert fast == slow and len(fast) == 1203


@pytest.mark.s3
def test_an_upload_that_does_not_verify_is_never_marked(tmp_path, seaweed, bucket_target):
    """A server without whole-object checksums whose ETag disagrees with the file: the upload
    fails verification, nothing is recorded or marked; the next honest pass verifies all."""
    root = tmp_path / "archive"
    files = build_archive(root, periods=2)
    client = make_client(bucket_target)

    def lying_head(response_dict, **_):
        headers = response_dict["headers"]
        headers.pop("x-amz-checksum-sha256", None)
        headers["ETag"] = '"0123456789abcdef0123456789abcdef"'

    client.meta.events.register("before-parse.s3.HeadObject", lying_head)
    client.meta.events.register("before-parse.s3.PutObject", lying_head)   # no checksum echo either
    bad = reconcile(str(root), bucket_target, Catalog(str(root)), client=client)
    assert (bad.uploaded, bad.failed) == (0, len(files)) and "does not verify" in bad.errors[0]
    assert backed_up(root) == {}
    good = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert good.failed == 0 and good.verified_existing + good.uploaded == len(files)
    assert backed_up(root) == {rel: sha256_of(root / rel) for rel in files}


@pytest.mark.s3
def test_locally_damaged_file_is_not_uploaded_over_the_good_copy(tmp_path, seaweed, bucket_target):
    """Bytes flipped in a sealed file after a good backup: the bucket copy is kept, the damage is
    reported, loads refuse the file, status flags it, and restore brings the good copy back."""
    from actors.storage.integrity import DamagedFileError
    from actors.restore.loading import load_trades
    from actors.restore.restorer import Restorer

    root = tmp_path / "archive"
    files = build_archive(root)
    assert reconcile(str(root), bucket_target, Catalog(str(root))).uploaded == len(files)
    rel = next(f for f in files if "/trades/" in f)
    good = (root / rel).read_bytes()
    before = load_trades(root, "binance", "BTCUSDT", OLD, OLD + HOUR_NS)
    damaged = bytearray(good)
    middle = len(damaged) // 2
    damaged[middle:middle + 16] = bytes(b ^ 0x5A for b in damaged[middle:middle + 16])
    (root / rel).write_bytes(bytes(damaged))

    summary = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert (summary.uploaded, summary.damaged) == (0, [rel]), summary.line()
    assert "damaged" in summary.line()
    head = seaweed.client().head_object(Bucket=bucket_target.bucket, Key=rel)
    assert head["Metadata"]["sha256"] == sha256_of_bytes(good)
    with pytest.raises(DamagedFileError, match=rel):
        load_trades(root, "binance", "BTCUSDT", OLD, OLD + HOUR_NS)
    coverage = Restorer(root).coverage("binance", "BTCUSDT", OLD, OLD + HOUR_NS, channels=["trades"])
    assert coverage.column("where").to_pylist() == ["damaged"]

    restorer = Restorer(root, bucket=Bucket(bucket_target), venues=["binance"])
    restorer.restore("binance", "BTCUSDT", "trades", OLD, OLD + HOUR_NS)
    assert (root / rel).read_bytes() == good
    assert load_trades(root, "binance", "BTCUSDT", OLD, OLD + HOUR_NS).equals(before)
    again = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert (again.uploaded, again.damaged, again.failed) == (0, [], 0)


@pytest.mark.s3
def test_sealed_files_go_unread_and_the_server_checks_them(tmp_path, seaweed, bucket_target, monkeypatch):
    """Files with catalog rows are sent unread under their seal SHA-256, and every copy verifies;
    a file damaged before its first backup is refused by the server, then hashed here, reported
    damaged, and nothing is stored under its key."""
    root = tmp_path / "archive"
    files = build_archive(root)
    bad = files[len(files) // 2]
    data = bytearray((root / bad).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / bad).write_bytes(bytes(data))
    hashed = []
    from actors.backup import upload
    check_here = upload.is_damaged

    def spy(path, *args, **kwargs):          # called exactly when a file is hashed here
        hashed.append(str(Path(path).relative_to(root)))
        return check_here(path, *args, **kwargs)

    monkeypatch.setattr(upload, "is_damaged", spy)
    summary = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert (summary.uploaded, summary.damaged, summary.failed) == (len(files) - 1, [bad], 0), summary.line()
    assert hashed == [bad]
    good = [rel for rel in files if rel != bad]
    client = seaweed.client()
    assert set(bucket_keys(bucket_target, client)) == set(good)
    assert all(verifies(client, bucket_target, root, rel) for rel in good)
    assert backed_up(root) == {rel: sha256_of(root / rel) for rel in good}
    etags = {r["key"]: r["backup_etag"] for r in Catalog(str(root)).rows() if r["backed_up_at"]}
    heads = {rel: client.head_object(Bucket=bucket_target.bucket, Key=rel)["ETag"].strip('"') for rel in good}
    assert etags == heads                            # the catalog records each copy's ETag, for the audit


@pytest.mark.s3
def test_an_endpoint_that_ignores_checksums_gets_every_file_hashed_here(tmp_path, seaweed, bucket_target):
    """Behind a proxy that drops the checksum headers, the probe finds the server does not check
    them (and leaves no object behind), once: its answer is kept. Every file is hashed here and
    verified by its ETag."""
    from dataclasses import replace

    from s3fixtures import ChecksumBlindProxy

    root = tmp_path / "archive"
    files = build_archive(root, periods=2)
    proxy = ChecksumBlindProxy(seaweed.endpoint)
    try:
        blind = replace(bucket_target, endpoint=proxy.endpoint)
        assert Bucket(bucket_target).server_checks_sha256() and not Bucket(blind).server_checks_sha256()
        assert bucket_keys(bucket_target, seaweed.client()) == {}          # no probe object left
        summary = reconcile(str(root), blind, Catalog(str(root)))
        assert not Bucket(blind).server_checks_sha256()
        probes = [path for method, path in proxy.requests if method == "PUT" and path.endswith("checksum-probe")]
    finally:
        proxy.close()
    assert len(probes) == 1
    assert (summary.uploaded, summary.failed) == (len(files), 0), summary.line()
    assert all(verifies(seaweed.client(), bucket_target, root, rel) for rel in files)
    assert backed_up(root) == {rel: sha256_of(root / rel) for rel in files}


def sha256_of_bytes(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def weed_processes_for(data_dir: Path) -> list[int]:
    """PIDs of live ``weed`` processes serving ``data_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"weed") and f"-dir={data_dir}".encode() in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.mark.s3
def test_backup_local_leaves_no_server_behind_after_any_mode(tmp_path):
    """mode=restore|status|reindex with backup=local stop the embedded S3 server they started,
    and the next backup=local command on the same root works."""
    from actors.backup import embedded_dir

    root = tmp_path / "archive"
    build_archive(root, periods=2)
    s3_dir = embedded_dir(str(root))
    common = [f"storage.root={root}", "backup=local"]
    request = ["restore.exchange=binance", "restore.symbol=BTCUSDT", "restore.start=2025-01-05:18",
               "restore.end=2025-01-05:19"]
    backup = run_cli(common)
    assert backup.returncode == 0 and "uploaded 4 files" in backup.stdout, backup.stderr
    assert weed_processes_for(s3_dir) == []
    roots = {"status": root, "restore": tmp_path / "copy-restore", "reindex": tmp_path / "copy-reindex"}
    for copy in (roots["restore"], roots["reindex"]):      # each mode on its own copy: run side by side
        shutil.copytree(root, copy)
        shutil.copytree(s3_dir, embedded_dir(str(copy)))

    def run_mode(mode: str) -> subprocess.CompletedProcess:
        extra = request if mode != "reindex" else []
        return subprocess.run([sys.executable, "launch.py", f"mode={mode}", f"storage.root={roots[mode]}",
                               "backup=local", *extra], cwd=REPO, capture_output=True, text=True, timeout=180)

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(3) as pool:
        procs = dict(zip(roots, pool.map(run_mode, roots)))
    for mode, proc in procs.items():
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (mode, proc.stderr)
        assert weed_processes_for(embedded_dir(str(roots[mode]))) == [], f"mode={mode} left its S3 server running"
    # a process that died without stopping its server (kill -9): the next command adopts and stops it
    crash = f"import os; from actors.backup import ensure_embedded; ensure_embedded({str(root)!r}, 'archives'); os._exit(0)"
    subprocess.run([sys.executable, "-c", crash], cwd=REPO, check=True, timeout=120)
    assert len(weed_processes_for(s3_dir)) == 1
    after_crash = run_cli(common)
    assert after_crash.returncode == 0 and "uploaded 0 files" in after_crash.stdout, after_crash.stderr
    assert weed_processes_for(s3_dir) == []


def test_an_existing_bucket_is_adopted_not_reuploaded(tmp_path, seaweed, bucket_target):
    """Objects another tool uploaded (no sha256 metadata; single part, and 8 MB parts as boto3 does) are
    verified once and recorded; an object of the same size with other bytes is replaced."""
    from boto3.s3.transfer import TransferConfig

    root = tmp_path / "archive"
    rels = write_plain_files(root, 3, size=30_000)
    big = StreamKey("binance", "perp", "l2book", "BIGUSDT", 20).relpath(OLD)
    (root / big).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"blob": [os.urandom(9 << 20)]}), root / big, compression="none")
    client = seaweed.client()
    for rel in rels[:2]:                                         # plain PUTs, no metadata
        client.put_object(Bucket=bucket_target.bucket, Key=rel, Body=(root / rel).read_bytes())
    other = bytearray((root / rels[2]).read_bytes())
    other[100] ^= 0xFF                                           # same size, other bytes
    client.put_object(Bucket=bucket_target.bucket, Key=rels[2], Body=bytes(other))
    client.upload_file(str(root / big), bucket_target.bucket, big,
                       Config=TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20))
    assert client.head_object(Bucket=bucket_target.bucket, Key=big)["ETag"].strip('"').endswith("-2")
    first = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert (first.adopted, first.uploaded, first.failed) == (3, 1, 0), first.line()
    assert "adopted 3" in first.line()
    for rel in rels + [big]:
        assert verifies(client, bucket_target, root, rel)            # our sha256 is on every object now
    again = reconcile(str(root), bucket_target, Catalog(str(root)))
    assert (again.adopted, again.uploaded, again.skipped) == (0, 0, 4)


@pytest.mark.s3
def test_reindex_and_restore_with_a_wrong_secret_are_one_line(tmp_path):
    root = tmp_path / "archive"
    build_archive(root, periods=1)
    secured = SeaweedS3(tmp_path / "s3", access_key="AKTEST", secret_key="right-secret", buckets=("archives",)).start()
    try:
        env = {"AWS_ACCESS_KEY_ID": "AKTEST", "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
        for mode, extra in (("reindex", []), ("restore", ["restore.exchange=binance", "restore.symbol=BTCUSDT",
                                                          "restore.start=2025-01-05:18", "restore.end=2025-01-05:19"])):
            proc = subprocess.run([sys.executable, "launch.py", f"mode={mode}", f"storage.root={root}", "backup=s3",
                                   f"backup.endpoint={secured.endpoint}", "backup.bucket=archives", *extra], cwd=REPO,
                                  capture_output=True, text=True, timeout=120,
                                  env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **env})
            line = one_error_line(proc)
            assert "rejected the credentials" in line and "wrong-secret" not in proc.stderr + proc.stdout, mode
    finally:
        secured.stop()
