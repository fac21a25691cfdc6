"""SymbolStore and the catalog: durability, exactly-once, crash points, concurrency."""
from __future__ import annotations

import multiprocessing
import shutil
from collections import Counter

import pyarrow.parquet as pq

from actors.storage.catalog import Catalog
from actors.storage.layout import NS, parse_relpath
from actors.feed.records import StreamBuffers
from actors.storage.spool import SpoolFile, encode_frame, read_frames
from actors.storage.writer import ROW_GROUP_SPAN_NS, SymbolStore
from archive_reading import archive_files, read_channel

from writer_fixtures import SYM, T0, call_batches, make_core, trade_ids


def test_write_dedup_and_seal_layout(tmp_path):
    core = make_core(tmp_path)
    for i in range(25):
        assert core.write("p1", i + 1, call_batches(i * 50, 50, T0 + i * NS))
    assert not core.write("p1", 7, call_batches(350, 50, T0 + 7 * NS)), "re-send must be dropped"
    records = core.seal_all()
    ids = trade_ids(tmp_path)
    assert len(ids) == 25 * 50 and len(set(ids)) == len(ids)
    keys = {r["key"] for r in records}
    assert keys == {f.relative_to(tmp_path).as_posix() for f in archive_files(tmp_path)}
    for rec in records:
        parsed = parse_relpath(rec["key"])
        assert parsed.period_start_ns % (10 * NS) == 0
        assert rec["rows"] == pq.ParquetFile(tmp_path / rec["key"]).metadata.num_rows
        assert parsed.period_start_ns <= rec["ts_local_min"] <= rec["ts_local_max"] < parsed.period_start_ns + 10 * NS
    assert {r["key"] for r in Catalog(str(tmp_path)).rows()} == keys
    assert not list((tmp_path / ".spool").rglob("*.spool"))


def test_restart_continues_open_period_and_drops_resends(tmp_path):
    core = make_core(tmp_path)
    for i in range(5):
        core.write("p1", i + 1, call_batches(i * 10, 10, T0 + i * NS))
    del core                                   # "crash": nothing sealed, spool on disk
    core = make_core(tmp_path)
    assert core.watermarks["p1"] == 5
    assert not core.write("p1", 5, call_batches(40, 10, T0 + 4 * NS))   # Ray's retry of the last call
    assert core.write("p1", 6, call_batches(50, 10, T0 + 5 * NS))
    core.seal_all()
    assert sorted(map(int, trade_ids(tmp_path))) == list(range(60))


def test_torn_tail_is_truncated_and_later_appends_survive(tmp_path):
    core = make_core(tmp_path)
    core.write("p1", 1, call_batches(0, 10, T0))
    spool = next((tmp_path / ".spool").rglob("*.spool"))
    with open(spool, "ab") as f:
        f.write(encode_frame("p1", 2, 0, 1, call_batches(10, 10, T0 + NS))[:-7])   # torn write
    del core
    core = make_core(tmp_path)
    assert core.watermarks["p1"] == 1
    assert core.write("p1", 2, call_batches(10, 10, T0 + NS))       # the retry of the torn call
    frames, valid, size = read_frames(str(spool))
    assert valid == size and len(frames) == 2
    core.seal_all()
    assert sorted(map(int, trade_ids(tmp_path))) == list(range(20))


def test_orphan_part_of_a_call_spanning_two_periods(tmp_path):
    """Crash after part 0 of a two-period call: the retry writes it once, in both periods."""
    core = make_core(tmp_path)
    core.write("p1", 1, call_batches(0, 10, T0))
    full = call_batches(10, 20, T0 + 9 * NS, step_ns=100_000_000)     # 9.0s .. 10.9s: two periods
    spool0 = SpoolFile(str(tmp_path / ".spool" / "w1" / f"{T0}.spool")).open()
    part0 = {k: b.filter(b.column("ts_local").cast("int64").to_numpy() < T0 + 10 * NS) for k, b in full.items()}
    spool0.append(encode_frame("p1", 2, 0, 2, part0))
    spool0.close()
    del core
    core = make_core(tmp_path)
    assert core.watermarks["p1"] == 1, "an incomplete call must not raise the watermark"
    assert core.write("p1", 2, full)
    core.seal_all()
    assert sorted(map(int, trade_ids(tmp_path))) == list(range(30))


def test_crash_after_seal_before_spool_removal_is_idempotent(tmp_path):
    core = make_core(tmp_path)
    for i in range(3):
        core.write("p1", i + 1, call_batches(i * 10, 10, T0 + i * NS))
    spool = next((tmp_path / ".spool").rglob("*.spool"))
    saved = tmp_path / "saved.spool"
    shutil.copy(spool, saved)
    core.seal_all()
    file = archive_files(tmp_path, "trades")[0]
    before = file.read_bytes()
    shutil.copy(saved, spool)                  # as if we crashed right after the rename
    core = make_core(tmp_path)
    assert core.seal_all() == []
    assert file.read_bytes() == before
    assert sorted(map(int, trade_ids(tmp_path))) == list(range(30))


