"""The durable per-symbol writer: spool every batch, seal periods into Parquet, record them.

:class:`SymbolWriterCore` is plain logic (no Ray); the ``SymbolWriter`` actor wraps it.

Delivery rules it implements (DESIGN.md "Delivery and failure rules"):

* ``write(producer, seq, batches)`` returns only after the rows are fsynced in the spool of
  their period (``ts_local`` decides the period). Calls carry ``(producer, seq)``; a call at
  or below the producer's durable watermark is a re-send and is dropped, so a batch that
  Ray retries after a writer crash lands once.
* A call whose rows span two periods is written as one part per period. A call is only
  counted once every part is durable: after a crash in the middle of a call, its orphan
  parts are ignored and the producer's retry writes it again.
* Sealing a period writes each stream's rows to a hidden temp file in the final folder,
  fsyncs, computes SHA-256, renames it into place (atomic), records the file in the
  catalog, persists the watermarks and only then deletes the spool. Each file's footer
  lists the calls it holds (``tickarchive.calls``), so sealing again after a crash at any
  step neither loses nor doubles rows; rows that arrive after their period was sealed are
  merged into a new version of the file (logged as a late merge).
* Row groups hold at most five minutes and 65,536 rows, so a time-range read can skip
  most of a file.
"""
from __future__ import annotations

import glob
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from actors.storage.catalog import file_record
from actors.storage.fileformat import FORMAT_KEY, FORMAT_VERSION, from_file, to_file, write_options
from actors.storage.integrity import FILE_METADATA, sha256_file
from actors.storage.layout import NS, StreamKey, parse_relpath
from actors.logs import get_logger
from actors.feed.records import SCHEMAS
from actors.storage.spool import SpoolFile, encode_frame, fsync_dir, read_frames, scan_spool

log = get_logger("writer")

SPOOL_DIR = ".spool"
ROW_GROUP_SPAN_NS = 300 * NS
ROW_GROUP_ROWS = 65_536
CALLS_METADATA = b"tickarchive.calls"
WATERMARKS = "watermarks.json"
MAX_PRODUCERS = 1000
RECENT_TRADE_IDS = 500           # trade ids a writer remembers per symbol (Hyperliquid repeats ~30)


@dataclass
class _Call:
    parts: int
    seen: set[int] = field(default_factory=set)
    periods: set[int] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return len(self.seen) == self.parts


