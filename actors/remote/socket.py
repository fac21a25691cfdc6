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
from actors.feed.venue_feed import FeedObserver, VenueFeed
from actors.logs import setup_actor_logging
from actors.remote import NAMESPACE
from actors.remote.placement import node_root
from actors.venues import get_venue
from actors.venues.base import ConnectionPlan


class RayMetrics(FeedObserver):
    """Feed observations as ``tickarchive_*`` Ray metrics."""

    def __init__(self, venue: str) -> None:
        self.tags = {"exchange": venue}
        self._frames = Counter("tickarchive_frames", "websocket frames received", tag_keys=("exchange",))
        self._events = Counter("tickarchive_events", "feed events (connect, gap, resync, ...)",
                               tag_keys=("exchange", "kind"))
        self._lag = Gauge("tickarchive_feed_lag_seconds", "ts_local - ts_exchange of the newest row",
                          tag_keys=("exchange",))

    def frames(self, count: int) -> None:
        self._frames.inc(float(count), tags=self.tags)

    def event(self, kind: str) -> None:
        self._events.inc(1.0, tags={**self.tags, "kind": kind})

    def lag(self, seconds: float) -> None:
        self._lag.set(seconds, tags=self.tags)


@dataclass
class VenueShard:
    """One venue's part of a socket process: the connection plans of its symbols and their writers."""

    venue: str
    venue_cfg: Any
    plans: list[ConnectionPlan]
    writer_of: dict[str, str]          # symbol -> writer process name


@ray.remote(num_cpus=0, max_restarts=-1)
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
        gc.freeze()      # start-up objects leave the cycle collector's reach: ~7 % less CPU per frame
        for shard in self.shards:
            self.feeds[shard.venue] = self._feed(shard)
            self.feeds[shard.venue].start(restarted=restarted)
        return True

    async def stop(self, timeout_s: float = 120.0) -> bool:
        """Close the connections (disconnect events), then drain every row to the writers."""
        done = await asyncio.gather(*(feed.stop(timeout_s) for feed in self.feeds.values()))
        return all(done)

    async def stats(self) -> dict[str, Any]:
        """``{"pid", "node", "venues": {venue: feed stats}}``."""
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "venues": {venue: feed.stats() for venue, feed in self.feeds.items()}}
