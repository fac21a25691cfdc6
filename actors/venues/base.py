"""What every venue module provides: the client side and the server side of its protocol.

A venue module (``actors/venues/<name>.py``, plus ``conf/venues/<name>.yaml``) holds
everything about one venue's wire protocol and nothing about Ray or asyncio sockets:

* ``NAME`` (e.g. ``"binance"``) and ``MARKET`` (e.g. ``"perp"``).
* ``validate(venue_cfg, symbols, channels, depth) -> None``: raise ``ConfigError`` with a
  one-line message naming the problem and the allowed values.
* ``plan_connections(venue_cfg, endpoints, symbols, channels, depth) -> list[ConnectionPlan]``:
  which sockets to open (sharded when the venue's per-connection limits demand).
* ``make_client(plan, venue_cfg, sink, depth) -> VenueClient``: protocol state for one socket.
* Server side (simulator and replay source), see ``actors/venues/serving.py``.

The generic I/O loop (``actors/feed.py``) drives a :class:`VenueClient`: it connects to
``plan.url``, calls ``on_connect``, feeds every received frame to ``on_frame``, performs
the returned :class:`Action` objects (send a frame, fetch a REST snapshot, reconnect), sends
``heartbeat_frame()`` every ``heartbeat_s`` seconds, and reconnects with backoff and jitter.
Rows and events go to the ``RowSink`` the client was built with.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Union

import orjson



class ProtocolError(ValueError):
    """A frame that does not follow the venue's protocol (malformed JSON, missing fields)."""


@dataclass(frozen=True)
class Endpoints:
    """Where to connect. Live venues use the yaml's URLs; sim/replay use loopback servers."""

    ws_base: str      # e.g. "wss://fstream.binance.com" or "ws://127.0.0.1:41234"
    rest_base: str    # e.g. "https://fapi.binance.com" or "http://127.0.0.1:41234"


@dataclass
class ConnectionPlan:
    """One websocket the venue needs: URL, symbols carried, frames to send after connecting."""

    name: str                                   # readable, e.g. "public-0"
    url: str
    symbols: list[str]
    channels: list[str]
    subscribe_frames: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Send:
    """Send this text frame on the connection."""

    frame: str


@dataclass(frozen=True)
class FetchSnapshot:
    """GET ``url`` and hand the body to ``client.on_snapshot(symbol, body, ts_local)``."""

    symbol: str
    url: str


@dataclass(frozen=True)
class Reconnect:
    """Close the socket and connect again (the venue demands it, e.g. resubscribe failed)."""

    reason: str


Action = Union[Send, FetchSnapshot, Reconnect]


class VenueClient(ABC):
    """Protocol state of one venue connection. Plain logic: no I/O, no clocks, no Ray.

    ``ts_local`` is always passed in (ns since epoch) so replayed captures keep their
    recorded receive times.
    """

    #: seconds between client heartbeats (``heartbeat_frame``); None when the server pings
    heartbeat_s: float | None = None
    #: planned reconnect after this many seconds (venue's connection lifetime), or None
    max_lifetime_s: float | None = None

    @abstractmethod
    def on_connect(self, ts_local: int) -> list[Action]:
        """Socket is open: return the subscribe frames (and snapshot fetches, if any)."""

    @abstractmethod
    def on_frame(self, data: str | bytes, ts_local: int) -> list[Action]:
        """One received frame. Malformed frames produce an ``error`` event, never an exception."""

    def on_snapshot(self, symbol: str, body: bytes | None, ts_local: int,
                    error: str | None = None) -> list[Action]:
        """Body of a REST snapshot asked for with FetchSnapshot (``error`` set if it failed)."""
        return []

    @abstractmethod
    def on_disconnect(self, ts_local: int, reason: str) -> None:
        """Socket closed: emit ``disconnect`` events; books become unsynced."""

    def heartbeat_frame(self) -> str | None:
        """Text frame to send every ``heartbeat_s`` seconds (None: nothing)."""
        return None

    # helpers for subclasses that keep ``self.symbols`` and ``self.sink``
    def event_all(self, ts_local: int, kind: str, detail: str, channel: str = "") -> None:
        """The same event for every symbol of this connection."""
        for sym in self.symbols:  # type: ignore[attr-defined]
            self.sink.event(sym, ts_local, channel, kind, detail)  # type: ignore[attr-defined]

    def decode(self, data: str | bytes, ts_local: int) -> dict | None:
        """A frame as a JSON object, or None after an ``error`` event quoting a malformed frame."""
        try:
            msg = orjson.loads(data)
            if isinstance(msg, dict):
                return msg
            problem = "not a JSON object"
        except orjson.JSONDecodeError as exc:
            problem = str(exc)
        self.event_all(ts_local, "error", f"malformed frame ({problem}): {quote(data)}")
        return None


def quote(data: str | bytes, limit: int = 300) -> str:
    """A frame as text for an event's detail, truncated."""
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else str(data)
    return text if len(text) <= limit else text[:limit] + "..."
