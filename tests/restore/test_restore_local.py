"""Restore/query logic on a local archive (no bucket): paths, exact ranges, safety, reindex."""
from __future__ import annotations

import pyarrow as pa
import pytest

from actors.storage.catalog import Catalog
from actors.storage.layout import HOUR_NS, NS
from actors.restore.loading import load_lob_archives, load_trade_archives, load_trades
from actors.restore.restorer import RestoreError, Restorer, reindex, safe_relpath
from writer_fixtures import SYM, T0, call_batches, make_core


def all_trades(root):
    return load_trades(root, "binance", SYM, T0 - HOUR_NS, T0 + 5 * HOUR_NS)


def test_paths_and_exact_partial_range(archive):
    restorer = Restorer(archive, venues=["binance"])
    start, end = T0 + 1_800 * NS + 1, T0 + 2 * HOUR_NS + 600 * NS
    refs = restorer.paths("binance", SYM, "trades", start, end)
    assert [r.period_start for r in refs] == [T0, T0 + HOUR_NS, T0 + 2 * HOUR_NS]
    assert all(r.local and r.sha256 for r in refs)
    got = restorer.load("binance", SYM, "trades", start, end)
    everything = all_trades(archive)
    ts = everything.column("ts_local").cast(pa.int64()).to_numpy()
    want = everything.filter(pa.array((ts >= start) & (ts < end)))
    assert got.num_rows == want.num_rows > 0
    assert got.equals(want)


