"""The real Binance USD-M recording (tests/fixtures/real), replayed offline through our client.

Shared by the storage and loading benchmarks: the rows our archiver writes for that recording
(6,547 depth-20 book rows, 21,313 trades), and the raw frames they came from.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402

from actors.feed.records import StreamBuffers  # noqa: E402
from actors.venues import get_venue  # noqa: E402
from actors.venues.base import Endpoints, FetchSnapshot  # noqa: E402
from actors.venues.binance import is_snapshot  # noqa: E402
from actors.venues.sim.recordings import read_recording  # noqa: E402

RECORDING = REPO / "tests" / "fixtures" / "real" / "binance-usdm" / "btcusdt_20240808.gz"
SYMBOL = "BTCUSDT"


def recorded_rows(depth: int = 20) -> dict[str, pa.Table]:
    """channel -> the rows our Binance client makes of the recording (record schemas)."""
    return {channel: pa.Table.from_batches([batch]) for (_, channel), batch in recorded_batches(depth).items()}


def recorded_batches(depth: int = 20) -> dict[tuple[str, str], pa.RecordBatch]:
    """(symbol, channel) -> the rows our Binance client makes of the recording, as the writer receives them."""
    venue = get_venue("binance")
    settings = venue.replay_settings(venue.settings({}), str(RECORDING))
    plan, = venue.plan_connections(settings, Endpoints("ws://x", "http://x"), [SYMBOL], ["l2book", "trades"], depth)
    sink = StreamBuffers()
    client = venue.make_client(plan, settings, sink, depth)
    client.on_connect(0)
    pending: list[FetchSnapshot] = []
    for rec in read_recording(str(RECORDING)):
        if is_snapshot(rec.payload):
            for action in pending:
                client.on_snapshot(action.symbol, rec.payload.encode(), rec.ts_local)
            pending = []
            continue
        pending += [a for a in client.on_frame(rec.payload, rec.ts_local) if isinstance(a, FetchSnapshot)]
    return sink.take()


def archived_payloads() -> list[str]:
    """The raw JSON of every recorded frame that feeds the archive (depth diffs, trades, the snapshot)."""
    return [rec.payload for rec in read_recording(str(RECORDING))
            if "@bookTicker" not in rec.payload[:40]]


def depth_diffs() -> tuple[dict, list[tuple[list, list]]]:
    """The recording's first REST snapshot and the (bids, asks) of every depth diff after it."""
    snapshot, diffs = None, []
    for rec in read_recording(str(RECORDING)):
        if is_snapshot(rec.payload):
            snapshot = snapshot or orjson.loads(rec.payload)
        elif snapshot is not None and '"depthUpdate"' in rec.payload[:80]:
            diff = orjson.loads(rec.payload)["data"]
            if diff["u"] >= snapshot["lastUpdateId"]:
                diffs.append((diff["b"], diff["a"]))
    return snapshot, diffs
