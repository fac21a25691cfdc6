"""One venue's feed in one process: its websocket connections, row buffers and the outbox.

:class:`VenueFeed` is what the ``ExchangeSocket`` actor holds (no Ray here): it runs one
:class:`~actors.feed.connection.FeedConnection` per connection plan, collects the parsed
rows per (symbol, channel) in :class:`~actors.feed.records.StreamBuffers`, and every
``flush_s`` hands them to the :class:`~actors.feed.outbox.Outbox`, routed to the writer of
each symbol. The readers pause while the outbox is full (backpressure). ``stop`` closes the
sockets (disconnect events are written) and drains every row to the writers.

Observations for metrics go to a :class:`FeedObserver` (the actor passes one that records Ray
metrics; the default records nothing).
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from actors.feed.connection import FeedConnection, FeedOptions
from actors.feed.outbox import Outbox, Transport
from actors.feed.records import StreamBuffers
from actors.logs import get_logger
from actors.venues.base import ConnectionPlan, VenueClient

log = get_logger("feed")

RESTART_GAP = ("socket process restarted: rows received but not yet handed to the writers were lost; "
               "books are resynced from fresh snapshots")


@dataclass
class VenueFeedStats:
    """Counters of one venue's feed: of one socket process (:meth:`VenueFeed.stats`), or of all the
    processes serving the venue (:meth:`merged`). Travels through Ray as is; :meth:`to_dict` for JSON."""

    producer: str = ""
    frames: int = 0
    clock_frames: int = 0
    connects: int = 0
    disconnects: int = 0
    connected: list[bool] = field(default_factory=list)     # per connection
    refused: list[str] = field(default_factory=list)        # "HTTP 400" per connection refused right now
    silent_reconnects: int = 0
    market_rows: int = 0
    frames_on_open_connections: int = 0
    pending_rows: int = 0                                   # buffered, queued or in flight to the writers
    sent_rows: int = 0                                      # acknowledged by the writers
    write_failures: int = 0
    lag_s: float | None = None                              # ts_local - ts_exchange of the newest row
    pids: list[int] = field(default_factory=list)           # the socket processes that answered (merged)
    waiting: str = ""                                       # why the venue is not running, if so (set by the driver)

    @classmethod
    def merged(cls, parts: list["VenueFeedStats"], pids: list[int] | None = None) -> "VenueFeedStats":
        """Shards of one venue as one: numbers summed, lists joined, the largest lag, the first producer."""
        out = cls(producer=parts[0].producer if parts else "", pids=list(pids or []))
        for part in parts:
            for f in dataclasses.fields(cls):
                if f.name in ("producer", "pids", "waiting"):
                    continue
                mine, theirs = getattr(out, f.name), getattr(part, f.name)
                if f.name == "lag_s":
                    setattr(out, f.name, theirs if mine is None else mine if theirs is None else max(mine, theirs))
                else:
                    setattr(out, f.name, mine + theirs)
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FeedObserver:
    """Receives what a flush saw; override to export metrics."""

    def frames(self, count: int) -> None:
        """``count`` more websocket frames were received."""

    def event(self, kind: str) -> None:
        """One feed event (connect, gap, resync, ...) was recorded."""

    def lag(self, seconds: float) -> None:
        """``ts_local - ts_exchange`` of the newest row."""

    def connected(self, count: int) -> None:
        """``count`` of the venue's connections are open now (every flush)."""