class SymbolWriterCore:
    """Spools, seals and catalogs the streams of one symbol group (see module docstring)."""

    def __init__(self, root: str, exchange: str, market: str, symbols: list[str], depth: int,
                 rollover_ns: int, writer_id: str, catalog: Any, node: str = "") -> None:
        self.root = str(root)
        self.exchange, self.market, self.depth = exchange, market, depth
        self.symbols = set(symbols)
        self.rollover_ns = rollover_ns
        self.writer_id = writer_id
        self.catalog = catalog
        self.node = node
        self.spool_dir = os.path.join(self.root, SPOOL_DIR, writer_id)
        os.makedirs(self.spool_dir, exist_ok=True)
        self.spools: dict[int, SpoolFile] = {}
        self.calls: dict[tuple[str, int], _Call] = {}
        self.watermarks: dict[str, int] = {}
        self.max_ts_local: int | None = None
        self.pending_records: list[dict] = []
        self.recovery: dict[str, Any] = {}
        self.counters = {"rows": 0, "calls": 0, "duplicates": 0, "files": 0, "bytes": 0,
                         "late_merges": 0, "orphan_parts": 0, "rejected": 0}
        self.durable_lag = LagHistogram()
        self.recent_trades: dict[str, deque[str]] = {}

    # -- recovery ------------------------------------------------------------------------
    def recover(self) -> dict[str, Any]:
        """Load the watermarks and every spool left by a previous run.

        Damaged stretches of a spool are skipped (the frames after them are kept) and torn
        tails truncated. Calls that were acknowledged but whose frames are gone are reported
        in ``self.recovery["lost_calls"]`` and written as a ``lost`` event into the archive.
        A missing or unreadable ``watermarks.json`` is rebuilt from the spool frames and the
        footers of the newest sealed files. Never raises for bad files on disk.
        """
        summary: dict[str, Any] = {"spools": 0, "frames": 0, "damaged_bytes": 0, "lost_calls": {}}
        persisted = self._load_watermarks()
        damage: dict[int, list[tuple[int, int]]] = {}       # period -> damaged stretches
        last_ts: dict[int, int] = {}                         # period -> newest ts before damage
        for spool_path in sorted(glob.glob(os.path.join(self.spool_dir, "*.spool"))):
            try:
                period = int(Path(spool_path).stem)
            except ValueError:
                log.error(f"ignoring {spool_path}: not a spool of this writer", extra={"writer": self.writer_id})
                continue
            scan = scan_spool(spool_path)
            if scan.damaged:
                damage[period] = scan.damaged
                summary["damaged_bytes"] += scan.damaged_bytes
                log.error(f"spool {spool_path}: skipped {scan.damaged_bytes} damaged bytes at "
                          f"{', '.join(f'{a}-{b}' for a, b in scan.damaged)} ({len(scan.frames)} valid frames kept)",
                          extra={"writer": self.writer_id})
            self.spools[period] = SpoolFile(spool_path).open(valid_size=scan.valid_end)
            summary["spools"] += 1
            summary["frames"] += len(scan.frames)
            for frame in scan.frames:
                call = self.calls.setdefault(frame.call, _Call(frame.parts))
                call.seen.add(frame.part)
                call.periods.add(period)
                self._see_ts(frame.batches.values())
                self._remember_trades(frame.batches)
                top = _max_ts(frame.batches.values())
                if top is not None:
                    last_ts[period] = max(last_ts.get(period, top), top)
        self.watermarks = dict(persisted)
        newest_complete: dict[str, int] = {}
        for (producer, seq), call in self.calls.items():
            if call.complete:
                newest_complete[producer] = max(newest_complete.get(producer, 0), seq)
        lost: dict[str, list[int]] = {}
        for (producer, seq), call in sorted(self.calls.items()):
            # acknowledged: at or below the saved watermark, or older than a complete call
            # (a producer sends one call at a time, so only its newest can be unacknowledged)
            acknowledged = seq <= persisted.get(producer, 0) or seq < newest_complete.get(producer, 0)
            if acknowledged and not call.complete:
                if damage:
                    lost.setdefault(producer, []).append(seq)
                call.seen = set(range(call.parts))       # keep the parts that are left
            if call.complete and seq > self.watermarks.get(producer, 0):
                self.watermarks[producer] = seq
        if damage:              # a torn tail alone is a call in flight at a crash: nothing lost
            for producer, top in newest_complete.items():
                seen = {seq for (p, seq) in self.calls if p == producer}
                floor = persisted.get(producer, min(seen) - 1)
                lost.setdefault(producer, []).extend(s for s in range(floor + 1, top) if s not in seen)
            summary["lost_calls"] = {p: _ranges(sorted(set(seqs))) for p, seqs in lost.items() if seqs}
            sizes = {period: self.spools[period].size for period in damage}
            inside = {period: stretches for period, stretches in damage.items()
                      if summary["lost_calls"] or any(end < sizes[period] for _, end in stretches)}
            if inside:
                self._record_loss(inside, last_ts, summary["lost_calls"])
        if summary["spools"]:
            log.info(f"recovered {summary['spools']} spool(s), {summary['frames']} frames",
                     extra={"writer": self.writer_id})
        self.recovery = summary
        return summary

    def _load_watermarks(self) -> dict[str, int]:
        """The saved watermarks; rebuilt from the newest sealed files when missing or unreadable."""
        path = os.path.join(self.spool_dir, WATERMARKS)
        if os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    return {str(k): int(v) for k, v in orjson.loads(f.read()).items()}
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError, OSError) as exc:
                aside = f"{path}.corrupt-{time.time_ns()}"
                os.replace(path, aside)
                log.error(f"{path} is unreadable ({exc}); moved to {aside}, rebuilding the watermarks "
                          "from the spool frames and the sealed files", extra={"writer": self.writer_id})
        elif not glob.glob(os.path.join(self.spool_dir, "*.spool")):
            return {}
        return self._watermarks_from_sealed()

    def _watermarks_from_sealed(self) -> dict[str, int]:
        """Highest call per producer in the footers of this writer's newest sealed files."""
        marks: dict[str, int] = {}
        for symbol in sorted(self.symbols):
            for channel in SCHEMAS:
                stream = StreamKey(self.exchange, self.market, channel, symbol,
                                   self.depth if channel == "l2book" else None)
                for path in _newest_sealed(self.root, stream):
                    try:
                        calls = _decode_calls(pq.ParquetFile(path).schema_arrow.metadata or {})
                    except Exception as exc:      # a damaged file: reported by reindex/backup
                        log.warning(f"cannot read the footer of {path}: {exc}", extra={"writer": self.writer_id})
                        continue
                    for producer, seq in calls:
                        marks[producer] = max(marks.get(producer, 0), seq)
        return marks

    def _record_loss(self, damage: dict[int, list[tuple[int, int]]], last_ts: dict[int, int],
                     lost_calls: dict[str, list[list[int]]]) -> None:
        """Write a ``lost`` event per symbol into each damaged period, so the archive says so."""
        from actors.feed.records import StreamBuffers

        calls = "; ".join(f"{p} calls {', '.join(f'{a}-{b}' if a != b else str(a) for a, b in r)}"
                          for p, r in lost_calls.items()) or "no acknowledged call identified"
        seqs = [s for r in lost_calls.values() for pair in r for s in pair]
        for period, stretches in sorted(damage.items()):
            nbytes = sum(b - a for a, b in stretches)
            detail = f"spool damage: {nbytes} bytes unreadable in {len(stretches)} stretch(es); lost {calls}"
            sink = StreamBuffers()
            for symbol in sorted(self.symbols):
                sink.event(symbol, last_ts.get(period, period), "", "lost", detail,
                           min(seqs) if seqs else None, max(seqs) if seqs else None)
            producer = f"recovery-{uuid.uuid4().hex[:12]}"
            self._spool(period).append(encode_frame(producer, 1, 0, 1, sink.take()))
            call = _Call(1, {0}, {period})
            self.calls[(producer, 1)] = call

    def _see_ts(self, batches) -> None:
        top = _max_ts(batches)
        if top is not None and (self.max_ts_local is None or top > self.max_ts_local):
            self.max_ts_local = top

    # -- writes --------------------------------------------------------------------------
    def write(self, producer: str, seq: int, batches: dict[tuple[str, str], pa.RecordBatch]) -> bool:
        """Make one call's rows durable; False when it is a re-send of a durable call."""
        if seq <= self.watermarks.get(producer, 0):
            self.counters["duplicates"] += 1
            return False
        by_period: dict[int, dict[tuple[str, str], pa.RecordBatch]] = {}
        rows = 0
        received: list[np.ndarray] = []
        for (symbol, channel), batch in batches.items():
            if not self._accept(symbol, channel, batch):
                continue
            ts = batch.column("ts_local").cast(pa.int64()).to_numpy()
            received.append(ts)
            periods = ts - ts % self.rollover_ns
            first = int(periods[0])
            if (periods == first).all():
                by_period.setdefault(first, {})[(symbol, channel)] = batch
            else:
                for period in np.unique(periods):
                    mask = pa.array(periods == period)
                    by_period.setdefault(int(period), {})[(symbol, channel)] = batch.filter(mask)
            rows += batch.num_rows
        parts = len(by_period)
        call = _Call(parts)
        for part, period in enumerate(sorted(by_period)):
            self._spool(period).append(encode_frame(producer, seq, part, parts, by_period[period]))
            call.seen.add(part)
            call.periods.add(period)
        if parts:
            self.calls[(producer, seq)] = call
            self.durable_lag.add(time.time_ns(), received)
        self.watermarks[producer] = seq
        self._see_ts(batches.values())
        self._remember_trades(batches)
        self.counters["rows"] += rows
        self.counters["calls"] += 1
        return True

    def _remember_trades(self, batches: dict[tuple[str, str], pa.RecordBatch]) -> None:
        for (symbol, channel), batch in batches.items():
            if channel == "trades" and symbol in self.symbols and batch.schema.equals(SCHEMAS["trades"]):
                ids = batch.column("trade_id").slice(max(0, batch.num_rows - RECENT_TRADE_IDS)).to_pylist()
                recent = self.recent_trades.setdefault(symbol, deque(maxlen=RECENT_TRADE_IDS))
                recent.extend(i for i in ids if i is not None)

    def recent_trade_ids(self, symbol: str) -> list[str]:
        """The newest durable trade ids of ``symbol`` (up to ``RECENT_TRADE_IDS``, oldest first).

        A socket process that Ray restarted seeds its duplicate filter with them: a venue that
        repeats recent trades on subscribe (Hyperliquid) then has them written once. Kept in
        memory and rebuilt from the spools when the writer recovers.
        """
        return list(self.recent_trades.get(symbol, ()))

    def _accept(self, symbol: str, channel: str, batch: pa.RecordBatch) -> bool:
        schema = SCHEMAS.get(channel)
        problem = None
        if symbol not in self.symbols:
            problem = f"symbol {symbol!r} is not one of this writer's ({', '.join(sorted(self.symbols))})"
        elif schema is None:
            problem = f"unknown channel {channel!r}"
        elif not batch.schema.equals(schema):
            problem = f"batch schema does not match the {channel} schema"
        if problem:
            self.counters["rejected"] += batch.num_rows
            log.error(f"rejected {batch.num_rows} rows: {problem}", extra={"writer": self.writer_id})
            return False
        return batch.num_rows > 0

    def _spool(self, period: int) -> SpoolFile:
        spool = self.spools.get(period)
        if spool is None:
            spool = self.spools[period] = SpoolFile(os.path.join(self.spool_dir, f"{period}.spool")).open()
        return spool

    # -- sealing -------------------------------------------------------------------------
    def seal_due(self, now_ns: int, grace_ns: int = 0) -> list[dict]:
        """Seal every period that ended at least ``grace_ns`` before ``now_ns``."""
        due = [p for p in sorted(self.spools) if p + self.rollover_ns + grace_ns <= now_ns]
        return self._seal_periods(due)

    def seal_all(self) -> list[dict]:
        """Seal every open period (end of a finite run)."""
        return self._seal_periods(sorted(self.spools))

    def _seal_periods(self, periods: list[int]) -> list[dict]:
        records: list[dict] = []
        for period in periods:
            records.extend(self._seal_period(period))
        return records

    def _seal_period(self, period: int) -> list[dict]:
        spool = self.spools[period]
        spool.close()
        frames, _, _ = read_frames(spool.path)
        streams: dict[tuple[str, str], list[tuple[tuple[str, int], pa.RecordBatch]]] = {}
        used: set[tuple[str, int, int]] = set()
        for frame in frames:
            call = self.calls.get(frame.call)
            if call is None or not call.complete:
                self.counters["orphan_parts"] += 1
                continue
            ident = (frame.producer, frame.seq, frame.part)
            if ident in used:
                continue
            used.add(ident)
            for key, batch in frame.batches.items():
                streams.setdefault(key, []).append((frame.call, batch))
        sealed = []
        for (symbol, channel), parts in sorted(streams.items()):
            rec = self._seal_stream(symbol, channel, period, parts)
            if rec is not None:
                sealed.append(rec)
        self._commit_catalog(sealed)
        self._save_watermarks()
        os.remove(spool.path)
        fsync_dir(self.spool_dir)
        del self.spools[period]
        for call_id in {f.call for f in frames}:
            call = self.calls.get(call_id)
            if call is not None:
                call.periods.discard(period)
                if not call.periods:
                    del self.calls[call_id]
        return sealed

    def _seal_stream(self, symbol: str, channel: str, period: int,
                     parts: list[tuple[tuple[str, int], pa.RecordBatch]]) -> dict | None:
        stream = StreamKey(self.exchange, self.market, channel, symbol,
                           self.depth if channel == "l2book" else None)
        rel = stream.relpath(period, self.rollover_ns)
        final = os.path.join(self.root, rel)
        schema = SCHEMAS[channel]
        held: set[tuple[str, int]] = set()
        old_table = None
        if os.path.exists(final):
            old = pq.ParquetFile(final)
            held = _decode_calls(old.schema_arrow.metadata or {})
            parts = [(c, b) for c, b in parts if c not in held]
            if not parts:       # sealed before a crash; make sure the catalog knows it
                rec = self.catalog.get(rel) if self.catalog is not None else None
                if rec is None:
                    return self._logged(describe_file(self.root, rel))
                return None
            old_table = from_file(old.read(), channel)
            self.counters["late_merges"] += 1
            log.warning(f"merging {sum(b.num_rows for _, b in parts)} late rows into sealed {rel}",
                        extra={"writer": self.writer_id})
        calls = held | {c for c, _ in parts}
        table = pa.Table.from_batches([b for _, b in parts], schema=schema)
        if old_table is not None:
            table = pa.concat_tables([old_table, table])
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.{uuid.uuid4().hex[:8]}.tmp")
        sealed_at = time.time_ns()
        info = {"node": self.node, "sealed_at": sealed_at, "period_end": period + self.rollover_ns}
        metadata = {CALLS_METADATA: _encode_calls(calls), FILE_METADATA: orjson.dumps(info),
                    FORMAT_KEY: str(FORMAT_VERSION).encode()}
        stats = _write_parquet(tmp, table, channel, metadata)
        os.replace(tmp, final)
        fsync_dir(os.path.dirname(final))
        rec = file_record(rel, parse_relpath(rel), info["period_end"], stats, os.path.getsize(final),
                          sha256_file(final), self.node)
        rec["sealed_at"] = sealed_at
        return self._logged(rec)

    def _logged(self, rec: dict) -> dict:
        self.counters["files"] += 1
        self.counters["bytes"] += rec["bytes"]
        shown = f"{os.path.basename(self.root.rstrip('/'))}/{rec['key']}"
        log.info(f"WRITE {shown} records: {rec['rows']} size: {max(1, round(rec['bytes'] / 1024))} KB",
                 extra={"exchange": self.exchange, "symbol": rec["symbol"], "channel": rec["channel"],
                        "writer": self.writer_id})
        return rec

    def _commit_catalog(self, sealed: list[dict]) -> None:
        records = self.pending_records + sealed
        if not records or self.catalog is None:
            return
        try:
            self.catalog.upsert(records)
            self.pending_records = []
        except Exception as exc:  # files are sealed and safe; retry at the next seal
            self.pending_records = records
            log.error(f"catalog update failed for {len(records)} file(s), will retry: {exc}",
                      extra={"writer": self.writer_id})

    def _save_watermarks(self) -> None:
        if len(self.watermarks) > MAX_PRODUCERS:   # oldest producers (restarted sockets) go first
            keep = sorted(self.watermarks.items(), key=lambda kv: kv[1])[-MAX_PRODUCERS:]
            self.watermarks = dict(keep)
        path = os.path.join(self.spool_dir, WATERMARKS)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(self.watermarks))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # -- introspection -------------------------------------------------------------------
    @property
    def spool_bytes(self) -> int:
        """Bytes in the open spools (rows durable but not sealed yet)."""
        return sum(s.size for s in self.spools.values())

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "open_periods": len(self.spools), "spool_bytes": self.spool_bytes,
                "pending_catalog": len(self.pending_records), "max_ts_local": self.max_ts_local,
                "durable_lag_ms": self.durable_lag.summary()}


