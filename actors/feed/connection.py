"""The venue-neutral websocket loop that drives one :class:`VenueClient` (no Ray here).

It connects, lets the client subscribe, feeds it every frame with its receive time,
performs the client's actions (send, REST snapshot, reconnect), sends the client's
heartbeats, reconnects after failures with exponential backoff and full jitter, and
reconnects on purpose before the venue's connection lifetime runs out. A connection that
delivers no market data (book or trade rows) for ``idle_timeout_s`` is treated as dead (a
stalled feed): acks, pongs and errors keep a socket open but do not make a feed alive.

A venue that refuses the connection with an HTTP 4xx (401, 403, 400, 404: a configuration or
protocol problem, not a network blip) is retried with the capped backoff and said at ERROR, naming
the URL and the status, at most once a minute (``FeedStats.refused``). A connection that is
acknowledged but never yields a market row is closed by the watchdog each ``idle_timeout_s``; after
``silent_reconnects_error`` such connections in a row that is said at ERROR too
(``FeedStats.silent_reconnects``): a wrong stream name or route looks exactly like this.

Backpressure (the writers are behind) pauses reading. The websocket's own keepalive pings go
on, but a missing pong never closes the connection (its pong waits unread behind the queued
data); a dead connection is found by the idle watchdog instead, which does not count paused
time.

With ``replay_clock=True`` (source=replay) the out-of-band clock frames of the replay
server set ``ts_local``, so rows keep the recording's receive times.
"""
from __future__ import annotations

import asyncio
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI, WebSocketException

from actors.logs import get_logger
from actors.venues.base import ConnectionPlan, FetchSnapshot, Reconnect, SendFrame, VenueClient
from actors.feed.clock import decode_clock

log = get_logger("feed")


class _ReconnectNow(Exception):
    """Raised inside the read loop to close the socket and connect again."""


@dataclass
class FeedStats:
    connects: int = 0
    disconnects: int = 0
    frames: int = 0
    frames_this_connection: int = 0
    clock_frames: int = 0
    snapshots: int = 0
    connected: bool = False
    last_error: str = ""
    refused: str = ""                  # "HTTP 400" while the venue refuses every connection attempt
    silent_reconnects: int = 0         # connections in a row closed for yielding no market row
    gated: bool = False                # the reader waits at the backpressure gate (the writers are behind)


@dataclass
class FeedOptions:
    replay_clock: bool = False
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    idle_timeout_s: float = 60.0
    snapshot_timeout_s: float = 15.0
    open_timeout_s: float = 10.0
    silent_reconnects_error: int = 3
    error_every_s: float = 60.0        # a refusal or a silent venue is said at ERROR at most this often
    tags: dict = field(default_factory=dict)


