"""mode=status without a stream: every stream of the archive, and the coverage picture with a gap in it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from actors.feed.records import StreamBuffers
from actors.restore.overview import archive_overview, coverage_grid
from actors.storage.catalog import Catalog
from actors.storage.layout import HOUR_NS, NS
from actors.storage.writer import SymbolStore
from conftest import REPO

T0 = 1_735_689_600 * NS                 # 2025-01-01 00:00 UTC
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DYDXUSDT", "XRPUSDT"]
HOURS = 48
MISSING = range(30, 33)                 # ETHUSDT: no data at all in hours 30..32 (the archiver was down)
GAP_HOUR, DISCONNECT_HOUR = 40, 44      # SOLUSDT: a sequence gap, then a disconnect
LOST_HOUR = 46                          # SOLUSDT: a damaged spool frame (a `lost` event for the whole symbol)


def build_archive(root) -> None:
    """Two days of hourly files for five symbols, written by the real writer core."""
    for symbol in SYMBOLS:
        core = SymbolStore(str(root), "binance", "perp", [symbol], 20, HOUR_NS, f"w-{symbol}",
                                Catalog(str(root)), node="test")
        core.recover()
        for hour in range(HOURS):
            if symbol == "ETHUSDT" and hour in MISSING:
                continue
            sink = StreamBuffers()
            rows = 10 + (hour * 7 + len(symbol)) % 40
            for k in range(rows):
                ts = T0 + hour * HOUR_NS + k * NS
                sink.trade(symbol, ts, ts, f"{hour}-{k}", 100.0, 1.0, 1)
                sink.book(symbol, ts, ts, hour * 1000 + k, [99.0], [1.0], [101.0], [1.0])
            if symbol == "SOLUSDT" and hour == GAP_HOUR:
                sink.event(symbol, T0 + hour * HOUR_NS + 5 * NS, "l2book", "gap", "pu 7 != previous u 5", 5, 7)
            if symbol == "SOLUSDT" and hour == DISCONNECT_HOUR:
                sink.event(symbol, T0 + hour * HOUR_NS + 9 * NS, "", "disconnect", "simulated disconnect")
            if symbol == "SOLUSDT" and hour == LOST_HOUR:
                sink.event(symbol, T0 + hour * HOUR_NS + 3 * NS, "", "lost", "spool damage: 120 bytes unreadable")
            core.write("p", hour + 1, sink.take())
        core.seal_all()


@pytest.fixture(scope="module")
def two_days(tmp_path_factory):
    root = tmp_path_factory.mktemp("overview")
    build_archive(root)
    return root


def test_overview_lists_every_stream_with_its_health(two_days):
    tmp_path = two_days
    streams = {st.stream: st for st in archive_overview(str(tmp_path), Catalog(str(tmp_path)))}
    assert len(streams) == 10
    eth = streams["binance/perp/trades/ETHUSDT"]
    assert (eth.first_hour, eth.last_hour, eth.missing_hours) == (T0, T0 + (HOURS - 1) * HOUR_NS, len(MISSING))
    sol_book = streams["binance/perp/l2book/SOLUSDT_depth20"]
    assert (sol_book.gaps, sol_book.disconnects) == (2, 1)           # the book gap and the symbol's lost frame
    sol_trades = streams["binance/perp/trades/SOLUSDT"]
    assert (sol_trades.gaps, sol_trades.disconnects) == (1, 1)       # the gap was a book gap; `lost` is everyone's
    btc = streams["binance/perp/trades/BTCUSDT"]
    assert btc.rows_last_hour == 10 + ((HOURS - 1) * 7 + 7) % 40 and btc.where == "local"
    assert [s.symbol for s in archive_overview(str(tmp_path), Catalog(str(tmp_path)), symbol="XRPUSDT")] == \
        ["XRPUSDT", "XRPUSDT"]


def test_coverage_picture_shows_the_gap(two_days):
    tmp_path = two_days
    grid = coverage_grid(str(tmp_path), Catalog(str(tmp_path)))
    assert len(grid.streams) == 10 and len(grid.hours) == HOURS
    eth = grid.streams.index("binance/perp/l2book/ETHUSDT_depth20")
    assert [h for h in range(HOURS) if grid.rows[eth, h] == 0] == list(MISSING)
    sol = grid.streams.index("binance/perp/l2book/SOLUSDT_depth20")
    assert np.nonzero(grid.gaps[sol])[0].tolist() == [GAP_HOUR, LOST_HOUR]
    assert np.nonzero(grid.disconnects[sol])[0].tolist() == [DISCONNECT_HOUR]
    assert not grid.backed_up.any() and (grid.rows > 0).sum() == 10 * HOURS - 2 * len(MISSING)
    for name in ("coverage.png", "coverage.html"):
        proc = subprocess.run([sys.executable, "launch.py", "mode=status", f"storage.root={tmp_path}",
                               f"status.plot={tmp_path / name}"], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / name).stat().st_size > 1000
    assert "binance/perp/trades/ETHUSDT" in proc.stdout and "not running" in proc.stdout
    page = (tmp_path / "coverage.html").read_text()
    assert page.count('class="gap"') == 1 + 2 and page.count('class="disconnect"') == 2    # book + trades row
    from PIL import Image
    assert Image.open(tmp_path / "coverage.png").size[0] > 400


def test_status_restore_and_the_picture_apply_one_coverage_rule(two_days):
    """The same stream-hours give the same holes, disconnects and place in every view: the overview's
    coverage grid, Restorer.coverage (mode=status for one stream) and mode=restore's lists."""
    from actors.restore.restorer import Restorer

    root = str(two_days)
    grid = coverage_grid(root, Catalog(root), symbol="SOLUSDT")
    table = Restorer(root).coverage("binance", "SOLUSDT", T0, T0 + HOURS * HOUR_NS).to_pylist()
    by_cell = {(r["stream"], int(r["hour"].timestamp()) * NS): r for r in table}
    for i, stream in enumerate(grid.streams):
        for j, hour in enumerate(grid.hours):
            row = by_cell[(stream, hour)]
            assert (row["gaps"], row["disconnects"]) == (grid.gaps[i, j], grid.disconnects[i, j]), (stream, hour)
            assert row["where"] == "local" and row["rows"] == grid.rows[i, j]
    events = [r for r in table if r["stream"] == "binance/perp/events/SOLUSDT"]
    assert sum(r["gaps"] for r in events) == 2 and sum(r["disconnects"] for r in events) == 1
    proc = subprocess.run([sys.executable, "launch.py", "mode=restore", f"storage.root={root}",
                           "restore.exchange=binance", "restore.symbol=SOLUSDT", "restore.start=2025-01-02:14",
                           "restore.end=2025-01-02:23", "restore.depth=20"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "gaps: l2book rows may be missing around recorded gap/lost events in 2 hour(s): 2025-01-02:16, " \
           "2025-01-02:22" in proc.stderr
    assert "gaps: trades rows may be missing around recorded gap/lost events in 1 hour(s): 2025-01-02:22" \
        in proc.stderr


def test_status_counts_holes_from_the_catalog_without_reading_events_files(two_days, tmp_path):
    """Each events file's catalog row carries its hole and disconnect counts (counted at seal): the
    overview of a copy whose events files are gone from disk gives the same counts; rows sealed
    before marks existed (marks null) fall back to reading the files, with the same result."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(two_days, root)
    catalog = Catalog(str(root))
    rows = catalog.rows("channel = 'events'")
    assert rows and all(r["marks"] is not None for r in rows)
    expected = coverage_grid(str(two_days), Catalog(str(two_days)))
    assert expected.gaps.sum() > 0 and expected.disconnects.sum() > 0
    for r in rows:
        (root / r["key"]).unlink()                       # the catalog alone must answer
    from_catalog = coverage_grid(str(root), catalog)
    assert (from_catalog.gaps == expected.gaps).all() and (from_catalog.disconnects == expected.disconnects).all()
    shutil.rmtree(root)
    shutil.copytree(two_days, root)
    old = Catalog(str(root))
    old.upsert([{**r, "marks": None} for r in old.rows("channel = 'events'")])    # as sealed by an older version
    from_files = coverage_grid(str(root), old)
    assert (from_files.gaps == expected.gaps).all() and (from_files.disconnects == expected.disconnects).all()
