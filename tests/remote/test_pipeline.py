"""End to end on a real Ray instance: simulator → sockets → writers → Parquet + catalog.

Ground truth is the simulator's own record: every trade it sent and the true top-N book
at every update id it pushed.
"""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest

from actors.remote.archive import run_archive
from actors.storage.catalog import Catalog
from actors.cli.config import load_settings
from actors.venues import supported_venues
from archive_reading import archive_files, read_channel

pytestmark = pytest.mark.ray
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
DEPTH = 10


def sim_settings(root, *extra):
    """Binance-only simulator settings; ``extra`` overrides replace the defaults by key."""
    only_binance = [f"archive.{v}=[]" for v in supported_venues() if v != "binance"]
    overrides = dict(o.split("=", 1) for o in [
        "source=sim", f"archive.binance=[{','.join(SYMBOLS)}]", *only_binance, f"depth={DEPTH}",
        "storage.rollover=2s", "storage.seal_grace=0.5s", f"storage.root={root}",
        "source.messages_per_s=150", "source.record_truth=true", "socket.flush_ms=100",
        "socket.backoff_min_s=0.2", "socket.backoff_max_s=1", *extra])
    return load_settings([f"{k}={v}" for k, v in overrides.items()])


def truth_trades(server, symbol):
    """{trade_id: (price, size, side)} of every trade the simulator sent for symbol."""
    return {str(t.trade_id): (t.price, t.size, t.side) for t in server.truth(symbol).trades}


def truth_books(server, symbol):
    """{update id: (bid_px, bid_sz, ask_px, ask_sz)} true top-N after each pushed update."""
    return server.truth(symbol).books


def check_trades_exact(root, server, symbol):
    trades = read_channel(root, "trades", symbol)
    ids = trades.column("trade_id").to_pylist()
    doubled = [i for i, n in Counter(ids).items() if n > 1]
    assert not doubled, f"{symbol}: doubled trade ids {doubled[:5]}"
    truth = truth_trades(server, symbol)
    missing = set(truth) - set(ids)
    extra = set(ids) - set(truth)
    assert not missing and not extra, f"{symbol}: missing {len(missing)}, unexpected {len(extra)}"
    for tid, price, size, side in zip(ids, trades.column("price").to_pylist(),
                                      trades.column("size").to_pylist(), trades.column("side").to_pylist()):
        assert (price, size, side) == truth[tid]
    return len(ids)


def check_books_true(root, server, symbol):
    books = read_channel(root, "l2book", symbol)
    truth = truth_books(server, symbol)
    rows = books.to_pylist()
    assert rows, f"{symbol}: no book rows"
    for row in rows:
        assert row["seq"] in truth, f"{symbol}: book row at unknown update id {row['seq']}"
        want = truth[row["seq"]]
        got = (row["bid_px"], row["bid_sz"], row["ask_px"], row["ask_sz"])
        assert got == tuple(list(x) for x in want), f"{symbol}: wrong book at u={row['seq']}"
        assert len(row["bid_px"]) <= DEPTH and row["bid_px"][0] < row["ask_px"][0]
    return len(rows)


_last_runs: list = []     # every venue run of the latest run_with (sim servers hold the truth)


def run_with(settings, actions=(), tail_s=2.0):
    """Run the archive; ``actions`` are (after_seconds, callable(runs)) done one after the other while
    it runs (an action may wait for a condition). With actions the run has no fixed duration: it stops
    ``tail_s`` after the last action returned, so a slow machine makes the test longer, never wrong."""
    holder, stop = {}, threading.Event()

    def started(runs):
        holder["runs"] = runs

        def fire():
            try:
                for after, action in actions:
                    time.sleep(after)
                    action(runs)
                time.sleep(tail_s)
            finally:
                if actions:
                    stop.set()
        threading.Thread(target=fire, daemon=True).start()

    report = run_archive(settings, stop_flag=stop, on_started=started)
    _last_runs[:] = holder["runs"]
    return report, holder["runs"][0]


FILE_RE = re.compile(r"^binance/perp/(l2book|trades|events)/\d{4}/\d{2}/[A-Z]+(_depth10)?_\d{8}\.parquet$")


