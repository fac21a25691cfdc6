"""Sealed files written the old ways (formats 1 and 2), for the tests that older files still load
and that ``mode=migrate`` rewrites them: no binary blobs, the old writers themselves.

* format 1: the record schema of its day (trades without ``trade_type``) with pyarrow's zstd
  defaults, no ``tickarchive.format`` key;
* format 2: per-file types: ``trade_id`` int64 when every id of the file is a canonical decimal
  integer, ``ts_exchange`` in the coarsest of ms/us/ns holding every value exactly, delta /
  byte-stream-split / dictionary encodings (the code below is format 2's writer as it was).

Both carry the footer keys the writer always wrote (calls, file info), so the catalog row and
the late-merge bookkeeping of a legacy file work as they did.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from actors.storage.catalog import Catalog
from actors.storage.fileformat import FORMAT_KEY, row_group_cuts
from actors.storage.footer import CALLS_METADATA, describe_file, encode_calls
from actors.storage.integrity import FILE_METADATA
from actors.storage.layout import HOUR_NS, parse_relpath

_TIME_UNITS = (("ms", 1_000_000), ("us", 1_000), ("ns", 1))


def v1_table(table: pa.Table, channel: str) -> pa.Table:
    """Rows in the format-1 record schema (trades had no ``trade_type``)."""
    return table.drop_columns(["trade_type"]) if channel == "trades" and "trade_type" in table.column_names \
        else table


def _coarsest_unit(column) -> str:
    values = pc.drop_null(column.cast(pa.int64()))
    for unit, factor in _TIME_UNITS:
        if factor == 1 or len(values) == 0 or pc.all(pc.equal(
                pc.multiply(pc.divide(values, factor), factor), values)).as_py():
            return unit
    return "ns"


def _integer_ids(column):
    try:
        ints = pc.cast(column, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    same = pc.equal(pc.cast(ints, pa.string()), column)
    return ints if pc.all(same).as_py() is not False else None


def v2_table(table: pa.Table, channel: str) -> pa.Table:
    """Format 2's stored types for these rows (format 2's ``to_file``)."""
    table = v1_table(table, channel)
    fields, columns = [], []
    for field, column in zip(table.schema, table.columns):
        if field.name == "ts_exchange" and pa.types.is_timestamp(field.type):
            stored = pa.timestamp(_coarsest_unit(column), tz=field.type.tz)
            field, column = field.with_type(stored), column.cast(stored)
        elif channel == "trades" and field.name == "trade_id":
            ints = _integer_ids(column)
            if ints is not None:
                field, column = field.with_type(pa.int64()), ints
        fields.append(field)
        columns.append(column)
    return pa.table(columns, schema=pa.schema(fields))


def v2_options(channel: str, schema: pa.Schema) -> dict:
    """Format 2's ``write_options``."""
    encodings, dictionary = {}, []
    for field in schema:
        if pa.types.is_integer(field.type) and field.type.bit_width == 64 or pa.types.is_timestamp(field.type):
            encodings[field.name] = "DELTA_BINARY_PACKED"
        elif channel == "trades" and field.name == "price":
            encodings[field.name] = "BYTE_STREAM_SPLIT"
        elif channel in ("trades", "events"):
            dictionary.append(field.name)
    return {"compression": "zstd", "compression_level": 9, "use_dictionary": dictionary,
            "column_encoding": encodings}


def write_legacy(path: str | Path, table: pa.Table, channel: str, version: int, node: str = "legacy",
                 period_end: int | None = None) -> None:
    """Write ``table`` (record schema) at ``path`` the way format ``version`` (1 or 2) did."""
    if version not in (1, 2):
        raise ValueError(f"legacy format {version}: only 1 and 2")
    stored = v1_table(table, channel) if version == 1 else v2_table(table, channel)
    info = {"node": node, "sealed_at": time.time_ns(), "period_end": period_end}
    metadata = {CALLS_METADATA: encode_calls({(f"legacy-{os.path.basename(str(path))}", 1)}),
                FILE_METADATA: orjson.dumps(info)}
    if version == 2:
        metadata[FORMAT_KEY] = b"2"
    stored = stored.replace_schema_metadata(metadata)
    options = {"compression": "zstd"} if version == 1 else v2_options(channel, stored.schema)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(str(path), stored.schema, **options) as writer:
        for offset, length in row_group_cuts(stored):
            writer.write_table(stored.slice(offset, length), row_group_size=65_536)


def add_legacy_file(root: str | Path, rel: str, table: pa.Table, version: int, catalog: Catalog | None = None,
                    rollover_ns: int = HOUR_NS) -> str:
    """A legacy file at ``root/rel``, recorded in ``catalog`` as sealing did; its path."""
    parsed = parse_relpath(rel)
    path = Path(root) / rel
    write_legacy(path, table, parsed.stream.channel, version, period_end=parsed.period_start_ns + rollover_ns)
    if catalog is not None:
        catalog.upsert([describe_file(str(root), rel)])
    return str(path)
