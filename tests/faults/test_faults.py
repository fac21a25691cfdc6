"""The fault-injection suite, reduced for CI (``tests/faults/fault_suite.py`` runs the full one).

Every family once, judged against ground truth: the simulators' record of every trade and true
book they sent (``truth_check``), and the rows that were durable before each kill -9.
"""
from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest

from faultlib import (NEW_KINDS, VENUES, DurableRecord, fault_plan, judge_runs, kill_loop, kill_targets,
                      leftover_spools, run_with_script, sim_settings, slow_writer_script, venue_fault_script)
from truth_check import from_archive

pytestmark = pytest.mark.faults

#: fault kinds a venue's client is known to mishandle (a failing test in test_fault_findings.py
#: each): left out of the combined run until fixed
KNOWN_DEFECTS = {("hyperliquid", "reorder_frames"): "F3: an older l2Book push is written after a newer one"}


def events_of(root, run) -> list:
    case = VENUES[run.spec.name]
    return [ev for sym in run.spec.symbols
            for ev in from_archive(root, run.spec.name, sym, case.book_key, case.trade_keys).events]


@pytest.mark.ray
def test_every_venue_fault_with_kill9s_loses_nothing_acknowledged_and_records_every_gap(tmp_path, ray_session):
    """One run of every venue: each new fault kind once per venue, meanwhile two writers and two
    sockets are killed with -9. Books equal the truth, every lost stretch is accounted for by an
    event, nothing that was durable is lost, and each fault did what it says."""
    root = tmp_path / "archive"
    venues = list(VENUES)
    symbols = {v: [VENUES[v].symbols[0]] for v in venues}
    plan = {v: [(k, s) for k, s in steps if (v, k) not in KNOWN_DEFECTS]
            for v, steps in fault_plan(venues, NEW_KINDS, rounds=1).items()}
    record = DurableRecord(root)

    def script(runs):
        by_name = {run.spec.name: run for run in runs}
        targets = kill_targets([by_name["binance"], by_name["bybit"]])
        kills: Counter = Counter()
        killer = threading.Thread(target=lambda: kills.update(kill_loop(targets, 4, 1.5, record)))
        time.sleep(1.0)
        killer.start()
        injected = venue_fault_script(plan, spacing_s=2.0, warmup_s=1.0)(runs)
        killer.join()
        return injected, kills

    report, runs, (injected, kills) = run_with_script(
        sim_settings(root, symbols, "storage.symbols_per_writer=1"), script)
    assert sum(injected.values()) == sum(map(len, plan.values())) >= 29
    assert kills == {"writer": 2, "socket": 2} and sum(report.socket_restarts.values()) == 2
    assert record.rows and record.lost() == 0, "rows that were durable before a kill -9 are missing"
    assert leftover_spools(root) == []
    verdicts = judge_runs(root, runs)
    for run in runs:
        name, v = run.spec.name, verdicts[run.spec.name]
        assert v.books > 100 and v.trades > 30, (name, v.line())
        assert (v.books_wrong, v.trades_wrong, v.unrecorded_gaps) == (0, 0, 0), (name, v.line(), v.examples)
        # F2 (test_fault_findings.py): a frame sent twice is archived twice (a trade, a repeated
        # snapshot, a Hyperliquid l2Book push); each duplicate_frames fault doubles one frame
        duplicated = sum(1 for kind, _ in plan[name] if kind == "duplicate_frames")
        assert v.books_doubled + v.trades_doubled <= duplicated, (name, v.line(), v.examples)
        disconnects = [ev.detail for ev in events_of(root, run) if ev.kind == "disconnect"]
        assert any("1009" in d or "too big" in d for d in disconnects), (name, "oversized frame not refused")
        assert any("stalled feed" in d for d in disconnects), (name, "silence after the ack not noticed")
        restarted = run.server.truth(run.spec.symbols[0]).epochs
        assert v.epochs == 1 + len(restarted), (name, "rows of every venue sequence (restart) archived")


@pytest.mark.ray
def test_a_frozen_writer_is_backpressure_not_loss(tmp_path, ray_session):
    """SIGSTOP the writer for a few seconds, then SIGCONT: the socket stops reading at its bound
    (``max_pending_rows``), nothing is lost, the connection stays up, and every row lands once."""
    root = tmp_path / "archive"
    settings = sim_settings(root, {"binance": ["BTCUSDT"]}, "socket.max_pending_rows=200")
    report, runs, seen = run_with_script(settings, slow_writer_script(stopped_s=5.0))
    assert seen["writer_pid_after"] == seen["writer_pid"], "the frozen writer was restarted, not resumed"
    assert 200 <= seen["peak_pending"] < 400, seen          # the reader waited at the bound
    v = judge_runs(root, runs)["binance"]
    assert v.clean and v.trades_missing == 0 and v.trades > 100, v.line()
    kinds = [ev.kind for ev in events_of(root, runs[0])]
    assert kinds.count("connect") == 1 and kinds.count("disconnect") == 1 and "gap" not in kinds, kinds


@pytest.fixture()
def file_size_limit():
    """Set this process's soft RLIMIT_FSIZE (writes past it fail with EFBIG, as on a full disk)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(nbytes: int | None) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft if nbytes is None else nbytes, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


def test_a_full_disk_holds_rows_at_the_socket_until_space_is_back(tmp_path, file_size_limit):
    """The delivery path (Outbox → SealingWriter → spool) while the disk is full, then freed: calls
    fail and are re-sent, nothing torn stays in the spool, every row is sealed exactly once."""
    import asyncio

    from actors.feed.outbox import Outbox
    from actors.storage.sealing import SealingWriter
    from archive_reading import read_channel
    from writer_fixtures import SYM, T0, call_batches, make_core

    writer = SealingWriter(make_core(tmp_path, rollover_s=3600), grace_ns=0, clock="data")

    async def send(name, producer, seq, batches):
        return await asyncio.to_thread(writer.write, producer, seq, batches)

    async def main() -> Outbox:
        outbox = Outbox("p1", ["w"], send, retry_min_s=0.02, retry_max_s=0.1)
        for i in range(40):
            if i == 10:
                await outbox.drain(30)
                spool = next((tmp_path / ".spool").rglob("*.spool"))
                file_size_limit(spool.stat().st_size + 500)          # the disk fills up
            if i == 30:
                await asyncio.sleep(0.5)
                assert outbox.failures > 0 and outbox.pending_rows > 0
                file_size_limit(None)                                # space is back
            outbox.put("w", call_batches(i * 10, 10, T0 + i * 10_000_000))
            await asyncio.sleep(0.01)
        assert await outbox.drain(30)
        return outbox

    outbox = asyncio.run(main())
    writer.seal_all()
    ids = read_channel(tmp_path, "trades", SYM).column("trade_id").to_pylist()
    assert sorted(map(int, ids)) == list(range(400)) and outbox.failures > 0
    assert not list((tmp_path / ".spool").rglob("*.spool"))
