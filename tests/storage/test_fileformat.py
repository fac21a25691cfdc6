"""The sealed-file format: one schema per channel, encodings that keep every value exactly.

Ground truth is the rows handed to the writer; they must come back from the loaders bit for
bit, in the record schema, from files of this version and from files written before it (the
old writers live in tests/legacy_formats.py).
"""
from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import pytest

from actors.feed.records import SCHEMAS, SchemaMismatch, StreamBuffers, conform
from actors.restore.loading import read_range
from actors.storage.fileformat import FORMAT_KEY, format_version
from actors.storage.layout import HOUR_NS, NS, StreamKey
from actors.storage.spool import encode_frame, read_frames
from archive_reading import archive_files
from legacy_formats import v1_table, write_legacy
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
                   1 - 2 * (k % 2), "LIQUIDATION" if k % 11 == 0 else None)
        levels = [float(price) - i for i in range(20)]
        sink.book(SYM, ts, exchange, 5_123_107_832_006 + 3 * k, levels, list(rng.random(20)), levels[::-1],
                  [0.5] * 20)
    return sink


def assert_same_values(got: pa.Table, table: pa.Table) -> None:
    """Every column of ``got`` holds ``table``'s values bit for bit (floats by their bits)."""
    for name in table.column_names:
        a, b = got.column(name), table.column(name)
        if pa.types.is_list(b.type):
            assert a.combine_chunks().offsets.equals(b.combine_chunks().offsets), name
            a, b = a.combine_chunks().flatten(), b.combine_chunks().flatten()
        if pa.types.is_floating(b.type):
            assert bits(a.to_pylist()) == bits(b.to_pylist()), name
        else:
            as_plain = pa.int64() if pa.types.is_timestamp(b.type) else b.type
            assert a.cast(as_plain).to_pylist() == b.cast(as_plain).to_pylist(), name


def test_every_value_comes_back_exactly(tmp_path):
    want = {ch: pa.Table.from_batches([b]) for (_, ch), b in awkward_rows().take().items()}
    seal(tmp_path, awkward_rows())
    for ch, table in want.items():
        got = read_range([str(f) for f in archive_files(tmp_path, ch)], ch, T0, END)
        assert got.schema.equals(SCHEMAS[ch])
        assert got.num_rows == table.num_rows == 608
        assert_same_values(got, table)


def test_one_schema_for_every_file(tmp_path):
    """Integer-like ids with ms exchange times, and text ids with ns times: the same file schema."""
    sink = StreamBuffers()
    for k in range(50):
        ts = T0 + k * NS + 123
        sink.trade(SYM, ts, T0 + k * 1_000_000, str(1000 + k), 100.5, 0.25, 1)
        sink.trade(SYM, ts + 600 * NS, ts, f"{k:04x}-sim", 100.5, 0.25, -1)
        sink.book(SYM, ts, T0 + k * 1_000_000, k, [100.0], [1.0], [100.5], [2.0])
    make_core(tmp_path, rollover_s=600).write("p1", 1, sink.take())
    make_core(tmp_path, rollover_s=600).seal_all()
    first, second = archive_files(tmp_path, "trades")
    schemas = [pq.read_schema(f) for f in (first, second)]
    assert schemas[0].remove_metadata().equals(SCHEMAS["trades"])
    assert schemas[1].remove_metadata().equals(SCHEMAS["trades"])
    assert format_version(schemas[0].metadata) == 3
    trades = pq.read_table(first)
    assert trades.column("trade_id").to_pylist() == [str(1000 + k) for k in range(50)]
    assert trades.column("ts_exchange").cast(pa.int64()).to_pylist() == [T0 + k * 1_000_000 for k in range(50)]
    assert trades.column("trade_type").null_count == 50
    assert pq.read_table(second).column("trade_id").to_pylist() == [f"{k:04x}-sim" for k in range(50)]
    meta = pq.ParquetFile(first).metadata.row_group(0)
    names = schemas[0].names
    assert "DELTA_BYTE_ARRAY" in meta.column(names.index("trade_id")).encodings
    assert "DELTA_BINARY_PACKED" in meta.column(names.index("ts_exchange")).encodings
    book = pq.ParquetFile(archive_files(tmp_path, "l2book")[0])
    assert book.schema_arrow.remove_metadata().equals(SCHEMAS["l2book"])
    chunk = book.metadata.row_group(0).column(book.schema_arrow.names.index("seq"))
    assert "DELTA_BINARY_PACKED" in chunk.encodings and chunk.compression == "ZSTD"


