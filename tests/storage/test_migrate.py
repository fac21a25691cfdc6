"""mode=migrate: older files rewritten into format 3, verified, atomically, catalog and bucket updated.

Ground truth: the rows handed to the writers (tests/mixed_archive.py) and the files' own bytes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mixed_archive
from actors.feed.records import SCHEMAS
from actors.restore.loading import load
from actors.storage.catalog import Catalog
from actors.storage.fileformat import file_version
from actors.storage.integrity import check_files, sha256_file
from actors.storage.layout import HOUR_NS, StreamKey, sealed_files
from actors.storage.migrate import migrate, migrate_file
from legacy_formats import write_legacy

REPO = Path(__file__).resolve().parents[2]


def versions(root) -> dict[str, int]:
    return {rel: file_version(str(Path(root) / rel)) for rel in sealed_files(root)}


def loaded(root) -> dict[tuple, list]:
    """Every stream-hour as the loaders return it (times as int ns)."""
    out = {}
    for index, venue in enumerate(mixed_archive.VENUES):
        for channel in SCHEMAS:
            table = load(root, venue.exchange, channel, venue.symbol, mixed_archive.T0,
                         mixed_archive.T0 + mixed_archive.HOURS * HOUR_NS, depth=venue.depth, market=venue.market)
            out[(venue.exchange, channel)] = [
                column.cast(pa.int64()).to_pylist() if pa.types.is_timestamp(column.type) else column.to_pylist()
                for column in table.columns]
    return out


def test_migrate_rewrites_older_files_verified_and_catalogued(tmp_path):
    mixed_archive.build(tmp_path)
    before = versions(tmp_path)
    assert set(before.values()) == {1, 2, 3}
    rows_before = loaded(tmp_path)
    untouched = {rel: sha256_file(tmp_path / rel) for rel, v in before.items() if v == 3}

    result = migrate(tmp_path, Catalog(str(tmp_path)))
    assert not result.failed
    assert sorted(result.migrated) == sorted(rel for rel, v in before.items() if v < 3)
    assert result.current == len(untouched)
    assert set(versions(tmp_path).values()) == {3}
    for rel in sealed_files(tmp_path):
        assert pq.read_schema(tmp_path / rel).remove_metadata().equals(SCHEMAS[rel.split("/")[2]])
    assert {rel: sha256_file(tmp_path / rel) for rel in untouched} == untouched    # format 3 left alone
    assert loaded(tmp_path) == rows_before                       # same rows, same values
    records = Catalog(str(tmp_path)).get_many(list(before))
    for rel in result.migrated:                                  # the catalog describes the new bytes
        rec = records[rel]
        assert rec["sha256"] == sha256_file(tmp_path / rel) and rec["bytes"] == os.path.getsize(tmp_path / rel)
        assert rec["backed_up_at"] is None and rec["rows"] == pq.ParquetFile(tmp_path / rel).metadata.num_rows
    check_files(tmp_path, list(before), records)                 # nothing looks damaged
    assert not [p for p in tmp_path.rglob("*.tmp")]

    again = migrate(tmp_path, Catalog(str(tmp_path)))            # idempotent
    assert (again.migrated, again.refreshed, again.failed, again.current) == ([], 0, {}, len(before))


def test_a_file_that_cannot_be_migrated_is_left_as_it_was(tmp_path):
    mixed_archive.build(tmp_path)
    rel = StreamKey.of("binance", "perp", "trades", "ETHUSDT").relpath(mixed_archive.T0)
    bad = pa.table({"ts_local": pa.array([mixed_archive.T0], pa.timestamp("ns", tz="UTC")),
                    "trade_id": ["1"], "price": ["not a number"], "size": [1.0], "side": pa.array([1], pa.int8())})
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(bad, tmp_path / rel)
    sha = sha256_file(tmp_path / rel)
    result = migrate(tmp_path, Catalog(str(tmp_path)))
    assert list(result.failed) == [rel] and "price" in result.failed[rel]
    assert sha256_file(tmp_path / rel) == sha and file_version(str(tmp_path / rel)) == 1
    assert len(result.migrated) == sum(1 for v in versions(tmp_path).values() if v == 3) - result.current


def test_a_run_stopped_before_the_catalog_commit_is_finished_by_the_next(tmp_path):
    """The rename happened, the catalog row did not: loads do not call it damaged, and the next
    run refreshes the row."""
    mixed_archive.build(tmp_path)
    rel = next(rel for rel, v in versions(tmp_path).items() if v == 1 and "/trades/" in rel)
    old_row = Catalog(str(tmp_path)).get(rel)
    migrate_file(str(tmp_path), rel)                      # the file is rewritten, the row is stale
    assert old_row["sha256"] != sha256_file(tmp_path / rel)
    check_files(tmp_path, [rel], {rel: old_row})          # newer footer: not damage
    result = migrate(tmp_path, Catalog(str(tmp_path)))
    assert result.refreshed == 1 and rel not in result.migrated
    assert Catalog(str(tmp_path)).get(rel)["sha256"] == sha256_file(tmp_path / rel)


@pytest.mark.s3
def test_mode_migrate_updates_the_bucket(tmp_path, seaweed):
    """The CLI: a backup pass first (old bytes in the bucket), then mode=migrate uploads the new ones."""
    import uuid

    root = tmp_path / "archive"
    rel = StreamKey.of("bybit", "perp", "trades", "BTCUSDT").relpath(mixed_archive.T0)
    table = pa.Table.from_batches([mixed_archive.rows(mixed_archive.VENUES[1], 1, 0).take()[("BTCUSDT", "trades")]])
    write_legacy(root / rel, table, "trades", 2, period_end=mixed_archive.T0 + HOUR_NS)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    seaweed.client().create_bucket(Bucket=bucket)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
           "AWS_ACCESS_KEY_ID": "any", "AWS_SECRET_ACCESS_KEY": "any"}
    args = [f"storage.root={root}", "backup=s3", f"backup.endpoint={seaweed.endpoint}", f"backup.bucket={bucket}"]

    def cli(mode):
        return subprocess.run([sys.executable, "launch.py", f"mode={mode}", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=180, env=env)

    assert cli("backup").returncode == 0
    old = seaweed.client().get_object(Bucket=bucket, Key=rel)["Body"].read()
    proc = cli("migrate")
    assert proc.returncode == 0, proc.stderr
    assert "migrated 1 file(s) to format 3" in proc.stdout
    new = seaweed.client().get_object(Bucket=bucket, Key=rel)["Body"].read()
    assert new == (root / rel).read_bytes() != old
    assert file_version(str(root / rel)) == 3
    proc = cli("migrate")                                         # nothing left to do, nothing uploaded
    assert proc.returncode == 0 and "migrated 0 file(s)" in proc.stdout and "backup:" not in proc.stdout
