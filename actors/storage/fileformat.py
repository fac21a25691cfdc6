"""How a sealed Parquet file stores each channel's columns, and how they are read back exactly.

Rows live in memory (spool, loaders) in the record schemas of :mod:`actors.feed.records`.
A sealed file (format version 2, ``tickarchive.format`` in the file metadata) stores them
with types and encodings chosen per column, every value kept bit for bit:

| column | stored as | encoding |
|---|---|---|
| ``ts_local`` | ``timestamp[ns, UTC]`` | DELTA_BINARY_PACKED |
| ``ts_exchange`` | ``timestamp[<unit>, UTC]``, the coarsest of ms/us/ns holding every value exactly | DELTA_BINARY_PACKED |
| ``seq``, ``seq_from``, ``seq_to`` | ``int64`` | DELTA_BINARY_PACKED |
| ``trade_id`` | ``int64`` when every id of the file is a canonical decimal integer (Binance, Bybit, ...), else ``string`` | DELTA_BINARY_PACKED / dictionary |
| trade ``price`` | ``float64`` | BYTE_STREAM_SPLIT |
| trade ``size``, ``side`` | ``float64``, ``int8`` | dictionary (sizes repeat) |
| book ``bid_px``... ``ask_sz`` | ``list<float64>`` | plain (zstd finds the rows that repeat) |
| events | as in memory | dictionary |

Pages are compressed with zstd at :data:`ZSTD_LEVEL`. A raw reader (pandas, polars, DuckDB,
pyarrow) sees ordinary columns with the same values; the only differences from the loaders'
schema are ``trade_id`` as an integer and ``ts_exchange`` possibly in ms. Prices and sizes
stay ``float64`` on purpose: scaled integers would be ~25% smaller for books, but a raw reader
would see ticks instead of prices (or slow DECIMAL objects in pandas), and Arrow's
decimal-to-double cast is not correctly rounded.

:func:`from_file` turns what a file holds (version 2, or version 1 files written before,
which are stored exactly in the record schema) back into the record schema: the casts it
makes (integer id to its decimal text, a coarser time unit to ns) are exact.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from actors.feed.records import SCHEMAS

FORMAT_KEY = b"tickarchive.format"
FORMAT_VERSION = 2
ZSTD_LEVEL = 9
_DELTA = "DELTA_BINARY_PACKED"
_TIME_UNITS = (("ms", 1_000_000), ("us", 1_000), ("ns", 1))
_COARSE_TIMES = ("ts_exchange",)      # ts_local stays ns: it is the column every range read filters on


def format_version(metadata: dict | None) -> int:
    """The format version a file's metadata declares (1: written before versions existed)."""
    raw = (metadata or {}).get(FORMAT_KEY)
    return int(raw) if raw else 1


def _coarsest_unit(column: pa.ChunkedArray | pa.Array) -> str:
    """The coarsest time unit that holds every value of an ns timestamp column exactly."""
    values = pc.drop_null(column.cast(pa.int64()))
    for unit, factor in _TIME_UNITS:
        if factor == 1 or len(values) == 0 or pc.all(pc.equal(
                pc.multiply(pc.divide(values, factor), factor), values)).as_py():
            return unit
    return "ns"


def _integer_ids(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | None:
    """The ids as int64 when each one is the canonical decimal text of an int64, else None."""
    try:
        ints = pc.cast(column, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    same = pc.equal(pc.cast(ints, pa.string()), column)      # refuses "007", "+5", " 5"
    return ints if pc.all(same).as_py() is not False else None


def to_file(table: pa.Table, channel: str) -> pa.Table:
    """The rows of ``table`` (record schema of ``channel``) as they are stored in a sealed file."""
    fields, columns = [], []
    for field, column in zip(table.schema, table.columns):
        if field.name in _COARSE_TIMES and pa.types.is_timestamp(field.type):
            stored = pa.timestamp(_coarsest_unit(column), tz=field.type.tz)
            field, column = field.with_type(stored), column.cast(stored)
        elif channel == "trades" and field.name == "trade_id":
            ints = _integer_ids(column)
            if ints is not None:
                field, column = field.with_type(pa.int64()), ints
        fields.append(field)
        columns.append(column)
    return pa.table(columns, schema=pa.schema(fields))


def write_options(channel: str, file_schema: pa.Schema) -> dict[str, Any]:
    """``pyarrow.parquet.ParquetWriter`` keyword arguments for a file of ``channel``."""
    encodings: dict[str, str] = {}
    dictionary: list[str] = []
    for field in file_schema:
        if pa.types.is_integer(field.type) and field.type.bit_width == 64 or pa.types.is_timestamp(field.type):
            encodings[field.name] = _DELTA
        elif channel == "trades" and field.name == "price":
            encodings[field.name] = "BYTE_STREAM_SPLIT"
        elif channel == "trades" or channel == "events":
            dictionary.append(field.name)
    return {"compression": "zstd", "compression_level": ZSTD_LEVEL, "use_dictionary": dictionary,
            "column_encoding": encodings}


def from_file(table: pa.Table, channel: str) -> pa.Table:
    """Columns read from a sealed file (any version) in the record schema of ``channel``.

    ``table`` may hold a subset of the columns; they keep their order.
    """
    schema = SCHEMAS[channel]
    target = pa.schema([schema.field(name) for name in table.column_names])
    columns = [column if column.type == field.type else column.cast(field.type)
               for column, field in zip(table.columns, target)]
    return pa.table(columns, schema=target)


def file_schema_of(channel: str, stored: pa.Schema) -> pa.Schema:
    """The schema a dataset over a file should read it with: its stored types, in record order."""
    names = set(stored.names)
    return pa.schema([stored.field(f.name) if f.name in names else f for f in SCHEMAS[channel]])