class VenueFeed:
    """Connections + buffers + outbox of one venue (see module docstring)."""

    def __init__(self, venue: str, plans: list[ConnectionPlan],
                 make_client: Callable[[ConnectionPlan, StreamBuffers], VenueClient],
                 writer_of: dict[str, str], send: Transport, producer: str, options: FeedOptions,
                 flush_s: float = 0.2, max_pending_rows: int = 200_000,
                 observer: FeedObserver | None = None) -> None:
        self.venue = venue
        self.writer_of = writer_of
        self.flush_s = flush_s
        self.observer = observer or FeedObserver()
        self.buffers = StreamBuffers()
        self.outbox = Outbox(producer, sorted(set(writer_of.values())), send, max_pending_rows,
                             tags={"exchange": venue})
        self.connections = [FeedConnection(plan, make_client(plan, self.buffers), options, gate=self._gate,
                                           has_room=self._has_room)
                            for plan in plans]
        self.stop_event = asyncio.Event()
        self.connection_tasks: list[asyncio.Task] = []
        self.flush_task: asyncio.Task | None = None
        self._frames_seen = 0
        self.last_lag_s: float | None = None

    def start(self, restarted: bool = False, archived_trades: dict[str, list[str]] | None = None) -> None:
        """Open the connections and start flushing; after a process restart, record a gap first.

        ``archived_trades``: the newest trade ids the writers already hold per symbol (after a
        restart), so trades the venue repeats on subscribe are not written twice.
        """
        if restarted:
            now = time.time_ns()
            for symbol in self.writer_of:
                self.buffers.event(symbol, now, "", "gap", RESTART_GAP)
            log.error(f"socket process restarted; recorded a gap for {len(self.writer_of)} symbol(s)",
                      extra={"exchange": self.venue})
        for symbol, trade_ids in (archived_trades or {}).items():
            for conn in self.connections:
                conn.client.remember_trades(symbol, trade_ids)
        self.connection_tasks = [asyncio.ensure_future(conn.run(self.stop_event)) for conn in self.connections]
        self.flush_task = asyncio.ensure_future(self._flush_every())
        log.info(f"started {len(self.connections)} connection(s)", extra={"exchange": self.venue})

    async def _gate(self) -> None:
        # the buffered rows are counted afresh while waiting: every flush moves them into the
        # outbox, and a count taken once would then be counted twice, for ever (F4)
        await self.outbox.wait_for_room(lambda: self.buffers.rows)

    def _has_room(self) -> bool:
        return self.outbox.has_room(self.buffers.rows)

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            self.flush()

    def flush(self) -> None:
        """Hand every buffered row to the outbox, routed to its symbol's writer."""
        for (symbol, channel), batch in self.buffers.take().items():
            writer = self.writer_of.get(symbol)
            if writer is None:
                log.error(f"row for unknown symbol {symbol!r} dropped", extra={"exchange": self.venue})
                continue
            self.outbox.put(writer, {(symbol, channel): batch})
            self._observe(channel, batch)
        frames = self.frames
        if frames > self._frames_seen:
            self.observer.frames(frames - self._frames_seen)
            self._frames_seen = frames
        self.observer.connected(sum(c.stats.connected for c in self.connections))

    def _observe(self, channel: str, batch) -> None:
        if channel == "events":
            for kind in batch.column("kind").to_pylist():
                self.observer.event(kind)
            return
        last = batch.slice(batch.num_rows - 1)
        ts_exchange = last.column("ts_exchange")[0].value
        if ts_exchange is not None:
            self.last_lag_s = (last.column("ts_local")[0].value - ts_exchange) / 1e9
            self.observer.lag(self.last_lag_s)

    async def stop(self, timeout_s: float = 120.0) -> bool:
        """Close the sockets (disconnect events), then drain every row to the writers."""
        self.stop_event.set()
        if self.connection_tasks:
            await asyncio.wait(self.connection_tasks, timeout=10)
        return await self.drain(timeout_s)

    async def drain(self, timeout_s: float = 120.0) -> bool:
        """Flush and wait until the writers acknowledged every row; False at the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.flush()
            if await self.outbox.drain(max(0.0, deadline - time.monotonic())) and not self.buffers.rows:
                return True
            if time.monotonic() >= deadline:
                return False

    @property
    def frames(self) -> int:
        return sum(c.stats.frames for c in self.connections)

    def stats(self) -> VenueFeedStats:
        """Counters of the connections and the delivery."""
        conns = [c.stats for c in self.connections]
        return VenueFeedStats(
            producer=self.outbox.producer,
            frames=self.frames,
            clock_frames=sum(s.clock_frames for s in conns),
            connects=sum(s.connects for s in conns),
            disconnects=sum(s.disconnects for s in conns),
            connected=[s.connected for s in conns],
            refused=[s.refused for s in conns if s.refused],
            silent_reconnects=max((s.silent_reconnects for s in conns), default=0),
            market_rows=sum(c.client.market_rows for c in self.connections),
            frames_on_open_connections=sum(s.frames_this_connection for s in conns if s.connected),
            pending_rows=self.buffers.rows + self.outbox.pending_rows,
            sent_rows=self.outbox.sent_rows,
            write_failures=self.outbox.failures,
            lag_s=self.last_lag_s,
        )