def test_late_rows_are_merged_into_the_sealed_period(tmp_path):
    core = make_core(tmp_path)
    core.write("p1", 1, call_batches(0, 10, T0))
    core.seal_due(T0 + 11 * NS, 0)
    core.write("p1", 2, call_batches(10, 5, T0 + 5 * NS))            # late, same period
    records = core.seal_all()
    assert sorted(map(int, trade_ids(tmp_path))) == list(range(15))
    trades_rec = [r for r in records if r["channel"] == "trades"][0]
    assert trades_rec["rows"] == 15
    assert Catalog(str(tmp_path)).get(trades_rec["key"])["sha256"] == trades_rec["sha256"]


def test_row_groups_span_at_most_five_minutes(tmp_path):
    core = make_core(tmp_path, rollover_s=3600)
    for i in range(12):                        # one call per 5 minutes-ish over the hour
        core.write("p1", i + 1, call_batches(i * 100, 100, T0 + i * 290 * NS, step_ns=2 * NS))
    core.seal_all()
    meta = pq.ParquetFile(archive_files(tmp_path, "trades")[0]).metadata
    assert meta.num_row_groups > 1
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(0).statistics
        assert stats.max_raw - stats.min_raw < ROW_GROUP_SPAN_NS


def _upsert_same_keys(root: str, worker: int) -> None:
    from actors.storage.catalog import Catalog
    from actors.storage.layout import parse_relpath
    from actors.storage.catalog import file_record
    catalog = Catalog(root)
    keys = [f"binance/perp/trades/2025/01/S{k:03d}_0518.parquet" for k in range(200)]
    stats = {"rows": worker, "row_groups": 1}
    catalog.upsert([file_record(key, parse_relpath(key), 0, stats, 1, "x", f"w{worker}") for key in keys])


def test_catalog_concurrent_writers_do_not_duplicate(tmp_path):
    Catalog(str(tmp_path)).upsert([])          # nothing: no table yet
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_upsert_same_keys, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    keys = [r["key"] for r in Catalog(str(tmp_path)).rows()]
    assert len(keys) == 200 and not [k for k, n in Counter(keys).items() if n > 1]
    Catalog(str(tmp_path)).optimize()
    assert Catalog(str(tmp_path)).count() == 200


def test_describe_file_rebuilds_the_catalog_row(tmp_path):
    from actors.storage.footer import describe_file
    core = make_core(tmp_path)
    for i in range(3):
        core.write("p1", i + 1, call_batches(i * 10, 10, T0 + i * NS + 123))
    records = core.seal_all()
    assert records
    catalog = {r["key"]: r for r in Catalog(str(tmp_path)).rows()}
    for rec in records:
        rebuilt = describe_file(str(tmp_path), rec["key"])
        assert rebuilt == catalog[rec["key"]]


def test_restart_after_sealing_one_half_of_a_boundary_call(tmp_path):
    """A call spans two periods; the first is sealed (its spool gone), then the writer crashes."""
    core = make_core(tmp_path)
    core.write("p1", 1, call_batches(0, 10, T0))
    core.write("p1", 2, call_batches(10, 20, T0 + 9 * NS, step_ns=100_000_000))   # 9.0s .. 10.9s
    core.seal_due(T0 + 10 * NS, 0)                 # period 0 sealed; period 1 still in its spool
    del core
    core = make_core(tmp_path)
    assert not core.write("p1", 2, call_batches(10, 20, T0 + 9 * NS, step_ns=100_000_000))
    core.seal_all()
    assert sorted(map(int, trade_ids(tmp_path))) == list(range(30))


def test_durable_lag_is_measured_per_row(tmp_path):
    """Rows received 2 s and 50 ms before they were made durable: the percentiles say so."""
    import time

    from actors.feed.records import StreamBuffers
    from writer_fixtures import SYM, make_core

    core = make_core(tmp_path, rollover_s=3600)
    now = time.time_ns()
    sink = StreamBuffers()
    for k in range(99):
        sink.trade(SYM, now - 50_000_000, None, str(k), 1.0, 1.0, 1)
    sink.trade(SYM, now - 2_000_000_000, None, "old", 1.0, 1.0, 1)
    core.write("p1", 1, sink.take())
    lag = core.stats().durable_lag_ms
    assert 50 <= lag["p50"] < 50 * 1.1 + 20          # bucket edge above 50 ms, plus the write itself
    assert 50 <= lag["p99"] < 50 * 1.1 + 20          # 99 of 100 rows are the 50 ms ones
    assert 2000 <= lag["max"] < 2100


def test_recent_trade_ids_survive_a_writer_restart(tmp_path):
    """The newest durable trade ids (what a restarted socket process seeds its duplicate filter
    with) come from the writes, and after a crash from the recovered spool."""
    from actors.storage.writer import RECENT_TRADE_IDS

    core = make_core(tmp_path)
    core.write("p", 1, call_batches(1, 600, T0))
    core.write("p", 2, call_batches(601, 600, T0 + 6 * NS))
    newest = [str(i) for i in range(1201 - RECENT_TRADE_IDS, 1201)]
    assert core.recent_trade_ids(SYM) == newest
    assert core.recent_trade_ids("ETHUSDT") == []
    del core                                     # a crash: nothing sealed, the spool is all there is
    assert make_core(tmp_path).recent_trade_ids(SYM) == newest
