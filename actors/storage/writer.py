"""The durable per-symbol writer: spool every batch, seal periods into Parquet, record them.

:class:`SymbolStore` is plain logic (no Ray); the ``WriterProcess`` actor holds many.
Recovery after a crash is :mod:`actors.storage.recovery`, the footer a file carries is
:mod:`actors.storage.footer`, the seal journal :mod:`actors.storage.journal`.

Delivery rules it implements (docs/durability.md):

* ``write(producer, seq, batches)`` returns only after the rows are fsynced in the spool of
  their period (``ts_local`` decides the period). Calls carry ``(producer, seq)``; a call at
  or below the producer's durable watermark is a re-send and is dropped, so a batch that
  Ray retries after a writer crash lands once.
* A call whose rows span two periods is written as one part per period. A call is only
  counted once every part is durable: after a crash in the middle of a call, its orphan
  parts are ignored and the producer's retry writes it again.
* Sealing a period writes each stream's rows to a hidden temp file in the final folder,
  fsyncs, computes SHA-256, names the file in the seal journal, renames it into place
  (atomic), records it in the catalog, persists the watermarks and only then deletes the
  spool. Each file's footer lists the calls it holds, so sealing again after a crash at any
  step neither loses nor doubles rows; rows that arrive after their period was sealed are
  merged into a new version of the file (logged as a late merge).
* Row groups hold at most five minutes and 65,536 rows, so a time-range read can skip
  most of a file.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from actors.feed.records import SCHEMAS, SchemaMismatch, conform
from actors.logs import get_logger
from actors.storage.catalog import file_record
from actors.storage.fileformat import (ROW_GROUP_ROWS, ROW_GROUP_SPAN_NS, from_file,  # noqa: F401 (re-exported)
                                       temp_path, write_sealed)
from actors.storage.footer import CALLS_METADATA, calls_in, describe_file, encode_calls
from actors.storage.integrity import FILE_METADATA, sha256_file
from actors.storage.journal import SealJournal
from actors.storage.lag import LagHistogram
from actors.storage.marks import event_marks
from actors.storage.layout import StreamKey, parse_relpath
from actors.storage.recovery import Call, max_ts, recover, save_watermarks
from actors.storage.spool import SpoolFile, encode_frame, fsync_dir, read_frames

log = get_logger("writer")

SPOOL_DIR = ".spool"
RECENT_TRADE_IDS = 500           # trade ids a writer remembers per symbol (Hyperliquid repeats ~30)


@dataclass
class WriterStats:
    """Counters of one :class:`SymbolStore`, or of a writer process's stores together
    (:meth:`summed`: counters added, the newest ``max_ts_local``, the worst durable lag per
    percentile; ``recovered_spools`` and ``symbols`` are set there, ``pid`` and ``node`` by the actor).
    Travels through Ray as is; :meth:`to_dict` for JSON."""

    rows: int = 0
    calls: int = 0
    duplicates: int = 0              # re-sent calls dropped (already durable)
    files: int = 0
    bytes: int = 0
    late_merges: int = 0
    orphan_parts: int = 0
    rejected: int = 0                # rows whose batch did not fit the channel's schema
    open_periods: int = 0
    spool_bytes: int = 0
    pending_catalog: int = 0         # sealed files the catalog has not committed yet
    max_ts_local: int | None = None
    durable_lag_ms: dict[str, float | None] = field(default_factory=dict)   # p50 / p99 / max
    recovered_spools: int = 0
    symbols: int = 0
    pid: int | None = None
    node: str | None = None

    COUNTERS = ("rows", "calls", "duplicates", "files", "bytes", "late_merges", "orphan_parts", "rejected")
    SUMMED = COUNTERS + ("open_periods", "spool_bytes", "pending_catalog", "recovered_spools")

    @classmethod
    def summed(cls, parts: list["WriterStats"], **extra: Any) -> "WriterStats":
        """Several stores' stats as one writer's (``extra``: fields to set, e.g. ``symbols``)."""
        out = cls(**extra)
        for part in parts:
            for name in cls.SUMMED:
                setattr(out, name, getattr(out, name) + getattr(part, name))
            if part.max_ts_local is not None:
                out.max_ts_local = max(out.max_ts_local or part.max_ts_local, part.max_ts_local)
            for k, v in part.durable_lag_ms.items():
                if v is not None:
                    out.durable_lag_ms[k] = max(v, out.durable_lag_ms.get(k) or v)
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SymbolStore:
    """The durable store of one symbol group: its spools, watermarks, seal journal and sealed files;
    it writes, seals and catalogs (see module docstring)."""

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
        self.journal = SealJournal(self.spool_dir)
        self.spools: dict[int, SpoolFile] = {}
        self.calls: dict[tuple[str, int], Call] = {}
        self.watermarks: dict[str, int] = {}
        self.max_ts_local: int | None = None
        self.pending_records: list[dict] = []
        self.recovery: dict[str, Any] = {}
        self.counters = dict.fromkeys(WriterStats.COUNTERS, 0)
        self.durable_lag = LagHistogram()
        self.recent_trades: dict[str, deque[str]] = {}

    def streams(self) -> list[StreamKey]:
        """Every stream this core writes (each symbol's channels)."""
        return [StreamKey.of(self.exchange, self.market, channel, symbol, self.depth)
                for symbol in sorted(self.symbols) for channel in SCHEMAS]

    def recover(self) -> dict[str, Any]:
        """Load the watermarks, every spool and the seal journal left by a previous run
        (:func:`actors.storage.recovery.recover`)."""
        self.recovery = recover(self)
        return self.recovery

    def see(self, batches: dict[tuple[str, str], pa.RecordBatch]) -> None:
        """Note the newest receive time and trade ids of batches made durable (or recovered)."""
        top = max_ts(batches.values())
        if top is not None and (self.max_ts_local is None or top > self.max_ts_local):
            self.max_ts_local = top
        for (symbol, channel), batch in batches.items():
            if channel == "trades" and symbol in self.symbols and batch.schema.equals(SCHEMAS["trades"]):
                ids = batch.column("trade_id").slice(max(0, batch.num_rows - RECENT_TRADE_IDS)).to_pylist()
                recent = self.recent_trades.setdefault(symbol, deque(maxlen=RECENT_TRADE_IDS))
                recent.extend(i for i in ids if i is not None)

    # -- writes --------------------------------------------------------------------------
    def write(self, producer: str, seq: int, batches: dict[tuple[str, str], pa.RecordBatch]) -> bool:
        """Make one call's rows durable; False when it is a re-send of a durable call."""
        if seq <= self.watermarks.get(producer, 0):
            self.counters["duplicates"] += 1
            return False
        by_period: dict[int, dict[tuple[str, str], pa.RecordBatch]] = {}
        rows = 0
        received: list[np.ndarray] = []
        accepted: dict[tuple[str, str], pa.RecordBatch] = {}
        for (symbol, channel), batch in batches.items():
            batch = self._accept(symbol, channel, batch)
            if batch is None:
                continue
            accepted[(symbol, channel)] = batch
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
        call = Call(parts)
        for part, period in enumerate(sorted(by_period)):
            self.spool(period).append(encode_frame(producer, seq, part, parts, by_period[period]))
            call.seen.add(part)
            call.periods.add(period)
        if parts:
            self.calls[(producer, seq)] = call
            self.durable_lag.add(time.time_ns(), received)
        self.watermarks[producer] = seq
        self.see(accepted)
        self.counters["rows"] += rows
        self.counters["calls"] += 1
        return True

    def recent_trade_ids(self, symbol: str) -> list[str]:
        """The newest durable trade ids of ``symbol`` (up to ``RECENT_TRADE_IDS``, oldest first).

        A socket process that Ray restarted seeds its duplicate filter with them: a venue that
        repeats recent trades on subscribe (Hyperliquid) then has them written once. Kept in
        memory and rebuilt from the spools when the writer recovers.
        """
        return list(self.recent_trades.get(symbol, ()))

    def _accept(self, symbol: str, channel: str, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """The batch in its channel's record schema (an older client's shape is conformed), or None
        when it is empty or refused (logged and counted)."""
        problem = None
        if symbol not in self.symbols:
            problem = f"symbol {symbol!r} is not one of this writer's ({', '.join(sorted(self.symbols))})"
        elif channel not in SCHEMAS:
            problem = f"unknown channel {channel!r}"
        else:
            try:
                batch = conform(batch, channel)
            except SchemaMismatch as exc:
                problem = f"batch schema does not match the {channel} schema ({exc})"
        if problem:
            self.counters["rejected"] += batch.num_rows
            log.error(f"rejected {batch.num_rows} rows: {problem}", extra={"writer": self.writer_id})
            return None
        return batch if batch.num_rows > 0 else None

    def spool(self, period: int) -> SpoolFile:
        """The open spool of a period (created on first use)."""
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
        self.commit_catalog(sealed)
        save_watermarks(self)
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
        stream = StreamKey.of(self.exchange, self.market, channel, symbol, self.depth)
        rel = stream.relpath(period, self.rollover_ns)
        final = os.path.join(self.root, rel)
        schema = SCHEMAS[channel]
        held: set[tuple[str, int]] = set()
        old_table = None
        if os.path.exists(final):
            held = calls_in(final)
            parts = [(c, b) for c, b in parts if c not in held]
            if not parts:       # sealed before a crash; make sure the catalog knows it
                if self.catalog is not None and self.catalog.get(rel) is None:
                    return self._logged(describe_file(self.root, rel))
                return None
            old_table = from_file(pq.ParquetFile(final).read(), channel)
            self.counters["late_merges"] += 1
            log.warning(f"merging {sum(b.num_rows for _, b in parts)} late rows into sealed {rel}",
                        extra={"writer": self.writer_id})
        calls = held | {c for c, _ in parts}
        table = pa.Table.from_batches([b for _, b in parts], schema=schema)
        if old_table is not None:
            table = pa.concat_tables([old_table, table])
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = temp_path(final)
        sealed_at = time.time_ns()
        info = {"node": self.node, "sealed_at": sealed_at, "period_end": period + self.rollover_ns}
        metadata = {CALLS_METADATA: encode_calls(calls), FILE_METADATA: orjson.dumps(info)}
        stats = write_sealed(tmp, table, channel, metadata)
        if channel == "events":
            stats["marks"] = event_marks(table)
        rec = file_record(rel, parse_relpath(rel), info["period_end"], stats, os.path.getsize(tmp),
                          sha256_file(tmp), self.node)
        rec["sealed_at"] = sealed_at
        self.journal.add([rec])                 # named before it exists: no crash leaves it uncatalogued
        os.replace(tmp, final)
        fsync_dir(os.path.dirname(final))
        return self._logged(rec)

    def _logged(self, rec: dict) -> dict:
        self.counters["files"] += 1
        self.counters["bytes"] += rec["bytes"]
        shown = f"{os.path.basename(self.root.rstrip('/'))}/{rec['key']}"
        log.info(f"WRITE {shown} records: {rec['rows']} size: {max(1, round(rec['bytes'] / 1024))} KB",
                 extra={"exchange": self.exchange, "symbol": rec["symbol"], "channel": rec["channel"],
                        "writer": self.writer_id})
        return rec

    def commit_catalog(self, sealed: list[dict] | None = None) -> None:
        """Record sealed files (and rows left from an earlier failure or crash) in the catalog; the
        journal forgets them once committed. A failure keeps them for the next seal."""
        records = self.pending_records + list(sealed or [])
        if not records or self.catalog is None:
            return
        try:       # a catalog commits now; a round's buffer (sealing.CatalogBuffer) when the round ends
            self.catalog.upsert(records, on_committed=self.journal.done)
            self.pending_records = []
        except Exception as exc:  # files are sealed and safe; retry at the next seal
            self.pending_records = records
            log.error(f"catalog update failed for {len(records)} file(s), will retry: {exc}",
                      extra={"writer": self.writer_id})

    # -- introspection -------------------------------------------------------------------
    @property
    def spool_bytes(self) -> int:
        """Bytes in the open spools (rows durable but not sealed yet)."""
        return sum(s.size for s in self.spools.values())

    def stats(self) -> WriterStats:
        """This store's counters, open spools, pending catalog rows and durable lag."""
        return WriterStats(**self.counters, open_periods=len(self.spools), spool_bytes=self.spool_bytes,
                           pending_catalog=len(self.pending_records) + len(self.journal.records),
                           max_ts_local=self.max_ts_local, durable_lag_ms=self.durable_lag.summary())

