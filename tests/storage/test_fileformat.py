"""The sealed-file format: per-column types and encodings that keep every value exactly.

Ground truth is the rows handed to the writer; they must come back from the loaders bit for
bit, in the record schema, from files of this version and from files written before it.
"""
from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actors.feed.records import SCHEMAS, StreamBuffers
from actors.restore.loading import read_range
from actors.storage.fileformat import FORMAT_KEY, format_version
from actors.storage.layout import HOUR_NS, NS, StreamKey
from archive_reading import archive_files
from writer_fixtures import SYM, T0, make_core

END = T0 + HOUR_NS


def seal(tmp_path, sink: StreamBuffers) -> None:
    core = make_core(tmp_path, rollover_s=3600)
    core.write("p1", 1, sink.take())
    core.seal_all()


def bits(values: list[float]) -> list[int]:
    """Floats as their IEEE bit patterns (tells -0.0 from 0.0 and compares NaNs)."""
    return [struct.unpack("<q", struct.pack("<d", v))[0] for v in values]


def awkward_rows() -> StreamBuffers:
    """Trades and books whose values stress exactness: odd floats, ns and ms times, missing times."""
    rng = np.random.default_rng(7)
    awkward = [0.1, 1e-300, -0.0, float("nan"), float("inf"), 61800.3, 2.0 ** 60 + 1.0, 5e-324]
    prices = awkward + list(rng.random(300) * 1e5) + list(np.round(rng.random(300) * 1e5, 1))
    sink = StreamBuffers()
    for k, price in enumerate(prices):
        ts = T0 + k * 1_000_003                                   # ns receive times
        exchange = None if k % 7 == 0 else T0 + k * 1_000_000     # ms exchange times, some missing
        sink.trade(SYM, ts, exchange, str(5_266_583_935 + k * (k % 5)), float(price), float(rng.random()),
                   1 - 2 * (k % 2))
        levels = [float(price) - i for i in range(20)]
        sink.book(SYM, ts, exchange, 5_123_107_832_006 + 3 * k, levels, list(rng.random(20)), levels[::-1],
                  [0.5] * 20)
    return sink


def test_every_value_comes_back_exactly(tmp_path):
    want = {ch: pa.Table.from_batches([b]) for (_, ch), b in awkward_rows().take().items()}
    seal(tmp_path, awkward_rows())
    for ch, table in want.items():
        got = read_range([str(f) for f in archive_files(tmp_path, ch)], ch, T0, END)
        assert got.schema.equals(SCHEMAS[ch])
        assert got.num_rows == table.num_rows == 608
        for name in table.column_names:
            a, b = got.column(name), table.column(name)
            if pa.types.is_list(b.type):
                assert a.combine_chunks().offsets.equals(b.combine_chunks().offsets), name
                a, b = a.combine_chunks().flatten(), b.combine_chunks().flatten()
            if pa.types.is_floating(b.type):
                assert bits(a.to_pylist()) == bits(b.to_pylist()), name
            else:
                assert a.cast(pa.int64() if pa.types.is_timestamp(b.type) else b.type).to_pylist() == \
                    b.cast(pa.int64() if pa.types.is_timestamp(b.type) else b.type).to_pylist(), name


def test_what_a_raw_reader_sees(tmp_path):
    sink = StreamBuffers()
    for k in range(50):
        ts = T0 + k * NS + 123
        sink.trade(SYM, ts, T0 + k * 1_000_000, str(1000 + k), 100.5, 0.25, 1)
        sink.book(SYM, ts, T0 + k * 1_000_000, k, [100.0], [1.0], [100.5], [2.0])
    seal(tmp_path, sink)
    trades = pq.read_table(archive_files(tmp_path, "trades")[0])
    assert format_version(trades.schema.metadata) == 2
    assert trades.schema.field("trade_id").type == pa.int64()
    assert trades.schema.field("ts_exchange").type == pa.timestamp("ms", tz="UTC")
    assert trades.schema.field("ts_local").type == pa.timestamp("ns", tz="UTC")
    assert trades.column("trade_id").to_pylist() == list(range(1000, 1050))
    assert trades.column("price").to_pylist() == [100.5] * 50
    book = pq.ParquetFile(archive_files(tmp_path, "l2book")[0])
    chunk = book.metadata.row_group(0).column(book.schema_arrow.names.index("seq"))
    assert "DELTA_BINARY_PACKED" in chunk.encodings and chunk.compression == "ZSTD"


def test_ids_that_are_not_canonical_integers_stay_text(tmp_path):
    ids = ["007", "12", "abc-1"]
    sink = StreamBuffers()
    for k, trade_id in enumerate(ids):
        sink.trade(SYM, T0 + k, T0 + k, trade_id, 1.0, 1.0, 1)
    seal(tmp_path, sink)
    path = archive_files(tmp_path, "trades")[0]
    assert pq.read_table(path).schema.field("trade_id").type == pa.string()
    assert read_range([str(path)], "trades", T0, END).column("trade_id").to_pylist() == ids
    # a time that is not whole ms keeps ns in the file
    assert pq.read_table(path).schema.field("ts_exchange").type == pa.timestamp("ns", tz="UTC")


def test_files_written_before_versions_still_load(tmp_path):
    """A version-1 file (the record schema itself, pyarrow defaults) loads as it did."""
    sink = StreamBuffers()
    for k in range(10):
        sink.trade(SYM, T0 + k * NS, T0 + k * NS - 5, f"{k}", 10.0 + k, 0.1, -1)
    table = pa.Table.from_batches([sink.take()[(SYM, "trades")]])
    rel = StreamKey("binance", "perp", "trades", SYM).relpath(T0)
    (tmp_path / rel).parent.mkdir(parents=True)
    pq.write_table(table, tmp_path / rel, compression="zstd")
    assert format_version(pq.read_schema(tmp_path / rel).metadata) == 1
    got = read_range([str(tmp_path / rel)], "trades", T0, END)
    assert got.schema.equals(SCHEMAS["trades"]) and got.equals(table)
    assert FORMAT_KEY not in (pq.read_schema(tmp_path / rel).metadata or {})
