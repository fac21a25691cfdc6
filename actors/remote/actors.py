"""Thin Ray actors: they own state, schedules and messaging, and call the plain logic.

* :class:`ExchangeSocket` (async actor, one per venue): runs the venue's connections
  (``actors.feed``), buffers normalized rows per stream, and every ``flush_ms`` sends one
  batch call per writer. At most one call per writer is in flight, so batches arrive in
  order and a re-sent batch (Ray retries calls after a writer restart) carries the same
  ``(producer, seq)``, which the writer drops if it was already durable. Rows waiting for a
  slow writer are bounded by ``max_pending_rows``: past it the socket stops reading.
* :class:`SymbolWriter` (one per exchange+market+symbol group): spools every batch durably
  before acknowledging, seals periods into Parquet and records them in the catalog. It is
  restarted by Ray after a crash and recovers its spools.
"""
from __future__ import annotations

import asyncio
import os
import socket as socketlib
import threading
import time
import uuid
from typing import Any

import pyarrow as pa
import ray
from ray.util.metrics import Counter, Gauge

from actors.storage.catalog import Catalog
from actors.venues import get_venue
from actors.feed.connection import FeedConnection, FeedOptions
from actors.logs import get_logger, setup_logging
from actors.feed.records import StreamBuffers
from actors.venues.base import ConnectionPlan
from actors.storage.writer import SymbolWriterCore

NAMESPACE = "tickarchive"


