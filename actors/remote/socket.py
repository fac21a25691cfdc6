"""``ExchangeSocket``: the Ray actor that owns websockets of one or more venues (one
:class:`~actors.feed.venue_feed.VenueFeed` per venue it serves).

The venues of a placement group share socket processes: their symbols are cut into shards of
``socket.symbols_per_process`` (automatic by default), so a few small venues live in one
process and a venue with many symbols is spread over several (``socket:<group>:<n>``).
For each venue part (:class:`VenueShard`) it builds the feed with the venue's clients and a
transport that calls the writer actors, starts it once (and again after Ray restarted the
process, recording a gap), and exports what the feeds observe as metrics. Delivery rules (ordering, acknowledgement, exactly-once re-sends,
backpressure) live in :mod:`actors.feed.outbox`.
"""
from __future__ import annotations

import asyncio
import gc
import os
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.metrics import Counter, Gauge

from actors.cli.schema import SocketConfig
from actors.feed.connection import FeedOptions
from actors.feed.venue_feed import FeedObserver, VenueFeed, VenueFeedStats
from actors.logs import get_logger, setup_actor_logging
from actors.remote import NAMESPACE
from actors.remote.options import POLICIES
from actors.remote.placement import node_root
from actors.venues import get_venue
from actors.venues.base import ConnectionPlan

log = get_logger("socket")


class RayMetrics(FeedObserver):
    """Feed observations as ``tickarchive_*`` Ray metrics."""

    def __init__(self, venue: str) -> None:
        self.tags = {"exchange": venue}
        self._frames = Counter("tickarchive_frames", "websocket frames received", tag_keys=("exchange",))
        self._events = Counter("tickarchive_events", "feed events (connect, gap, resync, ...)",
                               tag_keys=("exchange", "kind"))
        self._lag = Gauge("tickarchive_feed_lag_seconds", "ts_local - ts_exchange of the newest row",
                          tag_keys=("exchange",))
        self._connected = Gauge("tickarchive_connected", "open websocket connections of the venue (0: alert)",
                                tag_keys=("exchange",))

    def frames(self, count: int) -> None:
        self._frames.inc(float(count), tags=self.tags)

    def event(self, kind: str) -> None:
        self._events.inc(1.0, tags={**self.tags, "kind": kind})

    def lag(self, seconds: float) -> None:
        self._lag.set(seconds, tags=self.tags)

    def connected(self, count: int) -> None:
        self._connected.set(float(count), tags=self.tags)


@dataclass
class VenueShard:
    """One venue's part of a socket process: the connection plans of its symbols and their writers."""

    venue: str
    venue_cfg: Any
    plans: list[ConnectionPlan]
    writer_of: dict[str, str]          # symbol -> writer process name


@dataclass
class SocketStats:
    """What a socket process answers to ``stats``: its pid and node, and each venue's feed stats."""

    pid: int
    node: str
    venues: dict[str, VenueFeedStats]


async def archived_trades(shard: VenueShard, handles: dict[str, Any], timeout_s: float = 5.0) -> dict[str, list[str]]:
    """The newest trade ids the shard's writers hold per symbol; {} (and a warning) unless all answer in time."""
    by_writer: dict[str, list[str]] = {}
    for symbol, writer in shard.writer_of.items():
        by_writer.setdefault(writer, []).append(symbol)
    try:
        for writer in by_writer:
            handles[writer] = handles.get(writer) or ray.get_actor(writer, namespace=NAMESPACE)
        calls = [handles[writer].recent_trade_ids.remote(shard.venue, symbols) for writer, symbols in by_writer.items()]
        answers = await asyncio.wait_for(asyncio.gather(*calls), timeout_s)
    except Exception as exc:                       # a writer restarting too: repeats may be written again
        log.warning(f"{shard.venue}: archived trade ids not available ({type(exc).__name__}: {exc}); trades the "
                    "venue repeats on subscribe may be written twice", extra={"exchange": shard.venue})
        return {}
    return {symbol: ids for answer in answers for symbol, ids in answer.items()}


@ray.remote(**POLICIES["socket"])
class ExchangeSocket:
    """Connections of one or more venues, feeding the writers (see module docstring)."""

    def __init__(self, name: str, shards: list[VenueShard], depth: int, socket_cfg: SocketConfig,
                 replay_clock: bool = False, log_level: str = "INFO", log_root: str | None = None,
                 resumed: bool = False) -> None:
        setup_actor_logging(log_level, node_root(log_root) if log_root else None, name)
        self.name, self.shards, self.depth, self.socket_cfg = name, shards, depth, socket_cfg
        self.replay_clock = replay_clock
        self.resumed = resumed                   # moved here from a lost node: record a gap
        self.writers: dict[str, Any] = {}        # writer name -> handle, looked up on first use
        self.feeds: dict[str, VenueFeed] = {}

    def _sender(self, venue: str):
        async def send(writer: str, producer: str, seq: int, batches) -> None:
            handle = self.writers.get(writer)
            if handle is None:       # by name: small constructor arguments, and a restarted writer is found again
                handle = self.writers[writer] = ray.get_actor(writer, namespace=NAMESPACE)
            await handle.write.remote(venue, producer, seq, batches)
        return send

    def _feed(self, shard: VenueShard) -> VenueFeed:
        venue, cfg = get_venue(shard.venue), self.socket_cfg
        options = FeedOptions(replay_clock=self.replay_clock, backoff_min_s=cfg.backoff_min_s,
                              backoff_max_s=cfg.backoff_max_s, idle_timeout_s=cfg.idle_timeout_s,
                              tags={"exchange": shard.venue})
        return VenueFeed(
            shard.venue, shard.plans, lambda plan, sink: venue.make_client(plan, shard.venue_cfg, sink, self.depth),
            shard.writer_of, self._sender(shard.venue), f"{shard.venue}-{uuid.uuid4().hex[:12]}", options,
            flush_s=cfg.flush_ms / 1000.0, max_pending_rows=cfg.max_pending_rows, observer=RayMetrics(shard.venue))

    async def ensure_started(self) -> bool:
        """Start the feeds once (idempotent; also after Ray restarted this process). True if started now."""
        if self.feeds:
            return False
        with warnings.catch_warnings():     # Ray 2.60 warns about its own use of a deprecated API here
            warnings.simplefilter("ignore")
            restarted = ray.get_runtime_context().was_current_actor_reconstructed or self.resumed
        gc.freeze()      # start-up objects leave the cycle collector's reach: a few % less CPU per frame
        for shard in self.shards:
            self.feeds[shard.venue] = self._feed(shard)
            archived = await archived_trades(shard, self.writers) if restarted else None
            self.feeds[shard.venue].start(restarted=restarted, archived_trades=archived)
        return True

    async def stop(self, timeout_s: float = 120.0) -> bool:
        """Close the connections (disconnect events), then drain every row to the writers."""
        done = await asyncio.gather(*(feed.stop(timeout_s) for feed in self.feeds.values()))
        return all(done)

    async def stats(self) -> "SocketStats":
        """This process, its node and the feed stats of each venue it serves."""
        return SocketStats(os.getpid(), ray.get_runtime_context().get_node_id(),
                           {venue: feed.stats() for venue, feed in self.feeds.items()})
