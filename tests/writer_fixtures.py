"""Archives built with the real writer core, for tests that are not about the pipeline."""
from __future__ import annotations

from actors.feed.records import StreamBuffers
from actors.storage.catalog import Catalog
from actors.storage.layout import NS
from actors.storage.writer import SymbolStore
from archive_reading import read_channel

T0 = 1_736_100_000 * NS - (1_736_100_000 * NS) % (3600 * NS)   # an hour boundary
SYM = "BTCUSDT"


def make_core(root, rollover_s=10, writer_id="w1"):
    core = SymbolStore(str(root), "binance", "perp", [SYM], 20, rollover_s * NS, writer_id,
                            Catalog(str(root)), node="test")
    core.recover()
    return core


def call_batches(first_id: int, n: int, t_start: int, step_ns: int = 10_000_000):
    """n trades + n books with ids first_id.. at t_start + k*step."""
    sink = StreamBuffers()
    for k in range(n):
        ts = t_start + k * step_ns
        sink.trade(SYM, ts, ts - 5, str(first_id + k), 100.0 + k, 0.5, 1 if k % 2 else -1)
        sink.book(SYM, ts, ts - 5, first_id + k, [100.0, 99.9], [1.0, 2.0], [100.1, 100.2], [3.0, 4.0])
    return sink.take()


def trade_ids(root):
    return read_channel(root, "trades", SYM).column("trade_id").to_pylist()
