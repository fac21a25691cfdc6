"""Many symbols in one process (StoreGroup) and the hand-over of a lost node's spools, on the real core."""
from __future__ import annotations

from collections import Counter

import pyarrow as pa

from actors.feed.records import StreamBuffers
from actors.storage.catalog import Catalog
from actors.storage.layout import NS
from actors.storage.recovery import discard_spools, unsealed_calls
from actors.storage.sealing import CatalogBuffer, StoreGroup
from actors.storage.writer import SymbolStore
from archive_reading import read_channel
from writer_fixtures import T0


def trades_call(symbols, first_id, t):
    sink = StreamBuffers()
    for k, sym in enumerate(symbols):
        sink.trade(sym, t + k, t, f"{sym}-{first_id}", 100.0, 1.0, 1)
    return sink.take()


def core_for(root, symbol, catalog=None):
    return SymbolStore(str(root), "binance", "perp", [symbol], 20, 10 * NS, f"writer_binance_perp_{symbol}",
                            catalog, node="test")


def test_group_keeps_one_core_per_symbol_and_drops_resent_calls(tmp_path):
    symbols = ["AUSDT", "BUSDT", "CUSDT"]
    catalog = CatalogBuffer(Catalog(str(tmp_path)))
    group = StoreGroup(lambda venue, sym: core_for(tmp_path, sym, catalog), [("binance", s) for s in symbols],
                        0, clock="data", catalog=catalog)
    for seq in range(1, 31):
        batches = trades_call(symbols, seq, T0 + seq * NS)
        assert group.write("binance", "p1", seq, batches)
        assert not group.write("binance", "p1", seq, batches)          # a re-send after a lost ack
    assert not group.write("bybit", "p1", 31, trades_call(["AUSDT"], 31, T0 + 31 * NS))   # not served here
    group.seal_all()
    for sym in symbols:
        ids = read_channel(tmp_path, "trades", sym).column("trade_id").to_pylist()
        assert sorted(ids) == sorted(f"{sym}-{i}" for i in range(1, 31))
        assert (tmp_path / ".spool" / f"writer_binance_perp_{sym}").is_dir()
    assert len(Catalog(str(tmp_path)).all()) == 3 * 4 and not catalog.pending     # 3 symbols x periods 0-30 s
    stats = group.stats()                     # the stores' counters summed: against what the archive holds
    files = [r for r in Catalog(str(tmp_path)).all().to_pylist()]
    assert stats.symbols == 3 and stats.files == len(files) and stats.rows == 3 * 30
    assert stats.duplicates == sum(w.stats().duplicates for w in group.writers.values()) > 0
    assert stats.bytes == sum(r["bytes"] for r in files) and stats.open_periods == 0


def test_files_sealed_just_before_a_crash_reach_the_catalog_at_restart(tmp_path):
    def group_on(catalog):
        return StoreGroup(lambda venue, sym: core_for(tmp_path, sym, catalog), [("binance", "AUSDT")], 0,
                           clock="data", catalog=catalog)

    lost = CatalogBuffer(Catalog(str(tmp_path)))
    group = group_on(lost)
    for seq in range(1, 16):
        group.write("binance", "p1", seq, trades_call(["AUSDT"], seq, T0 + seq * NS))
    lost.flush()                                                    # periods 0-10 s recorded
    writer = group.writers[("binance", "AUSDT")]
    writer.seal_all()                                               # sealed, its round never committed
    assert lost.pending and len(Catalog(str(tmp_path)).all()) < len(list(tmp_path.rglob("*.parquet")))
    restarted = group_on(CatalogBuffer(Catalog(str(tmp_path))))
    assert restarted.commit_recovered() == len(lost.pending)
    keys = {r["key"] for r in Catalog(str(tmp_path)).rows()}
    assert keys == {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")}


def test_hand_over_moves_every_acknowledged_row_once(tmp_path):
    lost, current = tmp_path / "lost", tmp_path / "current"
    old = core_for(lost, "AUSDT")
    old.recover()
    for seq in range(1, 21):                       # acknowledged on the lost node, never sealed
        old.write("p-old", seq, trades_call(["AUSDT"], seq, T0 + seq * NS))
    new = core_for(current, "AUSDT")
    new.recover()
    for seq in range(1, 6):                        # the moved socket's own rows
        new.write("p-new", seq, trades_call(["AUSDT"], 100 + seq, T0 + (25 + seq) * NS))
    returned = core_for(lost, "AUSDT")             # the node is back: recover its spools
    returned.recover()
    calls = unsealed_calls(returned)
    assert [(p, s) for p, s, _ in calls] == [("p-old", s) for s in range(1, 21)]
    for producer, seq, batches in calls + calls:   # a repeated hand-over is dropped by the watermark
        new.write(producer, seq, batches)
    discard_spools(returned)
    new.seal_all()
    ids = read_channel(current, "trades", "AUSDT").column("trade_id").to_pylist()
    assert Counter(ids) == Counter([f"AUSDT-{i}" for i in range(1, 21)] + [f"AUSDT-{100 + i}" for i in range(1, 6)])
    assert not (lost / ".spool" / "writer_binance_perp_AUSDT").exists()
    assert isinstance(calls[0][2][("AUSDT", "trades")], pa.RecordBatch)


def test_files_a_lost_node_sealed_reach_the_catalog_when_it_returns(tmp_path):
    """The node dies after renaming files into place but before its round's catalog commit; its
    streams moved on. When it comes back, recovering its spool folder commits them (the seal
    journal), so the one catalog lists exactly the files of every node."""
    head, lost_root = tmp_path / "head", tmp_path / "lost"
    lost = CatalogBuffer(Catalog(str(head)))
    core = core_for(lost_root, "AUSDT", lost)
    core.recover()
    for seq in range(1, 26):
        core.write("p1", seq, trades_call(["AUSDT"], seq, T0 + seq * NS))
    core.seal_due(T0 + 30 * NS)                          # two periods sealed ...
    core.write("p1", 26, trades_call(["AUSDT"], 26, T0 + 31 * NS))
    assert lost.pending and not Catalog(str(head)).count()   # ... and the node is gone before the commit
    on_disk = {p.relative_to(lost_root).as_posix() for p in lost_root.rglob("*.parquet")}
    assert len(on_disk) == 3
    buffer = CatalogBuffer(Catalog(str(head)))
    returned = core_for(lost_root, "AUSDT", buffer)       # what the hand-over does on the returned node
    assert returned.recover()["journal"] == 3
    returned.commit_catalog()
    assert buffer.flush() == 3 and not returned.journal.records
    assert {r["key"] for r in Catalog(str(head)).rows()} == on_disk
    again = core_for(lost_root, "AUSDT", CatalogBuffer(Catalog(str(head))))
    assert again.recover()["journal"] == 0               # committed: nothing named twice


def test_a_journal_entry_whose_rename_never_happened_is_dropped(tmp_path):
    core = core_for(tmp_path, "AUSDT")
    core.journal.add([{"key": "binance/perp/trades/2025/01/AUSDT_01000000.parquet", "bytes": 10, "sha256": "x"}])
    fresh = core_for(tmp_path, "AUSDT")
    assert fresh.recover()["journal"] == 0 and not fresh.journal.records