def fetch_url(url: str, timeout: float) -> bytes:
    """GET a REST snapshot; raises RuntimeError with a one-line reason on failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (venue URL from config)
            return resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()[:200].decode("utf-8", "replace")
        raise RuntimeError(f"HTTP {exc.code} from {url}: {body}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise RuntimeError(f"cannot fetch {url}: {exc}") from None


class FeedConnection:
    """One venue websocket kept alive for as long as ``stop`` is not set."""

    def __init__(self, plan: ConnectionPlan, client: VenueClient, options: FeedOptions,
                 gate: Callable[[], Awaitable[None]] | None = None,
                 has_room: Callable[[], bool] | None = None) -> None:
        self.plan = plan
        self.client = client
        self.options = options
        self.gate = gate              # awaited before a frame is handled (backpressure) ...
        self.has_room = has_room      # ... only when this cheap check says so (None: every frame)
        self.stats = FeedStats()
        self.clock_ns: int | None = None
        self._tasks: set[asyncio.Task] = set()
        self._close_reason = ""
        self._error_said_at = -float("inf")

    @property
    def label(self) -> str:
        """``okx public-0``: the venue and the connection, for log lines."""
        venue = self.options.tags.get("exchange")
        return f"{venue} {self.plan.name}" if venue else self.plan.name

    def now(self) -> int:
        """Receive time in ns: wall clock, or the replay's recorded clock."""
        if self.options.replay_clock and self.clock_ns is not None:
            return self.clock_ns
        return time.time_ns()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect / read / reconnect until ``stop`` is set."""
        attempt = 0
        while not stop.is_set():
            reason = "closed"
            planned = False
            refused = ""
            try:
                planned = await self._session(stop)
                attempt = 0
                reason = "planned reconnect (connection lifetime)" if planned else "stopped"
            except _ReconnectNow as exc:
                reason = f"reconnect: {exc}"
            except InvalidStatus as exc:
                reason = f"{type(exc).__name__}: {exc}"[:300]
                code = exc.response.status_code
                refused = f"HTTP {code}" if 400 <= code < 500 and code != 429 else ""
            except (OSError, asyncio.TimeoutError, WebSocketException, InvalidURI, InvalidHandshake) as exc:
                reason = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                for task in list(self._tasks):
                    task.cancel()
                self._tasks.clear()
            if self.stats.connected:
                self.stats.connected = False
                self.stats.disconnects += 1
                self.client.on_disconnect(self.now(), reason)
            self.stats.last_error = "" if planned else reason
            if stop.is_set():
                break
            if planned:
                continue
            self.stats.refused = refused
            delay = random.uniform(self.options.backoff_min_s,
                                   min(self.options.backoff_max_s,
                                       self.options.backoff_min_s * (2 ** attempt)))
            attempt = min(attempt + 1, 20)
            if refused:
                self._say_error(f"{self.label}: {self.plan.url} refused the connection ({refused}): a "
                                "configuration or protocol problem, not a network blip (check the venue's URL, "
                                f"symbols and protocol settings); retrying with backoff up to "
                                f"{self.options.backoff_max_s:.0f}s")
            elif self.stats.silent_reconnects >= self.options.silent_reconnects_error:
                self._say_error(f"{self.label}: {self.stats.silent_reconnects} connections in a row to "
                                f"{self.plan.url} were acknowledged but delivered no market data within "
                                f"{self.options.idle_timeout_s:.0f}s (wrong stream names or route?); reconnecting")
            else:
                log.warning(f"{self.plan.name}: {reason}; reconnecting in {delay:.1f}s",
                            extra={**self.options.tags, "url": self.plan.url})
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass

    def _say_error(self, message: str) -> None:
        """Log ``message`` at ERROR unless one was said less than ``error_every_s`` ago."""
        now = time.monotonic()
        if now - self._error_said_at >= self.options.error_every_s:
            self._error_said_at = now
            log.error(message, extra={**self.options.tags, "url": self.plan.url})

    async def _session(self, stop: asyncio.Event) -> bool:
        """One connection; returns True for a planned (lifetime) reconnect."""
        self._close_reason = ""
        async with connect(self.plan.url, open_timeout=self.options.open_timeout_s,
                           max_size=2 ** 24, ping_interval=20, ping_timeout=None,
                           close_timeout=2) as ws:
            self.stats.connects += 1
            self.stats.frames_this_connection = 0
            self.stats.connected = True
            self.stats.refused = ""
            first = None
            if self.options.replay_clock:   # a replay server opens with its clock: stamp connect with it
                try:
                    first = await asyncio.wait_for(ws.recv(), timeout=5)
                except asyncio.TimeoutError:
                    first = None
                if isinstance(first, (bytes, bytearray)) and decode_clock(first) is not None:
                    await self._on_data(ws, first)
                    first = None
            await self._perform(ws, self.client.on_connect(self.now()))
            if first is not None:
                await self._on_data(ws, first)
            if self.client.heartbeat_s:
                self._spawn(self._heartbeat(ws))
            self._spawn(self._watchdog(ws, stop))
            gate, has_room = self.gate, self.has_room
            async for data in ws:
                if gate is not None and (has_room is None or not has_room()):
                    self.stats.gated = True
                    await gate()
                    self.stats.gated = False
                actions = self._receive(data)       # the hot path: no coroutine per frame
                if actions:
                    await self._perform(ws, actions)
        if self._close_reason == "lifetime":
            return True
        if stop.is_set():
            return False
        raise _ReconnectNow(self._close_reason or "server closed the connection")

    async def _watchdog(self, ws, stop: asyncio.Event) -> None:
        """Close the socket on stop, on a stalled feed, or when the planned lifetime is over."""
        opened = last_data = time.monotonic()
        lifetime = self.client.max_lifetime_s
        rows_seen = rows_at_open = self.client.market_rows
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
                self._close_reason = "stopped"
                await ws.close()
                return
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            if self.client.market_rows != rows_seen:
                rows_seen, last_data = self.client.market_rows, now
                self.stats.silent_reconnects = 0
            if lifetime and now - opened >= lifetime:
                self._close_reason = "lifetime"
            elif self.stats.gated:
                last_data = now                        # backpressure is not a stalled feed
                continue
            elif now - last_data > self.options.idle_timeout_s:
                self._close_reason = f"no market data for {self.options.idle_timeout_s:.0f}s (stalled feed)"
                silent = self.client.market_rows == rows_at_open
                self.stats.silent_reconnects = self.stats.silent_reconnects + 1 if silent else 0
            else:
                continue
            await ws.close()
            return

    async def _on_data(self, ws, data: str | bytes) -> None:
        actions = self._receive(data)
        if actions:
            await self._perform(ws, actions)

    def _receive(self, data: str | bytes) -> list | None:
        """Count one frame and hand it to the client (a replay clock frame sets the clock); its actions."""
        stats = self.stats
        if self.options.replay_clock:
            if isinstance(data, (bytes, bytearray)):
                ts = decode_clock(data)
                if ts is not None:
                    self.clock_ns = ts
                    stats.clock_frames += 1
                    return None
            now = self.now()
        else:
            now = time.time_ns()                    # self.now(), inlined: the per-frame path
        stats.frames += 1
        stats.frames_this_connection += 1
        return self.client.on_frame(data, now)

    async def _perform(self, ws, actions) -> None:
        for action in actions:
            if isinstance(action, SendFrame):
                await ws.send(action.frame)
            elif isinstance(action, FetchSnapshot):
                self._spawn(self._snapshot(ws, action))
            elif isinstance(action, Reconnect):
                raise _ReconnectNow(action.reason)

    async def _snapshot(self, ws, action: FetchSnapshot) -> None:
        body, error = None, None
        try:
            body = await asyncio.to_thread(fetch_url, action.url, self.options.snapshot_timeout_s)
            self.stats.snapshots += action.purpose == "book"
        except RuntimeError as exc:
            error = str(exc)
            log.warning(f"{self.plan.name}: {action.purpose} {action.symbol} failed: {error}", extra=self.options.tags)
        actions = self.client.on_fetched(action, body, self.now(), error=error)
        try:
            await self._perform(ws, actions)
        except _ReconnectNow as exc:
            await ws.close(reason=str(exc)[:100])

    async def _heartbeat(self, ws) -> None:
        while True:
            await asyncio.sleep(self.client.heartbeat_s)
            frame = self.client.heartbeat_frame()
            if frame is not None:
                await ws.send(frame)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
