"""The operator's terminal: a short plain console on a non-TTY, every log line in files, the live table."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from actors.cli.console import Snapshot, status_line, status_table
from actors.feed.venue_feed import VenueFeedStats
from actors.storage.writer import WriterStats
from conftest import REPO


def snapshot(at, frames, rows, files, connected=(True,), connects=1, backlog=0):
    return Snapshot(at=at, venues={"binance": VenueFeedStats(frames=frames, sent_rows=rows, connected=list(connected),
                                                             connects=connects, lag_s=0.004, pending_rows=12)},
                    writers=[WriterStats(rows=rows, files=files, spool_bytes=2_500_000)], backup={"backlog": backlog})


def test_shards_of_a_venue_merge_into_one_line():
    """A venue served by two socket processes: counters summed, connections joined, the larger lag."""
    a = VenueFeedStats(producer="p1", frames=100, sent_rows=90, connected=[True], connects=1, lag_s=0.002)
    b = VenueFeedStats(producer="p2", frames=50, sent_rows=40, connected=[False], connects=2, lag_s=None,
                       refused=["HTTP 400"], pending_rows=7)
    merged = VenueFeedStats.merged([a, b], pids=[11, 12])
    assert (merged.frames, merged.sent_rows, merged.connects, merged.pending_rows) == (150, 130, 3, 7)
    assert merged.connected == [True, False] and merged.refused == ["HTTP 400"] and merged.lag_s == 0.002
    assert merged.producer == "p1" and merged.pids == [11, 12] and merged.to_dict()["frames"] == 150
    line = status_line(Snapshot(at=1.0, venues={"binance": merged}), None)
    assert "binance 1/2 0 msg/s lag 2ms reconnects 1" in line


def test_status_line_and_table_show_rates_and_state():
    before, now = snapshot(100.0, 1_000, 900, 3), snapshot(110.0, 21_000, 20_900, 9, connects=3, backlog=2)
    line = status_line(now, before)
    assert "binance 1/1 2000 msg/s lag 4ms reconnects 2" in line
    assert "writers 1: 2000 rows/s, spool 2.5 MB, 9 files sealed, backup backlog 2" in line
    from rich.console import Console
    console = Console(width=120, record=True)
    console.print(status_table(now, before))
    text = console.export_text()
    assert "binance" in text and "2,000" in text and "9 files sealed" in text


@pytest.mark.ray
def test_plain_console_is_short_and_the_log_files_hold_the_details(tmp_path, ray_cluster, ray_session):
    import ray

    root = tmp_path / "archive"
    others = [f"archive.{v}=[]" for v in ("bybit", "hyperliquid", "okx", "woox", "paradex")]
    proc = subprocess.run(
        [sys.executable, "launch.py", "source=sim", "duration_s=6", "storage.rollover=2s", "storage.seal_grace=0.3s",
         "archive.binance=[BTCUSDT,ETHUSDT]", *others, f"storage.root={root}", f"ray.address={ray_cluster['address']}",
         "log.status_every=2s"], cwd=REPO, capture_output=True, text=True, timeout=300)
    try:
        ray.kill(ray.get_actor("restore", namespace="tickarchive"))     # detached: not left to later tests
    except ValueError:
        pass
    assert proc.returncode == 0, proc.stderr
    console = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    assert len(console) <= 40, "\n".join(console)
    assert proc.stdout.strip().splitlines()[-1].startswith("archived "), proc.stdout
    assert not any("WRITE " in line or line.startswith("{") for line in console), "file lines leaked to the console"
    assert sum(" msg/s" in line for line in console) >= 2, "no periodic status line"
    written = [json.loads(line) for f in (root / "logs").glob("writer_*.log") for line in f.read_text().splitlines()]
    writes = [rec for rec in written if rec["message"].startswith("WRITE ")]
    assert writes and all(rec["time"].endswith("Z") and len(rec["time"]) == 24 for rec in writes)
    assert {rec["symbol"] for rec in writes} == {"BTCUSDT", "ETHUSDT"} and all(rec["exchange"] == "binance" for rec in writes)
    summary = json.loads((root / "logs" / "archival.log").read_text().splitlines()[-1])
    assert summary["message"].startswith("archived ")