def test_sim_run_three_periods_exact(tmp_path, ray_session):
    root = tmp_path / "archive"
    report, run = run_with(sim_settings(root, "duration_s=4", "storage.rollover=1s"))
    server = run.server
    files = archive_files(root)
    rels = [f.relative_to(root).as_posix() for f in files]
    assert all(FILE_RE.match(r) for r in rels), rels
    periods = {r.rsplit("_", 1)[1] for r in rels if "/trades/" in r}
    assert len(periods) >= 3, f"expected >= 3 rollover periods, got {sorted(periods)}"
    # every sealed file is in the catalog, with its row count and hash
    catalog = Catalog(str(root)).rows()
    by_key = {row["key"]: row for row in catalog}
    assert set(by_key) == set(rels)
    for f, rel in zip(files, rels):
        assert by_key[rel]["rows"] == pq.ParquetFile(f).metadata.num_rows
    # no spool left behind after a finite run
    assert not list((root / ".spool").rglob("*.spool"))
    for sym in SYMBOLS:
        assert check_trades_exact(root, server, sym) > 0
        assert check_books_true(root, server, sym) > 0
    assert report.frames > 0 and report.rows > 0


def test_writer_kill9_mid_period_loses_and_doubles_nothing(tmp_path, ray_session):
    import ray

    root = tmp_path / "archive"
    killed = {}

    def kill_writer(runs):
        handle = runs[0].writers[runs[0].writer_of["BTCUSDT"]]
        pid = ray.get(handle.stats.remote()).pid
        os.kill(pid, signal.SIGKILL)
        killed["pid"] = pid

    def check_restarted(runs):
        handle = runs[0].writers[runs[0].writer_of["BTCUSDT"]]
        killed["new_pid"] = ray.get(handle.stats.remote(), timeout=60).pid

    report, run = run_with(sim_settings(root), [(2.0, kill_writer), (0.0, check_restarted)])
    assert killed["pid"] != killed["new_pid"], "writer was not restarted"
    assert report.files_sealed == len(archive_files(root)), "the summary must count files sealed before the restart"
    for sym in SYMBOLS:
        check_trades_exact(root, run.server, sym)
        check_books_true(root, run.server, sym)


def test_disconnect_and_chain_break_resync(tmp_path, ray_session):
    root = tmp_path / "archive"
    import ray

    def break_after_reconnect(runs):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:              # reconnected, resynced and writing again
            stats = runs[0].socket_stats()
            if stats is not None and stats.connects >= 2 and stats.frames_on_open_connections >= 300:
                break
            time.sleep(0.2)
        runs[0].server.inject("break_chain", symbol="BTCUSDT")

    report, run = run_with(sim_settings(root), [
        (2.0, lambda runs: runs[0].server.inject("drop_connection")),
        (0.1, break_after_reconnect),
    ], tail_s=3.0)
    events = read_channel(root, "events", "BTCUSDT").to_pylist()
    kinds = [e["kind"] for e in events]
    assert "disconnect" in kinds and kinds.count("connect") >= 2
    gaps = [e for e in events if e["kind"] == "gap"]
    assert gaps, f"no gap event: {kinds}"
    gap_ts = gaps[-1]["ts_local"]
    resyncs = [e for e in events if e["kind"] in ("resync", "snapshot") and e["ts_local"] >= gap_ts]
    assert resyncs, "book was not resynced after the chain break"
    # between the gap and the resync only the diffs buffered for the fresh snapshot are written
    # (seq >= the diff that straddles it); every written book is the true book (checked below)
    books = read_channel(root, "l2book", "BTCUSDT").to_pylist()
    between = [b for b in books if gap_ts <= b["ts_local"] < resyncs[0]["ts_local"]]
    assert all(b["seq"] >= resyncs[0]["seq_to"] for b in between)
    for sym in SYMBOLS:
        check_books_true(root, run.server, sym)
        check_trades_exact(root, run.server, sym)


def recorded_book_tickers(path):
    """{update id: (best bid, best ask)} from the recording's bookTicker messages, and trade times."""
    import gzip
    import json

    tickers, trade_times = {}, []
    with gzip.open(path, "rt") as f:
        for line in f:
            ts, _, payload = line.partition(" ")
            msg = json.loads(payload)
            stream = msg.get("stream", "")
            if stream.endswith("@bookTicker"):
                data = msg["data"]
                tickers[data["u"]] = (float(data["b"]), float(data["a"]))
            elif stream.endswith("@trade"):
                trade_times.append(int(ts))
    return tickers, trade_times