class LagHistogram:
    """Receive-to-durable lag of every row (``durable_ns - ts_local``), in log buckets of ~9%.

    Cheap enough for every write call (one vectorised pass over the call's receive times); the
    percentiles are the upper edges of their buckets. With a replay clock the lag is meaningless
    (recorded receive times) and ends in the top bucket.
    """

    STEPS_PER_DOUBLING = 8
    BUCKETS = 8 * 40                     # up to 2**40 microseconds: beyond any real lag

    def __init__(self) -> None:
        self.counts = np.zeros(self.BUCKETS, dtype=np.int64)
        self.max_us = 0

    def add(self, now_ns: int, received: list[np.ndarray]) -> None:
        """Count the rows received at ``received`` (ns arrays) as durable at ``now_ns``."""
        if not received:
            return
        lag_us = np.maximum((now_ns - np.concatenate(received)) // 1000, 0)
        index = np.minimum((np.log2(lag_us + 1) * self.STEPS_PER_DOUBLING).astype(np.int64), self.BUCKETS - 1)
        self.counts += np.bincount(index, minlength=self.BUCKETS)
        self.max_us = max(self.max_us, int(lag_us.max()))

    def percentile(self, q: float) -> float | None:
        """The lag (ms) that ``q`` of the rows stayed within, None before any row."""
        total = int(self.counts.sum())
        if not total:
            return None
        bucket = int(np.searchsorted(np.cumsum(self.counts), q * total))
        return min(2 ** ((bucket + 1) / self.STEPS_PER_DOUBLING) - 1, self.max_us) / 1000

    def summary(self) -> dict[str, float | None]:
        """p50, p99 and max lag in ms."""
        return {"p50": self.percentile(0.5), "p99": self.percentile(0.99),
                "max": self.max_us / 1000 if self.counts.any() else None}


def _max_ts(batches) -> int | None:
    """Newest ``ts_local`` (ns) of some batches, None when they hold no rows."""
    tops = [pc.max(b.column("ts_local").cast(pa.int64())).as_py() for b in batches if b.num_rows]
    return max(tops) if tops else None


def _ranges(seqs: list[int]) -> list[list[int]]:
    """Sorted integers as ``[[first, last], ...]`` runs."""
    out: list[list[int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def _newest_sealed(root: str, stream: StreamKey, count: int = 2) -> list[str]:
    """The ``count`` newest sealed files of a stream (newest month folder that has any)."""
    base = Path(root) / stream.exchange / stream.market / stream.channel
    if not base.is_dir():
        return []
    for month in sorted((p for p in base.glob("[0-9]*/[0-9]*") if p.is_dir()), reverse=True):
        files = sorted(str(p) for p in month.glob(f"{stream.name}_*.parquet"))
        if files:
            return files[-count:]
    return []


def _write_parquet(path: str, table: pa.Table, channel: str, metadata: dict[bytes, bytes]) -> dict[str, Any]:
    """Write the rows in the file format (:mod:`~actors.storage.fileformat`), row groups of at most
    five minutes / 65,536 rows; fsync; return the file stats (of the rows as given)."""
    ts = table.column("ts_local").cast(pa.int64()).to_numpy()
    buckets = ts // ROW_GROUP_SPAN_NS
    cuts = [0, *(np.flatnonzero(np.diff(buckets)) + 1).tolist(), len(ts)]
    groups = 0
    stored = to_file(table, channel).replace_schema_metadata(metadata)
    with pq.ParquetWriter(path, stored.schema, **write_options(channel, stored.schema)) as writer:
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            for start in range(lo, hi, ROW_GROUP_ROWS):
                stop = min(hi, start + ROW_GROUP_ROWS)
                writer.write_table(stored.slice(start, stop - start), row_group_size=ROW_GROUP_ROWS)
                groups += 1
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return {**_column_stats(table), "row_groups": groups}


def _column_stats(table: pa.Table) -> dict[str, Any]:
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
    """The catalog row of a sealed file, rebuilt from its Parquet footer (``mode=reindex``).

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
    period_end = info.get("period_end") or parsed.period_end_ns
    if size is None:
        size = os.path.getsize(path)
    if sha256 is None:
        sha256 = sha256_file(path)
    rec = file_record(rel, parsed, period_end, stats, size, sha256, info.get("node", ""))
    if info.get("sealed_at"):
        rec["sealed_at"] = info["sealed_at"]
    return rec


def _encode_calls(calls: set[tuple[str, int]]) -> bytes:
    """{producer: [[first, last], ...]} ranges of call sequence numbers."""
    by_producer: dict[str, list[int]] = {}
    for producer, seq in calls:
        by_producer.setdefault(producer, []).append(seq)
    return orjson.dumps({producer: _ranges(sorted(seqs)) for producer, seqs in by_producer.items()})


def _decode_calls(metadata: dict) -> set[tuple[str, int]]:
    raw = metadata.get(CALLS_METADATA)
    if not raw:
        return set()
    return {(producer, s) for producer, ranges in orjson.loads(raw).items()
            for lo, hi in ranges for s in range(lo, hi + 1)}