def root_cause(exc: BaseException) -> str:
    """``Type: message`` of the exception a Ray error wraps (the part a user can act on)."""
    cause = getattr(exc, "cause", None)
    inner = cause if isinstance(cause, BaseException) else exc
    text = " ".join(str(inner).split()) or type(inner).__name__
    return f"{type(inner).__name__}: {text}"[:1000]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class SymbolWriter:
    """Durable per-symbol writer (see module docstring)."""

    def __init__(self, root: str, exchange: str, market: str, symbols: list[str], depth: int,
                 rollover_ns: int, seal_grace_ns: int, writer_id: str, clock: str = "wall",
                 log_level: str = "INFO") -> None:
        setup_logging(log_level)
        self.log = get_logger("writer")
        self.exchange, self.clock, self.grace = exchange, clock, seal_grace_ns
        self.lock = threading.Lock()
        self.core = SymbolWriterCore(root, exchange, market, list(symbols), depth, rollover_ns,
                                     writer_id, Catalog(root), node=socketlib.gethostname())
        self.recovered = self.core.recover()
        tags = ("exchange", "channel")
        self.rows_metric = Counter("tickarchive_rows_written", "rows made durable", tag_keys=tags)
        self.files_metric = Counter("tickarchive_files_sealed", "Parquet files sealed", tag_keys=tags)
        self.bytes_metric = Counter("tickarchive_bytes_sealed", "Parquet bytes sealed", tag_keys=tags)
        self.spool_metric = Gauge("tickarchive_spool_bytes", "bytes in open spools", tag_keys=("writer",))
        self.writer_id = writer_id
        self._stop = threading.Event()
        if clock == "wall":
            threading.Thread(target=self._seal_timer, daemon=True, name="seal-timer").start()
        else:
            with self.lock:
                self._seal(self.core.max_ts_local)

    def _seal_timer(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                self._seal(time.time_ns())

    def _seal(self, now_ns: int | None) -> list[dict]:
        if now_ns is None:
            return []
        try:
            return self._count_sealed(self.core.seal_due(now_ns, self.grace))
        except Exception as exc:  # keep serving; the spool stays and sealing is retried
            self.log.error(f"seal failed: {exc}", extra={"exchange": self.exchange, "writer": self.writer_id})
            return []

    def _count_sealed(self, sealed: list[dict]) -> list[dict]:
        if sealed:
            self._poke_backup()
        for rec in sealed:
            tags = {"exchange": rec["exchange"], "channel": rec["channel"]}
            self.files_metric.inc(1.0, tags=tags)
            self.bytes_metric.inc(float(rec["bytes"]), tags=tags)
        return sealed

    def _poke_backup(self) -> None:
        """Tell this node's backup actor (if any) that files were sealed."""
        from actors.remote.backup import poke_backup
        poke_backup()

    def write(self, producer: str, seq: int, batches: dict[tuple[str, str], pa.RecordBatch]) -> bool:
        """Make the batches durable, then acknowledge; False for an already-durable re-send."""
        with self.lock:
            try:
                fresh = self.core.write(producer, seq, batches)
            except OSError as exc:     # disk full, I/O error: the socket keeps the rows and re-sends
                self.log.error(f"write failed, rows kept by the socket and re-sent: {exc}",
                               extra={"exchange": self.exchange, "writer": self.writer_id})
                raise
            if self.clock == "data":
                self._seal(self.core.max_ts_local)
        if fresh:
            for (_, channel), batch in batches.items():
                self.rows_metric.inc(float(batch.num_rows), tags={"exchange": self.exchange, "channel": channel})
        return fresh

    def seal_all(self) -> list[dict]:
        """Seal every open period (end of a finite run)."""
        with self.lock:
            return self._count_sealed(self.core.seal_all())

    def seal_due(self, now_ns: int | None = None) -> list[dict]:
        """Seal the periods that are over by ``now_ns`` (default: the writer's own clock)."""
        with self.lock:
            if now_ns is None:
                now_ns = time.time_ns() if self.clock == "wall" else self.core.max_ts_local
            return self._seal(now_ns)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            stats = self.core.stats()
        self.spool_metric.set(float(stats.get("spool_bytes", 0)), tags={"writer": self.writer_id})
        return {**stats, "pid": os.getpid(), "recovered": self.recovered}

    def pid(self) -> int:
        return os.getpid()


@ray.remote(num_cpus=0, max_restarts=-1)
class ExchangeSocket:
    """Owns one venue's websockets; forwards Arrow batches to the writers (see module docstring)."""

    def __init__(self, venue: str, venue_cfg: dict, plans: list[ConnectionPlan], depth: int,
                 writers: dict[str, Any], writer_of: dict[str, str], socket_cfg: dict,
                 replay_clock: bool = False, log_level: str = "INFO") -> None:
        setup_logging(log_level)
        self.log = get_logger("socket")
        self.venue, self.venue_cfg, self.plans, self.depth = venue, venue_cfg, plans, depth
        self.writers, self.writer_of = writers, writer_of
        self.flush_s = float(socket_cfg.get("flush_ms", 200)) / 1000.0
        self.max_pending = int(socket_cfg.get("max_pending_rows", 200_000))
        self.options = FeedOptions(
            replay_clock=replay_clock,
            backoff_min_s=float(socket_cfg.get("backoff_min_s", 0.5)),
            backoff_max_s=float(socket_cfg.get("backoff_max_s", 30)),
            idle_timeout_s=float(socket_cfg.get("idle_timeout_s", 60)),
            tags={"exchange": venue})
        self.producer = f"{venue}-{uuid.uuid4().hex[:12]}"
        self.buffers = StreamBuffers()
        self.outbox: dict[str, list[dict]] = {name: [] for name in set(writer_of.values())}
        self.outbox_rows: dict[str, int] = {name: 0 for name in self.outbox}
        self.sending: dict[str, asyncio.Task] = {}
        self.seq: dict[str, int] = {name: 0 for name in self.outbox}
        self.sent_rows = 0
        self.connections: list[FeedConnection] = []
        self.tasks: list[asyncio.Task] = []
        self.stop_event: asyncio.Event | None = None
        self.frames_metric = Counter("tickarchive_frames", "websocket frames received", tag_keys=("exchange",))
        self.events_metric = Counter("tickarchive_events", "feed events (connect, gap, resync, ...)",
                                     tag_keys=("exchange", "kind"))
        self.lag_metric = Gauge("tickarchive_feed_lag_seconds", "ts_local - ts_exchange of the newest row",
                                tag_keys=("exchange",))
        self._frames_reported = 0

    async def ensure_started(self) -> bool:
        """Start the connections and the flush loop once (idempotent; also after a restart)."""
        if self.stop_event is not None:
            return False
        self.stop_event = asyncio.Event()
        venue = get_venue(self.venue)
        if ray.get_runtime_context().was_current_actor_reconstructed:
            now = time.time_ns()
            for symbol in self.writer_of:
                self.buffers.event(symbol, now, "", "gap", "socket process restarted: rows received but not yet "
                                   "handed to the writers were lost; books are resynced from fresh snapshots")
            self.log.error(f"socket process restarted; recorded a gap for {len(self.writer_of)} symbol(s)",
                           extra={"exchange": self.venue})
        for plan in self.plans:
            client = venue.make_client(plan, self.venue_cfg, self.buffers, self.depth)
            conn = FeedConnection(plan, client, self.options, gate=self._gate)
            self.connections.append(conn)
            self.tasks.append(asyncio.ensure_future(conn.run(self.stop_event)))
        self.tasks.append(asyncio.ensure_future(self._flush_loop()))
        self.log.info(f"started {len(self.plans)} connection(s)", extra={"exchange": self.venue})
        return True

    def _pending_rows(self) -> int:
        return self.buffers.rows + sum(self.outbox_rows.values())

    async def _gate(self) -> None:
        while self._pending_rows() > self.max_pending:
            await asyncio.sleep(0.02)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            self._flush()

    def _flush(self) -> None:
        batches = self.buffers.take()
        for (symbol, channel), batch in batches.items():
            name = self.writer_of.get(symbol)
            if name is None:
                self.log.error(f"row for unknown symbol {symbol!r} dropped", extra={"exchange": self.venue})
                continue
            self.outbox[name].append({(symbol, channel): batch})
            self.outbox_rows[name] += batch.num_rows
            if channel == "events":
                for kind in batch.column("kind").to_pylist():
                    self.events_metric.inc(1.0, tags={"exchange": self.venue, "kind": kind})
            elif channel == "l2book" or channel == "trades":
                last = batch.slice(batch.num_rows - 1)
                ts_ex = last.column("ts_exchange")[0].value
                if ts_ex is not None:
                    lag = (last.column("ts_local")[0].value - ts_ex) / 1e9
                    self.lag_metric.set(lag, tags={"exchange": self.venue})
        frames = sum(c.stats.frames for c in self.connections)
        if frames > self._frames_reported:
            self.frames_metric.inc(float(frames - self._frames_reported), tags={"exchange": self.venue})
            self._frames_reported = frames
        for name in self.outbox:
            if self.outbox[name] and name not in self.sending:
                self.sending[name] = asyncio.ensure_future(self._send(name))

    async def _send(self, name: str) -> None:
        """Send everything queued for one writer, one call at a time, retrying until acknowledged."""
        try:
            while self.outbox[name]:
                parts, self.outbox[name] = self.outbox[name], []
                merged: dict[tuple[str, str], list[pa.RecordBatch]] = {}
                for part in parts:
                    for key, batch in part.items():
                        merged.setdefault(key, []).append(batch)
                batches = {k: v[0] if len(v) == 1 else pa.concat_batches(v) for k, v in merged.items()}
                rows = sum(b.num_rows for b in batches.values())
                self.seq[name] += 1
                seq = self.seq[name]
                delay = 0.2
                while True:
                    try:
                        await self.writers[name].write.remote(self.producer, seq, batches)
                        break
                    except Exception as exc:  # writer error or unavailable: keep the batch, retry
                        self.log.error(f"write to {name} failed (will retry): {root_cause(exc)}",
                                       extra={"exchange": self.venue})
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 10.0)
                self.outbox_rows[name] -= rows
                self.sent_rows += rows
        finally:
            self.sending.pop(name, None)

    async def drain(self, timeout_s: float = 120.0) -> bool:
        """Flush buffered rows and wait until every writer acknowledged them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._flush()
            if not self.buffers.rows and not any(self.outbox.values()) and not self.sending:
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self, timeout_s: float = 120.0) -> bool:
        """Close the connections (emitting disconnect events), then drain to the writers."""
        if self.stop_event is not None:
            self.stop_event.set()
            conn_tasks = self.tasks[:-1]
            if conn_tasks:
                await asyncio.wait(conn_tasks, timeout=10)
        return await self.drain(timeout_s)

    async def stats(self) -> dict[str, Any]:
        return {
            "producer": self.producer,
            "frames": sum(c.stats.frames for c in self.connections),
            "clock_frames": sum(c.stats.clock_frames for c in self.connections),
            "connects": sum(c.stats.connects for c in self.connections),
            "disconnects": sum(c.stats.disconnects for c in self.connections),
            "connected": [c.stats.connected for c in self.connections],
            "frames_on_open_connections": sum(c.stats.frames_this_connection for c in self.connections
                                              if c.stats.connected),
            "pending_rows": self._pending_rows(),
            "sent_rows": self.sent_rows,
            "pid": os.getpid(),
        }


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class RestoreActor:
    """``restore``: answers "this exchange, symbol, channel, range" in-cluster and over Ray Client.

    Thin wrapper over :class:`actors.restore.Restorer`; errors (unknown venue or symbol, bad
    range, checksum mismatch, unsafe key) come back as ``RestoreError``/``RangeError``.
    """

    def __init__(self, root: str, backup_section: dict | None, venues: list[str],
                 log_level: str = "INFO") -> None:
        from actors.restore.restorer import Restorer, bucket_from_section

        setup_logging(log_level)
        try:
            bucket = bucket_from_section(backup_section or {}, root)
        except Exception as exc:    # serve the local archive; say once why the bucket is unavailable
            get_logger("restore").error(f"restore: bucket unavailable, serving local files only: {exc}")
            bucket = None
        self.restorer = Restorer(root, bucket=bucket, venues=venues)

    def paths(self, exchange: str, symbol: str, channel: str, start, end, depth: int | None = None,
              market: str = "perp") -> list[dict]:
        """Files covering the range: key, period, size, sha256, local/remote."""
        from dataclasses import asdict
        return [asdict(ref) for ref in self.restorer.paths(exchange, symbol, channel, start, end, depth, market)]

    def restore(self, exchange: str, symbol: str, channel: str, start, end, depth: int | None = None,
                market: str = "perp") -> list[str]:
        """Download (verified) what is missing locally; the local paths of the range's files."""
        return self.restorer.restore(exchange, symbol, channel, start, end, depth, market)

    def load(self, exchange: str, symbol: str, channel: str, start, end, depth: int | None = None,
             market: str = "perp", columns: list[str] | None = None) -> pa.Table:
        """Rows with ``start <= ts_local < end`` as an Arrow table (restoring first if needed)."""
        return self.restorer.load(exchange, symbol, channel, start, end, depth, market, columns)

    def coverage(self, exchange: str, symbol: str, start, end, depth: int | None = None,
                 market: str = "perp") -> pa.Table:
        """Per stream and hour: rows, bytes, local/remote/both, gap events."""
        return self.restorer.coverage(exchange, symbol, start, end, depth=depth, market=market)


def start_restore_actor(root: str, backup_section: dict | None, venues: list[str], log_level: str = "INFO"):
    """The named ``restore`` actor (created once; detached so it outlives the driver on a cluster)."""
    return RestoreActor.options(name="restore", namespace=NAMESPACE, get_if_exists=True,
                                lifetime="detached").remote(root, backup_section, venues, log_level)