def test_replay_real_recording_end_to_end(tmp_path, ray_session, binance_recording):
    root = tmp_path / "archive"
    settings = load_settings(["source=replay", f"replay.file={binance_recording}", "replay.speed=0",
                              f"storage.root={root}"])
    report = run_archive(settings)
    tickers, trade_times = recorded_book_tickers(binance_recording)
    trades = read_channel(root, "trades", "BTCUSDT")
    assert trades.num_rows == 21_313
    assert len(set(trades.column("trade_id").to_pylist())) == 21_313
    # rows keep the recording's receive times, so files land in the recorded hours
    assert sorted(trades.column("ts_local").to_pylist()) == sorted(trade_times)
    rels = [f.relative_to(root).as_posix() for f in archive_files(root)]
    assert all(re.match(r"^binance/perp/(l2book|trades|events)/2024/08/BTCUSDT(_depth20)?_(0823|0900)\.parquet$", r)
               for r in rels), rels
    books = read_channel(root, "l2book", "BTCUSDT").to_pylist()
    matched = 0
    for row in books:
        if row["seq"] in tickers:
            assert (row["bid_px"][0], row["ask_px"][0]) == tickers[row["seq"]], f"book differs at u={row['seq']}"
            matched += 1
    assert matched == 629
    events = read_channel(root, "events", "BTCUSDT").column("kind").to_pylist()
    assert "gap" not in events and "snapshot" in events
    catalog_keys = {r["key"] for r in Catalog(str(root)).rows()}
    assert catalog_keys == set(rels)
    assert report.files and not list((root / ".spool").rglob("*.spool"))


def test_sim_two_venues_in_one_run(tmp_path, ray_session):
    """binance and bybit simulators archived at once; each venue's rows equal its own truth."""
    root = tmp_path / "archive"
    settings = sim_settings(root, "archive.bybit=[BTCUSDT]", "archive.binance=[BTCUSDT]", "duration_s=4", "depth=20")
    report, _ = run_with(settings)
    assert set(report.venues) == {"binance", "bybit"}
    for run in _last_runs:
        sym = "BTCUSDT"
        trades = read_channel(root, "trades", sym, run.spec.name)
        ids = trades.column("trade_id").to_pylist()
        id_of = (lambda t: f"{t.trade_id:08x}-sim") if run.spec.name == "bybit" else (lambda t: str(t.trade_id))
        truth = {id_of(t): (t.price, t.size, t.side) for t in run.server.truth(sym).trades}
        assert len(ids) == len(set(ids)) and set(ids) == set(truth) and truth, run.spec.name
        books = read_channel(root, "l2book", sym, run.spec.name).to_pylist()
        assert books and all((b["bid_px"], b["bid_sz"], b["ask_px"], b["ask_sz"]) ==
                             tuple(list(x) for x in run.server.truth(sym).books[b["seq"]]) for b in books)


@pytest.mark.parametrize("venue, path, symbols", [
    ("bybit", "bybit/bybit_v5_linear_btc_eth_2026-08-10.jsonl.zst", ["BTCUSDT", "ETHUSDT"]),
    ("hyperliquid", "hyperliquid/btcusd_20250126.gz", ["BTC"]),
    ("okx", "okx/okx_v5_2022-05-13.jsonl.zst", ["BTC-USDT", "BTC-USD-220527"]),
])
def test_replay_other_venues_end_to_end(tmp_path, ray_session, venue, path, symbols):
    """source=replay on each venue's recording: exactly the recorded trades, valid books."""
    from conftest import FIXTURES
    from actors.venues.sim.recordings import read_recording
    import orjson

    root = tmp_path / "archive"
    report = run_archive(load_settings(["source=replay", f"replay.file={FIXTURES / path}", "replay.speed=0",
                                        f"storage.root={root}", f"archive.{venue}=[{','.join(symbols)}]"]))
    assert set(report.venues) == {venue}
    recorded = []
    for rec in read_recording(FIXTURES / path):
        if rec.kind == "recv" and ('"topic":"publicTrade.' in rec.payload[:30] or '"channel":"trades"' in rec.payload[:30]):
            for t in orjson.loads(rec.payload)["data"]:
                recorded.append(str(t.get("i") or t.get("tid") or t.get("tradeId")))
    archived = []
    for sym in symbols:
        archived += read_channel(root, "trades", sym, venue).column("trade_id").to_pylist()
        books = read_channel(root, "l2book", sym, venue).to_pylist()
        assert books and all(b["bid_px"][0] < b["ask_px"][0] for b in books)
    assert sorted(archived) == sorted(recorded) and len(set(archived)) == len(archived)


