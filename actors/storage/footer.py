"""What a sealed file's Parquet footer says about it, and the catalog row rebuilt from it.

A sealed file carries, besides its rows (:mod:`actors.storage.fileformat`):

* ``tickarchive.calls``: the ``(producer, seq)`` write calls whose rows it holds, as
  ``{producer: [[first, last], ...]}`` runs (:func:`encode_calls` / :func:`decode_calls`): sealing
  again after a crash, or handing a spool over, drops the calls a file already holds, so no row
  lands twice;
* ``tickarchive.file``: the node that sealed it, when, and the period's end (sub-hour files);
* ``tickarchive.format``: the file format version.

:func:`describe_file` rebuilds a file's catalog row from its footer alone (``mode=reindex``,
restores, a seal cut short by a crash), reading row-group statistics, never the rows.
"""
from __future__ import annotations

import os
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from actors.storage.catalog import file_record
from actors.storage.integrity import FILE_METADATA, sha256_file
from actors.storage.layout import parse_relpath
from actors.storage.marks import event_marks

CALLS_METADATA = b"tickarchive.calls"


def ranges(seqs: list[int]) -> list[list[int]]:
    """Sorted integers as ``[[first, last], ...]`` runs."""
    out: list[list[int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def encode_calls(calls: set[tuple[str, int]]) -> bytes:
    """``{producer: [[first, last], ...]}`` runs of call sequence numbers."""
    by_producer: dict[str, list[int]] = {}
    for producer, seq in calls:
        by_producer.setdefault(producer, []).append(seq)
    return orjson.dumps({producer: ranges(sorted(seqs)) for producer, seqs in by_producer.items()})


def decode_calls(metadata: dict) -> set[tuple[str, int]]:
    """The calls of a footer's metadata (empty when it lists none)."""
    raw = metadata.get(CALLS_METADATA)
    if not raw:
        return set()
    return {(producer, s) for producer, runs in orjson.loads(raw).items()
            for lo, hi in runs for s in range(lo, hi + 1)}


def calls_in(path: str) -> set[tuple[str, int]]:
    """The calls a sealed file holds (its footer only)."""
    return decode_calls(pq.ParquetFile(path).schema_arrow.metadata or {})


def column_stats(table: pa.Table) -> dict[str, Any]:
    """Rows and min/max of the time columns (ns) of the rows about to be sealed."""
    out: dict[str, Any] = {"rows": table.num_rows}
    for name in ("ts_local", "ts_exchange"):
        if name in table.column_names and table.num_rows:
            mm = pc.min_max(table.column(name).cast(pa.int64()))
            out[f"{name}_min"], out[f"{name}_max"] = mm["min"].as_py(), mm["max"].as_py()
        else:
            out[f"{name}_min"] = out[f"{name}_max"] = None
    return out


def describe_file(root: str, rel: str, source=None, size: int | None = None,
                  sha256: str | None = None) -> dict[str, Any]:
    """The catalog row of a sealed file, rebuilt from its Parquet footer.

    ``source`` is a path or an open random-access file (e.g. a ranged S3 reader); by default
    ``{root}/{rel}``. ``size``/``sha256`` are computed from the local file when not given.
    """
    path = source if source is not None else os.path.join(root, rel)
    pf = pq.ParquetFile(path)
    meta = pf.schema_arrow.metadata or {}
    info = orjson.loads(meta[FILE_METADATA]) if FILE_METADATA in meta else {}
    parsed = parse_relpath(rel)
    stats: dict[str, Any] = {"rows": pf.metadata.num_rows, "row_groups": pf.metadata.num_row_groups}
    names = pf.schema_arrow.names
    for name in ("ts_local", "ts_exchange"):
        lo = hi = None
        if name in names:
            col = names.index(name)
            unit = pf.schema_arrow.field(name).type.unit
            scale = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}[unit]
            for g in range(pf.metadata.num_row_groups):
                st = pf.metadata.row_group(g).column(col).statistics
                if st is None or not st.has_min_max:
                    continue
                gmin, gmax = int(st.min_raw) * scale, int(st.max_raw) * scale   # int64 in the stored unit
                lo = gmin if lo is None else min(lo, gmin)
                hi = gmax if hi is None else max(hi, gmax)
        stats[f"{name}_min"], stats[f"{name}_max"] = lo, hi
    if parsed.stream.channel == "events" and {"channel", "kind"} <= set(names):
        stats["marks"] = event_marks(pf.read(columns=["channel", "kind"]))
    period_end = info.get("period_end") or parsed.period_end_ns
    if size is None:
        size = os.path.getsize(path)
    if sha256 is None:
        sha256 = sha256_file(path)
    rec = file_record(rel, parsed, period_end, stats, size, sha256, info.get("node", ""))
    if info.get("sealed_at"):
        rec["sealed_at"] = info["sealed_at"]
    return rec