def test_quantpylib_hour_range_and_shapes(archive):
    from datetime import datetime, timezone
    h = datetime.fromtimestamp(T0 // NS, tz=timezone.utc)
    start = f"{h:%Y-%m-%d}:{h.hour:02d}"
    trades = load_trade_archives("binance", SYM, start, start, archive)
    assert len(trades) == 60 * 30 and all(len(r) == 4 for r in trades)
    assert trades[0][0] == T0 // 1_000_000 and trades[0][3] in (1, -1)
    books = load_lob_archives("binance", SYM, 20, start, start, archive)
    assert len(books) == 60 * 30
    assert set(books[0]) == {"ts", "b", "a"} and books[0]["b"].shape == (2, 2)
    assert books[0]["b"][0].tolist() == [100.0, 1.0]
    assert load_trade_archives("binance", SYM, start, start, archive, only_paths=True)[0].endswith(".parquet")


def test_bad_requests_are_clear_errors(archive):
    restorer = Restorer(archive, venues=["binance", "bybit"])
    with pytest.raises(RestoreError, match="unknown venue 'kraken'"):
        restorer.paths("kraken", SYM, "trades", T0, T0 + HOUR_NS)
    with pytest.raises(RestoreError, match="unknown symbol 'NOPE'"):
        restorer.paths("binance", "NOPE", "trades", T0, T0 + HOUR_NS)
    with pytest.raises(ValueError, match="is not before"):
        restorer.paths("binance", SYM, "trades", T0 + HOUR_NS, T0)
    for bad in ["../etc/passwd", "/abs/binance/perp/trades/2025/01/X_0101.parquet",
                "binance/perp/trades/2025/01/../../../../x_0101.parquet", ".catalog/x",
                "binance/perp/trades/2025/01/BTC USDT_0101.parquet"]:
        with pytest.raises(RestoreError, match="refusing bucket key"):
            safe_relpath(bad, archive)


def test_coverage_reports_every_hour(archive):
    table = Restorer(archive).coverage("binance", SYM, T0, T0 + 3 * HOUR_NS, channels=["trades", "l2book"])
    rows = table.to_pylist()
    assert len(rows) == 6 and all(r["where"] == "local" and r["rows"] == 1800 for r in rows)


def test_reindex_rebuilds_the_same_catalog(archive):
    catalog = Catalog(str(archive))
    before = sorted(catalog.rows(), key=lambda r: r["key"])
    reindex(archive, catalog)
    after = sorted(Catalog(str(archive)).rows(), key=lambda r: r["key"])
    assert after == before and len(after) == 6


def corrupt_catalog(root) -> int:
    """Overwrite every file of the LanceDB catalog with garbage (as a bad disk or copy would)."""
    import os
    files = [p for p in (root / ".catalog").rglob("*") if p.is_file()]
    for path in files:
        path.write_bytes(os.urandom(max(64, path.stat().st_size)))
    return len(files)


def test_reindex_skips_and_names_a_truncated_file(archive):
    good = next(archive.rglob("*.parquet"))
    bad_rel = good.relative_to(archive).as_posix().rsplit("_", 1)[0] + "_0100.parquet"    # another hour
    if bad_rel == good.relative_to(archive).as_posix():
        bad_rel = bad_rel.replace("_0100", "_0200")
    (archive / bad_rel).write_bytes(good.read_bytes()[:1000])                             # truncated copy
    result = reindex(archive, Catalog(str(archive)))
    assert result["unreadable"] == [bad_rel] and result["files"] == 6
    assert {r["key"] for r in Catalog(str(archive)).rows()} == {
        p.relative_to(archive).as_posix() for p in archive.rglob("*.parquet")} - {bad_rel}


def test_a_corrupted_catalog_is_replaced_by_reindex_and_status_still_reads_the_tree(archive):
    before = sorted(Catalog(str(archive)).rows(), key=lambda r: r["key"])
    assert corrupt_catalog(archive) > 0
    # while corrupted: status reports the files on disk, not zero rows
    table = Restorer(archive).coverage("binance", SYM, T0, T0 + 3 * HOUR_NS, channels=["trades", "l2book"])
    rows = table.to_pylist()
    assert len(rows) == 6 and all(r["rows"] == 1800 and r["where"] == "local" for r in rows), rows
    result = reindex(archive, Catalog(str(archive)))          # no manual deletion of .catalog needed
    assert result["files"] == 6 and result["unreadable"] == []
    after = sorted(Catalog(str(archive)).rows(), key=lambda r: r["key"])
    strip = lambda r: {k: v for k, v in r.items() if k != "sealed_at"}  # noqa: E731
    assert [strip(r) for r in after] == [strip(r) for r in before]
    assert any(p.name.startswith(".catalog.corrupt-") for p in archive.iterdir())


def test_archive_start_repairs_a_corrupted_catalog(archive):
    from actors.restore.restorer import prepare_catalog

    corrupt_catalog(archive)
    repaired = prepare_catalog(str(archive))
    assert repaired["rebuilt"] and repaired["files"] == 6
    core = make_core(archive, rollover_s=3600, writer_id="w2")           # a writer seals into it again
    core.write("p9", 1, call_batches(9000, 5, T0 + 5 * HOUR_NS))
    records = core.seal_all()
    keys = {r["key"] for r in Catalog(str(archive)).rows()}
    assert {r["key"] for r in records} <= keys and len(keys) == 6 + len(records)
    assert prepare_catalog(str(archive)) == {"rebuilt": False}          # healthy: nothing to do


def test_status_of_an_unknown_symbol_says_so(archive):
    with pytest.raises(RestoreError, match="unknown symbol 'NOPE'"):
        Restorer(archive, venues=["binance"]).coverage("binance", "NOPE", T0, T0 + HOUR_NS)


def test_the_catalog_answers_alone_only_for_hours_its_files_tile_whole():
    """Restore consults the tree and the bucket only for hours the catalog's files do not tile:
    an hour of one-hour files is answered; an hour of 10-minute files with one missing is not."""
    from actors.restore.restorer import FileRef, uncovered
    from actors.storage.layout import HOUR_NS

    h0 = 1_736_100_000 * 10**9 - (1_736_100_000 * 10**9) % HOUR_NS
    whole = [FileRef(f"a{i}", h0 + i * HOUR_NS, h0 + (i + 1) * HOUR_NS) for i in range(3)]
    assert uncovered(whole, h0, h0 + 3 * HOUR_NS) == []
    tenth = HOUR_NS // 6
    pieces = [FileRef(f"b{i}", h0 + i * tenth, h0 + (i + 1) * tenth) for i in range(12) if i != 8]
    assert uncovered(pieces, h0, h0 + 2 * HOUR_NS) == [h0 + HOUR_NS]          # the piece at 1:20 is missing
    assert uncovered(pieces, h0 + 10 * 60 * 10**9, h0 + 30 * 60 * 10**9) == []   # part of an hour: its part only
    assert uncovered([], h0, h0 + HOUR_NS) == [h0]
