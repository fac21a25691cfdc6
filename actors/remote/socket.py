"""``ExchangeSocket``: the Ray actor that owns one venue's websockets (a :class:`~actors.feed.venue_feed.VenueFeed`).

It builds the feed with the venue's clients and a transport that calls the writer actors, starts
it once (and again after Ray restarted the process, recording a gap), and exports what the feed
observes as metrics. Delivery rules (ordering, acknowledgement, exactly-once re-sends,
backpressure) live in :mod:`actors.feed.outbox`.
"""
from __future__ import annotations

import os
import uuid
import warnings
from typing import Any

import ray
from ray.util.metrics import Counter, Gauge

from actors.cli.schema import SocketConfig
from actors.feed.connection import FeedOptions
from actors.feed.venue_feed import FeedObserver, VenueFeed
from actors.logs import setup_actor_logging
from actors.remote import NAMESPACE, socket_name
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


@ray.remote(num_cpus=0, max_restarts=-1)
class ExchangeSocket:
    """One venue's connections, feeding the writers (see module docstring)."""

    def __init__(self, venue: str, venue_cfg: Any, plans: list[ConnectionPlan], depth: int,
                 writer_of: dict[str, str], socket_cfg: SocketConfig, replay_clock: bool = False,
                 log_level: str = "INFO", log_root: str | None = None) -> None:
        setup_actor_logging(log_level, log_root, socket_name(venue))
        self.venue, self.venue_cfg, self.plans, self.depth = venue, venue_cfg, plans, depth
        self.writer_of, self.socket_cfg = writer_of, socket_cfg
        self.writers: dict[str, Any] = {}        # writer name -> handle, looked up on first use
        self.options = FeedOptions(replay_clock=replay_clock, backoff_min_s=socket_cfg.backoff_min_s,
                                   backoff_max_s=socket_cfg.backoff_max_s, idle_timeout_s=socket_cfg.idle_timeout_s,
                                   tags={"exchange": venue})
        self.feed: VenueFeed | None = None

    async def _send(self, writer: str, producer: str, seq: int, batches) -> None:
        handle = self.writers.get(writer)
        if handle is None:       # by name: small constructor arguments, and a restarted writer is found again
            handle = self.writers[writer] = ray.get_actor(writer, namespace=NAMESPACE)
        await handle.write.remote(producer, seq, batches)

    async def ensure_started(self) -> bool:
        """Start the feed once (idempotent; also after Ray restarted this process). True if started now."""
        if self.feed is not None:
            return False
        venue = get_venue(self.venue)
        self.feed = VenueFeed(
            self.venue, self.plans, lambda plan, sink: venue.make_client(plan, self.venue_cfg, sink, self.depth),
            self.writer_of, self._send, f"{self.venue}-{uuid.uuid4().hex[:12]}", self.options,
            flush_s=self.socket_cfg.flush_ms / 1000.0, max_pending_rows=self.socket_cfg.max_pending_rows,
            observer=RayMetrics(self.venue))
        with warnings.catch_warnings():     # Ray 2.60 warns about its own use of a deprecated API here
            warnings.simplefilter("ignore")
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.feed.start(restarted=restarted)
        return True

    async def stop(self, timeout_s: float = 120.0) -> bool:
        """Close the connections (disconnect events), then drain every row to the writers."""
        return True if self.feed is None else await self.feed.stop(timeout_s)

    async def stats(self) -> dict[str, Any]:
        return {**(self.feed.stats() if self.feed else {"frames": 0, "sent_rows": 0}), "pid": os.getpid()}