def socket_kill_actions(seen: dict, venue: str, frames: int):
    """Two run_with actions: kill -9 the first socket process (``seen``: its pid, the kill time), then
    wait until Ray restarted it and it received ``frames`` frames of ``venue`` again (``new_pid``)."""
    import ray

    def kill_socket(runs):
        seen["pid"] = ray.get(runs[0].socket.stats.remote()).pid
        seen["kill_ns"] = time.time_ns()
        os.kill(seen["pid"], signal.SIGKILL)

    def resumed(runs):
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                stats = ray.get(runs[0].socket.stats.remote(), timeout=10)
            except Exception:                   # still restarting
                time.sleep(0.2)
                continue
            feed = stats.venues.get(venue)
            if stats.pid != seen["pid"] and feed is not None and feed.frames_on_open_connections >= frames:
                seen["new_pid"] = stats.pid
                return
            time.sleep(0.2)
    return kill_socket, resumed


def test_socket_kill9_hyperliquid_repeated_trades_written_once(tmp_path, ray_session):
    """Hyperliquid repeats its recent trades on every subscribe. After a kill -9 of the socket
    process, the new process learns the trade ids the writers already hold, so the repeats of
    archived trades are not written again (and the repeats of trades lost with the process are)."""
    root = tmp_path / "archive"
    coins = ["BTC", "ETH"]
    seen: dict = {}
    kill_socket, resumed = socket_kill_actions(seen, "hyperliquid", frames=100)

    # the simulator repeats its last 300 trades (~8 s of them) on subscribe: most were archived before the kill
    settings = sim_settings(root, "archive.binance=[]", f"archive.hyperliquid=[{','.join(coins)}]",
                            "source.repeated_trades=300")
    report, run = run_with(settings, [(2.5, kill_socket), (0.0, resumed)], tail_s=2.0)
    assert report.socket_restarts == {"hyperliquid": 1}
    for coin in coins:
        events = read_channel(root, "events", coin, "hyperliquid").to_pylist()
        assert [e for e in events if e["kind"] == "gap" and "restarted" in e["detail"]]
        ids = read_channel(root, "trades", coin, "hyperliquid").column("trade_id").to_pylist()
        doubled = [i for i, n in Counter(ids).items() if n > 1]
        assert not doubled, f"{coin}: {len(doubled)} trades written twice, e.g. {doubled[:3]}"
        truth = {str(t.trade_id): t for t in run.server.truth(coin).trades}
        assert set(ids) <= set(truth)
        before_kill = {i for i, t in truth.items() if t.sent_ns < seen["kill_ns"] - 10**9}
        assert before_kill and not before_kill - set(ids), f"{coin}: acknowledged trades lost"


def test_socket_kill9_restarts_resubscribes_and_records_a_gap(tmp_path, ray_session):
    """kill -9 of a venue's socket process: Ray restarts it, it subscribes again, every symbol gets a
    gap event, the run goes on to the end, and every row acknowledged before the kill is kept."""
    root = tmp_path / "archive"
    seen: dict = {}
    kill_socket, resumed = socket_kill_actions(seen, "binance", frames=200)

    report, run = run_with(sim_settings(root), [(2.5, kill_socket), (0.0, resumed)], tail_s=3.0)
    assert seen["new_pid"] != seen["pid"], "the socket was not restarted"
    assert report.socket_restarts == {"binance": 1}
    kill_ns = seen["kill_ns"]
    for sym in SYMBOLS:
        events = read_channel(root, "events", sym).to_pylist()
        gaps = [e for e in events if e["kind"] == "gap" and "restarted" in e["detail"]]
        assert len(gaps) == 1 and gaps[0]["ts_local"] >= kill_ns, gaps
        resumed = [e["ts_local"] for e in events if e["kind"] == "connect" and e["ts_local"] >= kill_ns]
        assert resumed, "no connect after the restart"
        after = resumed[0] + 2 * 10**9                  # subscribed and flowing again by then
        trades = read_channel(root, "trades", sym)
        ids = trades.column("trade_id").to_pylist()
        assert len(ids) == len(set(ids)), f"{sym}: doubled trades"
        truth = {str(t.trade_id): t for t in run.server.truth(sym).trades}
        assert set(ids) <= set(truth)
        before_kill = {i for i, t in truth.items() if t.sent_ns < kill_ns - 10**9}
        after_restart = {i for i, t in truth.items() if t.sent_ns > after}
        assert before_kill and after_restart
        assert not before_kill - set(ids), f"{sym}: {len(before_kill - set(ids))} acknowledged trades lost"
        assert not after_restart - set(ids), f"{sym}: trades after the restart missing"
        check_books_true(root, run.server, sym)