def test_ids_that_look_like_integers_keep_their_text(tmp_path):
    ids = ["007", "12", "abc-1", "+5", "9223372036854775808"]
    sink = StreamBuffers()
    for k, trade_id in enumerate(ids):
        sink.trade(SYM, T0 + k, T0 + k, trade_id, 1.0, 1.0, 1)
    seal(tmp_path, sink)
    path = archive_files(tmp_path, "trades")[0]
    assert pq.read_table(path).column("trade_id").to_pylist() == ids
    assert read_range([str(path)], "trades", T0, END).column("trade_id").to_pylist() == ids


@pytest.mark.parametrize("version", [1, 2])
def test_files_written_before_format_3_still_load(tmp_path, version):
    """Format-1 and format-2 files (written by the old writers) load with every value exact."""
    for ch, batch in ((ch, b) for (_, ch), b in awkward_rows().take().items()):
        table = pa.Table.from_batches([batch])
        rel = StreamKey.of("binance", "perp", ch, SYM, 20).relpath(T0)
        write_legacy(tmp_path / rel, table, ch, version)
        stored = pq.read_schema(tmp_path / rel)
        assert format_version(stored.metadata) == version
        if version == 2 and ch == "trades":      # what format 2 did: ints and ms in the file
            assert stored.field("trade_id").type == pa.int64() and "trade_type" not in stored.names
        got = read_range([str(tmp_path / rel)], ch, T0, END)
        assert got.schema.equals(SCHEMAS[ch])
        want = table if ch != "trades" else conform(v1_table(table, ch), ch)   # old files had no trade_type
        assert got.num_rows == want.num_rows == 608
        assert_same_values(got, want)


def test_conform_makes_older_shapes_uniform():
    old = pa.table({"ts_local": pa.array([T0, T0 + 1], pa.timestamp("ns", tz="UTC")),
                    "ts_exchange": pa.array([T0 // 1_000_000, None], pa.timestamp("ms", tz="UTC")),
                    "trade_id": pa.array([5_266_583_935, 7], pa.int64()),
                    "price": [1.5, 2.5], "size": [0.1, 0.2], "side": pa.array([1, -1], pa.int8())})
    got = conform(old, "trades")
    assert got.schema.equals(SCHEMAS["trades"])
    assert got.column("trade_id").to_pylist() == ["5266583935", "7"]
    assert got.column("ts_exchange").cast(pa.int64()).to_pylist() == [T0 // 1_000_000 * 1_000_000, None]
    assert got.column("trade_type").to_pylist() == [None, None]
    assert conform(got, "trades") is got
    with pytest.raises(SchemaMismatch, match="ts_local"):
        conform(old.drop_columns(["ts_local"]), "trades")
    with pytest.raises(SchemaMismatch, match="bogus"):
        conform(old.append_column("bogus", pa.array([1, 2])), "trades")
    with pytest.raises(SchemaMismatch, match="ts_exchange"):      # a value that is no time is refused
        conform(old.set_column(1, "ts_exchange", pa.array(["x", "y"])), "trades")

def test_spool_frames_of_the_older_shape_are_sealed_uniform(tmp_path):
    """A spool written before ``trade_type`` existed (a writer upgraded with rows unsealed)."""
    old = v1_table(pa.Table.from_batches([awkward_rows().take()[(SYM, "trades")]]), "trades")
    frame = encode_frame("p1", 1, 0, 1, {(SYM, "trades"): old.to_batches()[0]})
    core = make_core(tmp_path, rollover_s=3600)
    core.spool(T0).append(frame)
    frames, _, _ = read_frames(core.spools[T0].path)
    assert frames[0].batches[(SYM, "trades")].schema.equals(SCHEMAS["trades"])
    core.spools[T0].close()
    core = make_core(tmp_path, rollover_s=3600)          # recovery reads the old frame
    core.seal_all()
    path = archive_files(tmp_path, "trades")[0]
    assert pq.read_schema(path).remove_metadata().equals(SCHEMAS["trades"])
    assert_same_values(read_range([str(path)], "trades", T0, END), conform(old, "trades"))


def test_a_trade_type_is_kept(tmp_path):
    sink = StreamBuffers()
    for k, kind in enumerate([None, "LIQUIDATION", None, "DELEVERAGE"]):
        sink.trade(SYM, T0 + k, None, str(k), 1.0, 1.0, 1, kind)
    seal(tmp_path, sink)
    path = archive_files(tmp_path, "trades")[0]
    assert pq.read_table(path).column("trade_type").to_pylist() == [None, "LIQUIDATION", None, "DELEVERAGE"]
