"""How a sealed Parquet file stores each channel, and how files of any version are read back exactly.

Format 3 (``tickarchive.format`` = 3 in the file metadata): **one Arrow schema per channel**, the
record schema of :mod:`actors.feed.records`, in every file of every venue, market and hour. A raw
reader (DuckDB, polars, pyarrow.dataset, pandas) globbing the whole archive sees one type per
column. The storage goals are kept by Parquet encodings, not by types that differ between files:

| column | type | encoding |
|---|---|---|
| ``ts_local``, ``ts_exchange`` | ``timestamp[ns, UTC]`` | DELTA_BINARY_PACKED |
| ``seq``, ``seq_from``, ``seq_to`` | ``int64`` | DELTA_BINARY_PACKED |
| ``trade_id`` | ``string`` (every venue's id as it sent it) | DELTA_BYTE_ARRAY (a run of ids shares its prefix) |
| trade ``price`` | ``float64`` | plain |
| trade ``size``, ``side``, ``trade_type`` | ``float64``, ``int8``, ``string`` (null: a plain trade) | dictionary |
| book ``bid_px``... ``ask_sz`` | ``list<float64>`` | plain (zstd finds the rows that repeat) |
| events | as in memory | dictionary |
| ``derivatives`` values (mark, index, funding, predicted funding, open interest, last price) | ``float64`` | dictionary |
| ``derivatives`` ``next_funding_time`` | ``timestamp[ns, UTC]`` | DELTA_BINARY_PACKED |
| ``liquidations`` ``side``, ``price``, ``size``, ``order_id`` | ``int8``, ``float64``, ``float64``, ``string`` | dictionary |

Pages are compressed with zstd at :data:`ZSTD_LEVEL` (trades at 15: ns exchange times and text ids
cost ~0.4 B/row more than format 2's ms and int64 at level 9, a higher level wins it back); row groups hold at most five minutes and
65,536 rows (:func:`write_sealed`, the one place a sealed file is written: sealing, late merges,
``mode=migrate``). Prices and sizes stay ``float64`` on purpose: scaled integers would be smaller
for books, but a raw reader would see ticks instead of prices.

Older files keep loading: format 2 stored ``trade_id`` as int64 when every id of the file was a
canonical decimal integer, and ``ts_exchange`` in the coarsest exact unit (ms for most venues);
format 1 was the record schema of its day (no ``trade_type``). :func:`from_file` (through
:func:`actors.feed.records.conform`) makes the exact casts back; ``mode=migrate`` rewrites them.
"""
from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actors.feed.records import SCHEMAS, conform
from actors.storage.footer import column_stats
from actors.storage.layout import NS

FORMAT_KEY = b"tickarchive.format"
FORMAT_VERSION = 3
ZSTD_LEVEL = 9
ZSTD_LEVELS = {"trades": 15}     # trades files are small: a higher level costs little and keeps them <= 5 B/row
ROW_GROUP_SPAN_NS = 300 * NS
ROW_GROUP_ROWS = 65_536
_DELTA = "DELTA_BINARY_PACKED"


def format_version(metadata: dict | None) -> int:
    """The format version a file's metadata declares (1: written before versions existed)."""
    raw = (metadata or {}).get(FORMAT_KEY)
    return int(raw) if raw else 1


def file_version(path: str) -> int:
    """The format version of the sealed file at ``path`` (its footer only)."""
    return format_version(pq.read_schema(path).metadata)


def write_options(channel: str) -> dict[str, Any]:
    """``pyarrow.parquet.ParquetWriter`` keyword arguments for a format-3 file of ``channel``."""
    encodings: dict[str, str] = {}
    dictionary: list[str] = []
    for field in SCHEMAS[channel]:
        if pa.types.is_integer(field.type) and field.type.bit_width == 64 or pa.types.is_timestamp(field.type):
            encodings[field.name] = _DELTA
        elif channel == "trades" and field.name == "trade_id":
            encodings[field.name] = "DELTA_BYTE_ARRAY"
        elif channel == "trades" and field.name == "price":
            encodings[field.name] = "PLAIN"
        elif channel in ("trades", "events", "derivatives", "liquidations"):
            dictionary.append(field.name)      # derivatives: funding, index, open interest repeat row to row
    return {"compression": "zstd", "compression_level": ZSTD_LEVELS.get(channel, ZSTD_LEVEL),
            "use_dictionary": dictionary, "column_encoding": encodings}


def row_group_cuts(table: pa.Table) -> list[tuple[int, int]]:
    """``(offset, length)`` of each row group: at most five minutes of ``ts_local`` and 65,536 rows."""
    ts = table.column("ts_local").cast(pa.int64()).to_numpy()
    buckets = ts // ROW_GROUP_SPAN_NS
    cuts = [0, *(np.flatnonzero(np.diff(buckets)) + 1).tolist(), len(ts)]
    return [(start, min(hi, start + ROW_GROUP_ROWS) - start)
            for lo, hi in zip(cuts[:-1], cuts[1:]) for start in range(lo, hi, ROW_GROUP_ROWS)]


def temp_path(final: str) -> str:
    """A hidden temp file beside ``final`` (same folder, so the rename into place is atomic)."""
    return os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.{uuid.uuid4().hex[:8]}.tmp")


def write_sealed(path: str, table: pa.Table, channel: str, metadata: dict[bytes, bytes]) -> dict[str, Any]:
    """Write rows of ``channel`` (any older shape is conformed) as a format-3 file at ``path`` and
    fsync it; the caller renames it into place. Returns the file stats (rows, time bounds, row
    groups) for its catalog row. ``metadata`` is the footer's (the format version is set here)."""
    stored = conform(table, channel).replace_schema_metadata({**metadata,
                                                              FORMAT_KEY: str(FORMAT_VERSION).encode()})
    cuts = row_group_cuts(stored)
    with pq.ParquetWriter(path, stored.schema, **write_options(channel)) as writer:
        for offset, length in cuts:
            writer.write_table(stored.slice(offset, length), row_group_size=ROW_GROUP_ROWS)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return {**column_stats(stored), "row_groups": len(cuts)}


def from_file(table: pa.Table, channel: str) -> pa.Table:
    """Columns read from a sealed file (any version) in the record schema of ``channel``.

    ``table`` may hold a subset of the columns; they keep their order.
    """
    names = table.column_names
    out = conform(table, channel, names)
    return out if out.column_names == names else out.select(names)


def file_schema_of(channel: str, stored: pa.Schema) -> pa.Schema:
    """The schema a dataset over a file should read it with: its stored types, in record order
    (a column the file lacks, e.g. ``trade_type`` before format 3, reads as null)."""
    names = set(stored.names)
    return pa.schema([stored.field(f.name) if f.name in names else f for f in SCHEMAS[channel]])
