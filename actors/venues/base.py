"""A venue as data: one :class:`Venue` declaration per venue module, plus its parsing rules.

A venue module (``actors/venues/<name>.py``, plus ``conf/venues/<name>.yaml``) holds everything
about one venue's wire protocol, client side and server side, and nothing about Ray or sockets:

* a settings dataclass (:class:`~actors.venues.settings.VenueSettings` plus the venue's keys:
  exactly the keys its yaml may set),
* one :class:`Venue` subclass *declaring* the protocol: :class:`Connections` (URLs, streams per
  socket and the documented limit, subscriptions per request, heartbeat frame and interval,
  connection lifetime, how acks name requests), websocket path(s) and routing, the names of our
  channels on the venue, its sequence-id names, depth and symbol rules, the classes below, and
  ``VENUE = <that class>()`` for the registry,
* a :class:`VenueClient` subclass holding only the venue's parsing and sequencing rules,
* its simulator and replay server (``actors/venues/sim/server.py`` has the shared machinery).

Markets: a symbol of ``archive.<venue>`` may carry its market (``spot/BTCUSDT``; bare is the
perpetual). A market speaking another protocol (Binance COIN-M and spot, Bybit spot) is a
declaration of its own in the venue's ``protocols``; :meth:`Venue.protocol_of` routes each archive
symbol to its declaration, and the venue plans, builds clients (rows renamed from the wire symbol
to the archive's name by :class:`QualifiedSink`) and starts loopback servers per protocol.

The base classes do the rest once for every venue: connection planning (one chunking loop),
subscribe requests and ack bookkeeping, connect/disconnect events, per-symbol book state,
resubscribe-to-resync, the crossed-book rule and row writing. REST-snapshot venues reuse
:class:`~actors.venues.snapshot_sync.SnapshotSyncClient`.

The generic I/O loop (``actors/feed/connection.py``) drives a :class:`VenueClient`: it connects
to ``plan.url``, calls ``on_connect``, feeds every received frame to ``on_frame``, performs the
returned :class:`Action` objects (send a frame, fetch a REST snapshot, reconnect), sends
``heartbeat_frame()`` every ``heartbeat_s`` seconds, and reconnects with backoff and jitter.
Rows and events go to the ``RowSink`` the client was built with.
"""
from __future__ import annotations

import re
from collections import deque
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Sequence, Union

import orjson

from actors.errors import ConfigError
from actors.feed.book import OrderBook, apply_top
from actors.feed.records import DERIVATIVE_FIELDS, RowSink
from actors.storage.layout import DEFAULT_MARKET, join_market, split_market
from actors.venues.settings import VenueSettings, build_settings
from actors.venues.sim.recordings import first_lines

MS = 1_000_000
CHANNEL_ORDER = ("l2book", "trades", "derivatives", "liquidations")     # subscriptions of a symbol, in this order


class ProtocolError(ValueError):
    """A frame that does not follow the venue's protocol (malformed JSON, missing fields)."""


@dataclass(frozen=True)
class Endpoints:
    """Where to connect. Live venues use the yaml's URLs; sim/replay use loopback servers.

    A venue with several protocols (Binance USD-M, COIN-M and spot, ...) reaches each of the
    others at :meth:`of` its key: live at the yaml's ``<key>_ws_base`` / ``<key>_rest_base``
    (``markets``), on a loopback server under the path ``/<key>`` of the same port.
    """

    ws_base: str      # e.g. "wss://fstream.binance.com" or "ws://127.0.0.1:41234"
    rest_base: str    # e.g. "https://fapi.binance.com" or "http://127.0.0.1:41234"
    markets: dict[str, tuple[str, str]] = field(default_factory=dict)   # protocol key -> (ws_base, rest_base)

    def of(self, key: str) -> "Endpoints":
        """The endpoints of the venue's protocol ``key`` ("" its main one)."""
        if not key:
            return self
        if key in self.markets:
            return Endpoints(*self.markets[key])
        return Endpoints(f"{self.ws_base}/{key}", f"{self.rest_base}/{key}")


@dataclass(frozen=True)
class Subscription:
    """One of our channels of one symbol, as the venue names it."""

    symbol: str
    channel: str      # ours: l2book | trades | derivatives | liquidations
    name: str         # the venue's stream / topic / channel key (routing, acks)
    param: Any        # what a subscribe request carries for it (``name``, or an object)

    @property
    def detail(self) -> str:
        """The subscription as text for event details."""
        return self.name if isinstance(self.param, str) else orjson.dumps(self.param).decode()


@dataclass
class ConnectionPlan:
    """One websocket the venue needs: URL, symbols carried and their subscriptions."""

    name: str                                   # readable, e.g. "public-0"
    url: str
    symbols: list[str]
    channels: list[str]
    subscriptions: list[Subscription] = field(default_factory=list)
    rest_base: str = ""
    protocol: str = ""                          # key of the venue's protocol it speaks ("" the main one)
    names: dict[str, str] = field(default_factory=dict)   # wire symbol -> archive symbol, where they differ


@dataclass(frozen=True)
class SendFrame:
    """Send this text frame on the connection."""

    frame: str


@dataclass(frozen=True)
class FetchSnapshot:
    """GET ``url`` and hand the body to ``client.on_fetched(action, body, ts_local)`` (a ``book``
    snapshot goes on to ``client.on_snapshot``; other purposes, e.g. an open-interest poll, are the
    venue's)."""

    symbol: str
    url: str
    purpose: str = "book"


@dataclass(frozen=True)
class Reconnect:
    """Close the socket and connect again (the venue demands it, e.g. resubscribe failed)."""

    reason: str


Action = Union[SendFrame, FetchSnapshot, Reconnect]


@dataclass(frozen=True)
class Connections:
    """How a venue's sockets work: where they go, their limits, heartbeat and acks. The yaml keys
    ``ws_base``, ``rest_base``, ``max_streams_per_connection``, ``heartbeat_interval`` and
    ``max_lifetime`` default to these."""

    ws_base: str
    rest_base: str
    max_streams: int = 100                  # default of max_streams_per_connection
    stream_limit: int | None = None         # documented subscriptions per socket
    params_per_request: int | None = None   # subscriptions per subscribe request (None: all)
    heartbeat_frame: str | None = None      # sent by the client (None: the server pings)
    heartbeat_s: float | None = None        # default of heartbeat_interval
    max_lifetime_s: float | None = None     # default of max_lifetime
    ignored_frames: tuple[str, ...] = ()    # non-JSON control frames (e.g. "pong")
    acks_by_request: bool = True            # an ack names the request id (else the subscription)
    unmatched_ack_means_all: bool = False   # an ack with an unknown id covers the whole plan


DERIVATIVE_INDEX = {name: i for i, name in enumerate(DERIVATIVE_FIELDS)}
STALE_LIMIT = 100          # updates in a row older than the book before it is called a gap
TRADE_ID_WINDOW = 100_000  # recent trade ids remembered per symbol (repeats come within seconds)


class RecentIds:
    """The last ``size`` distinct ids seen (a set for lookups, a ring for their order)."""

    __slots__ = ("seen", "order")

    def __init__(self, size: int = TRADE_ID_WINDOW) -> None:
        self.seen: set[str] = set()
        self.order: deque[str] = deque(maxlen=size)

    def first_time(self, key: str) -> bool:
        """True (and remembered) when ``key`` is not among the recent ids."""
        if key in self.seen:
            return False
        if len(self.order) == self.order.maxlen:
            self.seen.discard(self.order[0])
        self.order.append(key)
        self.seen.add(key)
        return True


@dataclass
class BookState:
    """Sequencing state of one symbol's book on one connection."""

    book: OrderBook
    synced: bool = False
    synced_once: bool = False                   # a later sync is a "resync"
    last_seq: int | None = None
    stale: int = 0                              # updates dropped in a row as older than the book


class QualifiedSink:
    """The :class:`RowSink` of a connection whose wire symbols are not the archive's names
    (``BTCUSDT`` on Binance spot's socket is ``spot/BTCUSDT`` in the archive): renames, passes on."""

    __slots__ = ("sink", "names")

    def __init__(self, sink: RowSink, names: dict[str, str]) -> None:
        self.sink, self.names = sink, names

    def book(self, symbol: str, *row: Any) -> None:
        self.sink.book(self.names.get(symbol, symbol), *row)

    def book_top(self, symbol: str, *row: Any) -> None:
        self.sink.book_top(self.names.get(symbol, symbol), *row)

    def trade(self, symbol: str, *row: Any) -> None:
        self.sink.trade(self.names.get(symbol, symbol), *row)

    def event(self, symbol: str, *row: Any, **kw: Any) -> None:
        self.sink.event(self.names.get(symbol, symbol), *row, **kw)


def quote(data: str | bytes, limit: int = 300) -> str:
    """A frame as text for an event's detail, truncated."""
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else str(data)
    return text if len(text) <= limit else text[:limit] + "..."


class VenueClient(ABC):
    """Protocol state of one venue connection. Plain logic: no I/O, no clocks, no Ray.

    ``ts_local`` is always passed in (ns since epoch) so replayed captures keep their recorded
    receive times. Subclasses implement :meth:`handle` (one decoded frame) with the helpers
    below; everything else is shared.
    """

    book_type: ClassVar[type[OrderBook]] = OrderBook
    state_type: ClassVar[type[BookState]] = BookState

    def __init__(self, venue: "Venue", plan: ConnectionPlan, settings: VenueSettings, sink: RowSink,
                 depth: int) -> None:
        self.venue, self.plan, self.settings, self.sink, self.depth = venue, plan, settings, sink, depth
        #: seconds between client heartbeats (``heartbeat_frame``); None when the server pings
        self.heartbeat_s = settings.heartbeat_interval if venue.connections.heartbeat_frame else None
        #: planned reconnect after this many seconds (venue's connection lifetime), or None
        self.max_lifetime_s = settings.max_lifetime
        self.symbols = list(plan.symbols)
        self.states = {sym: self.state_type(self.book_type()) for sym in self.symbols}
        self.awaiting: dict[str, list[Subscription]] = {}   # request id (or name) -> its subscriptions
        self.requests_sent = 0
        #: book and trade rows written: what the connection's idle watchdog counts as data
        #: (acks and pongs keep a socket open, not a feed alive)
        self.market_rows = 0
        self.recent_trades = {sym: RecentIds() for sym in self.symbols} if venue.trade_ids_unique else None
        self.duplicate_trades = 0
        #: the update id of the last book row written per symbol (kept across reconnects): a
        #: snapshot at that id is the same book, not a new row
        self.written_seq: dict[str, int | None] = {}
        #: rows are the book's plain top levels (no venue ``top`` conversion): the sink copies them itself
        self.plain_top = type(self).top is VenueClient.top
        self.ignored_frames = venue.connections.ignored_frames
        self.plain_decode = type(self).decode is VenueClient.decode
        #: the sink's l2book row buffer per symbol, when a diff can be applied and its row copied in one
        #: compiled call (``apply_and_write``): plain books, plain rows, a sink that hands out its buffers
        self.book_buffer = (getattr(sink, "book_buffer", None)
                            if self.plain_top and self.book_type is OrderBook else None)
        #: the derivatives values last written per symbol (:data:`DERIVATIVE_FIELDS` order): every
        #: source of a venue merges into them, and a row is written only when one of them changed
        self.derivatives: dict[str, list] = {}

    # -- connection ----------------------------------------------------------------------
    def on_connect(self, ts_local: int) -> list[Action]:
        """Socket is open: ``connect`` events, fresh books, the subscribe requests."""
        self.event_all(ts_local, "connect", self.plan.url)
        self.reset_books()
        return self.subscribe(self.plan.subscriptions)

    def on_disconnect(self, ts_local: int, reason: str) -> None:
        """Socket closed: ``disconnect`` events; books become unsynced."""
        self.event_all(ts_local, "disconnect", reason)
        self.reset_books()

    def reset_books(self) -> None:
        """Fresh, unsynced books (a venue whose every later sync is a resync keeps ``synced_once``)."""
        for sym in self.symbols:
            once = self.venue.reconnect_is_resync and self.states[sym].synced_once
            self.states[sym] = self.state_type(self.book_type(), synced_once=once)

    def heartbeat_frame(self) -> str | None:
        """Text frame to send every ``heartbeat_s`` seconds (None: nothing)."""
        return self.venue.connections.heartbeat_frame

    def subscribe(self, subs: Sequence[Subscription]) -> list[Action]:
        """Subscribe requests for ``subs`` (batched as the venue declares), awaiting their acks."""
        per_request = self.venue.connections.params_per_request or max(len(subs), 1)
        actions: list[Action] = []
        for i in range(0, len(subs), per_request):
            batch = list(subs[i:i + per_request])
            req_id = self._next_request()
            if self.venue.connections.acks_by_request:
                self.awaiting[str(req_id)] = batch
            else:
                self.awaiting.update((sub.name, [sub]) for sub in batch)
            actions.append(SendFrame(self.venue.request_frame("subscribe", [s.param for s in batch], req_id)))
        return actions

    def resubscribe(self, symbol: str, channel: str = "l2book") -> list[Action]:
        """Unsubscribe and subscribe again (the venue then sends a fresh snapshot); book unsynced."""
        st = self.states[symbol]
        st.synced = False
        st.book.clear()
        sub = next(s for s in self.plan.subscriptions if s.symbol == symbol and s.channel == channel)
        unsubscribe = SendFrame(self.venue.request_frame("unsubscribe", [sub.param], self._next_request()))
        return [unsubscribe, *self.subscribe([sub])]

    def _next_request(self) -> int:
        self.requests_sent += 1
        return self.requests_sent

    def acknowledged(self, key: Any, ts_local: int, failure: str | None = None) -> None:
        """A subscribe ack for request id (or subscription name) ``key``: ``subscribed``/``error`` events."""
        subs = self.awaiting.pop(str(key), None)
        if subs is None:
            subs = self.plan.subscriptions if self.venue.connections.unmatched_ack_means_all else []
        for sub in subs:
            if failure is None:
                self.sink.event(sub.symbol, ts_local, sub.channel, "subscribed", sub.detail)
            else:
                self.sink.event(sub.symbol, ts_local, sub.channel, "error",
                                f"subscribe {sub.detail} failed: {failure}"[:2000])

    # -- frames --------------------------------------------------------------------------
    def on_frame(self, data: str | bytes, ts_local: int) -> list[Action]:
        """One received frame. Malformed frames produce an ``error`` event, never an exception."""
        ignored = self.ignored_frames
        if ignored and len(data) < 64 and quote(data).strip() in ignored:
            return []
        msg = None
        if self.plain_decode:                  # self.decode(), inlined for a well-formed frame
            try:
                msg = orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
        if type(msg) is not dict:
            msg = self.decode(data, ts_local)  # a venue's own decoding, or the error event
            if msg is None:
                return []
        try:
            return self.handle(msg, ts_local)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self.event_all(ts_local, "error", f"unexpected frame ({type(exc).__name__}: {exc}): {quote(data)}")
            return []

    @abstractmethod
    def handle(self, msg: dict, ts_local: int) -> list[Action]:
        """One decoded frame (a JSON object): rows, events and the actions it calls for."""

    def on_snapshot(self, symbol: str, body: bytes | None, ts_local: int,
                    error: str | None = None) -> list[Action]:
        """Body of a REST snapshot asked for with FetchSnapshot (``error`` set if it failed)."""
        return []

    def on_fetched(self, action: FetchSnapshot, body: bytes | None, ts_local: int,
                   error: str | None = None) -> list[Action]:
        """Body of any REST request asked for with FetchSnapshot: a book snapshot by default."""
        return self.on_snapshot(action.symbol, body, ts_local, error=error)

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

    def event_all(self, ts_local: int, kind: str, detail: str, channel: str = "") -> None:
        """The same event for every symbol of this connection."""
        for sym in self.symbols:
            self.sink.event(sym, ts_local, channel, kind, detail)

    # -- books ---------------------------------------------------------------------------
    def synced_event(self, symbol: str, st: BookState, ts_local: int, detail: str,
                     seq_from: int | None = None, seq_to: int | None = None) -> None:
        """The book is (re)built: a ``snapshot`` event the first time, ``resync`` after."""
        kind = "resync" if st.synced_once else "snapshot"
        self.sink.event(symbol, ts_local, "l2book", kind, detail, seq_from, seq_to)
        st.synced = st.synced_once = True

    def gap(self, symbol: str, st: BookState, ts_local: int, seq: int, prev: int | None = None,
            detail: str | None = None) -> None:
        """A broken sequence: ``gap`` event (from the last applied id), the book is dropped."""
        v = self.venue
        if detail is None:
            detail = (f"{v.seq_name} {seq} after {st.last_seq}" if v.prev_name is None
                      else f"{v.prev_name} {prev} != previous {v.seq_name} {st.last_seq}")
        self.sink.event(symbol, ts_local, "l2book", "gap", detail, st.last_seq, seq)
        st.synced = False
        st.book.clear()

    def sequence(self, symbol: str, st: BookState, ts_local: int, *, snapshot: bool, seq: int,
                 chained: bool, bids: Sequence, asks: Sequence, prev: int | None = None,
                 restart: bool = False) -> list[Action] | None:
        """Snapshot-then-updates venues: apply one message; None when applied (write the row next).

        A snapshot replaces the book (a ``snapshot``/``resync`` event when it syncs it, or on a
        venue ``restart``); a snapshot at the id of the last row written (a repeated frame, or a
        resync while the market stood still) is that same book: no second row. An update is
        ignored while unsynced, and applied when ``chained``; an update at or before the last
        applied id is a repeated or late frame and is dropped (after ``STALE_LIMIT`` of them in a
        row, a ``gap``); any other break is a ``gap`` and a resubscribe for a fresh snapshot.
        """
        if snapshot:
            st.book.load_snapshot(bids, asks)
            st.stale = 0
            if not st.synced or restart:
                self.synced_event(symbol, st, ts_local, f"{self.venue.seq_name} {seq}", seq, seq)
            st.last_seq = seq
            return [] if seq is not None and seq == self.written_seq.get(symbol) and not restart else None
        if not st.synced:
            return []                              # waiting for the snapshot after a resubscribe
        if not chained:
            if seq is not None and st.last_seq is not None and seq <= st.last_seq and st.stale < STALE_LIMIT:
                st.stale += 1                      # already applied: a repeated or reordered frame
                return []
            self.gap(symbol, st, ts_local, seq, prev)
            return self.resubscribe(symbol)
        st.book.apply_levels(bids, asks)
        st.stale = 0
        st.last_seq = seq
        return None

    def write_book(self, symbol: str, st: BookState, ts_local: int, ts_exchange: int | None,
                   seq: int | None) -> list[Action]:
        """One l2book row of the top ``depth`` levels; a crossed book is never written (``crossed``)."""
        if st.book.crossed():
            self.sink.event(symbol, ts_local, "l2book", "crossed",
                            f"best bid {st.book.best_bid()} >= best ask {st.book.best_ask()} at "
                            f"{self.venue.seq_name} {seq}", seq, seq)
            st.synced = False
            st.book.clear()
            return self.recover(symbol, ts_local)
        self.written_seq[symbol] = seq
        self.market_rows += 1                  # book_row, inlined: this is the per-message path
        if self.plain_top:                     # the sink copies the levels out of the book itself
            self.sink.book_top(symbol, ts_local, ts_exchange, seq, st.book, self.depth)
        else:
            self.sink.book(symbol, ts_local, ts_exchange, seq, *self.top(symbol, st))
        return []

    def apply_and_write(self, symbol: str, st: BookState, bids: Sequence, asks: Sequence, ts_local: int,
                        ts_exchange: int | None, seq: int | None) -> list[Action]:
        """``st.book.apply_levels(bids, asks)`` then ``write_book``: the same rows and events, with the
        diff applied and the row's levels copied into the sink's buffer in one compiled call."""
        if self.book_buffer is None:
            st.book.apply_levels(bids, asks)
            return self.write_book(symbol, st, ts_local, ts_exchange, seq)
        buf = self.book_buffer(symbol)
        book = st.book
        if not apply_top(book.bids, book.asks, bids, asks, self.depth, *buf.levels):
            return self.write_book(symbol, st, ts_local, ts_exchange, seq)     # crossed: its event, no row
        self.written_seq[symbol] = seq
        self.market_rows += 1
        self.sink.book_ended(buf, ts_local, ts_exchange, seq)  # type: ignore[attr-defined]
        return []

    def book_row(self, symbol: str, ts_local: int, ts_exchange: int | None, seq: int | None,
                 bid_px: Sequence[float], bid_sz: Sequence[float], ask_px: Sequence[float],
                 ask_sz: Sequence[float]) -> None:
        """Write one l2book row (counted as market data)."""
        self.market_rows += 1
        self.sink.book(symbol, ts_local, ts_exchange, seq, bid_px, bid_sz, ask_px, ask_sz)

    def trade_row(self, symbol: str, ts_local: int, ts_exchange: int | None, trade_id: str, price: float,
                  size: float, side: int, trade_type: str | None = None) -> None:
        """Write one trade, once: an id seen among the recent ones is a repeat and is counted, not written.

        ``trade_type`` is null for a plain trade; a venue that flags liquidations etc. names them here."""
        if self.recent_trades is not None and not self.recent_trades[symbol].first_time(trade_id):
            self.duplicate_trades += 1
            return
        self.market_rows += 1
        self.sink.trade(symbol, ts_local, ts_exchange, trade_id, price, size, side, trade_type)

    def derivative_row(self, symbol: str, ts_local: int, ts_exchange: int | None, **values: Any) -> bool:
        """Merge the values a frame carries (names of :data:`DERIVATIVE_FIELDS`; None: not said) into
        the symbol's last known ones and write a ``derivatives`` row when any of them changed.

        One rule for every venue: Bybit's ticker deltas, OKX's three channels and Binance's mark
        price stream plus its open-interest poll all land here. Returns True when a row was written."""
        last = self.derivatives.get(symbol)
        merged = list(last) if last is not None else [None] * len(DERIVATIVE_FIELDS)
        for name, value in values.items():
            if value is not None:
                merged[DERIVATIVE_INDEX[name]] = value
        if merged == last:
            return False
        self.derivatives[symbol] = merged
        self.market_rows += 1
        self.sink.derivative(symbol, ts_local, ts_exchange, merged)
        return True

    def forget_derivatives(self, symbol: str) -> None:
        """Start the symbol's derivatives afresh (a venue snapshot replaces every value)."""
        self.derivatives.pop(symbol, None)

    def liquidation_row(self, symbol: str, ts_local: int, ts_exchange: int | None, side: int, price: float,
                        size: float, order_id: str | None = None) -> None:
        """Write one liquidation (``side`` is the liquidation order's: +1 buy, a short was closed)."""
        self.market_rows += 1
        self.sink.liquidation(symbol, ts_local, ts_exchange, side, price, size, order_id)

    def remember_trades(self, symbol: str, trade_ids: Iterable[str]) -> None:
        """Count these ids (already archived) as seen: a venue repeating them is not written again.
        ``symbol`` is the archive's name (``spot/BTCUSDT``)."""
        symbol = next((wire for wire, name in self.plan.names.items() if name == symbol), symbol)
        if self.recent_trades is not None and symbol in self.recent_trades:
            for trade_id in trade_ids:
                self.recent_trades[symbol].first_time(trade_id)

    def top(self, symbol: str, st: BookState) -> tuple[list[float], list[float], list[float], list[float]]:
        """The row's levels (a venue may convert sizes here)."""
        return st.book.top(self.depth)

    def recover(self, symbol: str, ts_local: int) -> list[Action]:
        """How a dropped book is rebuilt: resubscribe (REST-snapshot venues fetch instead)."""
        return self.resubscribe(symbol)


class Venue(ABC):
    """One venue's declaration, and the API the rest of the code calls (``actors.venues.get_venue``).

    Subclasses set the class attributes; they override methods only where a template cannot
    say it (a computed stream name, a request object instead of a name, a recording format).
    """

    name: ClassVar[str]
    Settings: ClassVar[type[VenueSettings]] = VenueSettings
    connections: ClassVar[Connections]
    #: route name -> websocket path; a venue routing streams over several paths overrides :meth:`route`
    routes: ClassVar[dict[str, str]]
    #: our channel -> the venue's stream name: a template over ``symbol``, ``low`` (lower-case
    #: symbol), the settings' fields and :meth:`stream_values`; a tuple of templates when the venue
    #: spreads a channel over several streams (OKX's funding-rate, mark-price, open-interest). A
    #: channel the venue does not publish is absent: it is not subscribed there.
    streams: ClassVar[dict[str, str | tuple[str, ...]]]
    reconnect_is_resync: ClassVar[bool] = False        # the first book after a reconnect is a "resync"
    seq_name: ClassVar[str] = "seq"                    # the venue's name of its update id (event details)
    prev_name: ClassVar[str | None] = None             # ... of the id an update chains to (None: seq + 1)
    symbol_pattern: ClassVar[str] = r"\S+"             # a symbol of this venue (full match)
    symbol_kind: ClassVar[str] = "symbol"              # ... named in errors, with an example
    Client: ClassVar[type[VenueClient]]
    SimServer: ClassVar[type | None] = None            # (symbols, sim_cfg, depth) -> SimulatedVenue
    ReplayServer: ClassVar[type | None] = None         # (path, speed, symbols) -> ReplayVenue
    #: a recording of this venue: its file name ending, and how many first lines to sniff
    recording_sniff: ClassVar[tuple[str, int]] = ("", 0)
    #: trades carry the venue's own unique id: a trade seen again (a repeated frame, the recent
    #: trades a venue repeats on subscribe) is written once. False when the client makes the id up.
    trade_ids_unique: ClassVar[bool] = True
    #: the markets (archive folders) this venue archives: a symbol ``<market>/SYMBOL`` of another is refused
    markets: ClassVar[tuple[str, ...]] = (DEFAULT_MARKET,)
    #: the venue's other protocols by key (e.g. Binance ``spot``, ``coinm``), each declared like this one;
    #: ``protocol_key`` is a declaration's own key ("" for the venue's main one)
    protocols: ClassVar[dict[str, "Venue"]] = {}
    protocol_key: ClassVar[str] = ""

    # -- markets ---------------------------------------------------------------------------
    def qualify(self, symbol: str) -> str:
        """The archive's name of a configured symbol: bare for the perpetual (``perp/X`` is ``X``),
        ``<market>/SYMBOL`` otherwise; ConfigError for a market the venue does not archive."""
        market, bare = split_market(symbol)
        if market not in self.markets:
            raise ConfigError(f"archive.{self.name}: {symbol!r}: {self.name} archives no {market} market "
                              f"(markets: {', '.join(self.markets)})")
        return join_market(market, bare)

    def protocol_of(self, symbol: str) -> "Venue":
        """The declaration speaking the archive symbol ``symbol`` (by its market; venues override)."""
        return self.protocols.get(split_market(symbol)[0], self)

    def by_protocol(self, symbols: Iterable[str]) -> dict["Venue", list[str]]:
        """Archive symbols grouped by the declaration speaking them, in order."""
        groups: dict[Venue, list[str]] = {}
        for symbol in symbols:
            groups.setdefault(self.protocol_of(symbol), []).append(symbol)
        return groups

    def _single(self, symbols: Sequence[str]) -> bool:
        """True when every symbol is a bare one of this declaration (no renaming, no other protocol)."""
        return all("/" not in s for s in symbols) and all(self.protocol_of(s) is self for s in symbols)

    def live_endpoints(self, settings: VenueSettings) -> Endpoints:
        """The live URLs of every protocol of the venue (``<key>_ws_base`` / ``<key>_rest_base`` keys)."""
        return Endpoints(settings.ws_base, settings.rest_base,
                         {key: (getattr(settings, f"{key}_ws_base"), getattr(settings, f"{key}_rest_base"))
                          for key in self.protocols})

    # -- settings and validation -----------------------------------------------------------
    def settings(self, raw: dict[str, Any] | None) -> VenueSettings:
        """The typed settings of ``venues.<name>``; ConfigError naming the key on a bad one."""
        c = self.connections
        defaults = {"ws_base": c.ws_base, "rest_base": c.rest_base, "max_streams_per_connection": c.max_streams,
                    "heartbeat_interval": c.heartbeat_s, "max_lifetime": c.max_lifetime_s}
        settings = build_settings(self.Settings, {**defaults, **(raw or {})}, f"venues.{self.name}")
        per_conn, limit = settings.max_streams_per_connection, c.stream_limit
        if per_conn < 1 or (limit is not None and per_conn > limit):
            raise ConfigError(f"venues.{self.name}.max_streams_per_connection: {per_conn} "
                              f"(allowed: 1..{limit or 'any'})")
        if settings.heartbeat_interval is not None and c.heartbeat_frame is None:
            raise ConfigError(f"venues.{self.name}.heartbeat_interval: {self.name} pings the client itself "
                              "(leave it null)")
        return settings

    def allowed_depths(self, settings: VenueSettings) -> tuple[Sequence[int], str]:
        """The depths this venue can archive with these settings, and why (for the error)."""
        return range(1, 1001), ""

    def validate(self, settings: VenueSettings, symbols: list[str], channels: list[str], depth: int) -> None:
        """Raise ConfigError (one line) for a depth or symbol this venue cannot serve (each symbol
        checked by the protocol speaking it)."""
        if not self._single(symbols):
            for decl, group in self.by_protocol(symbols).items():
                wire = [split_market(s)[1] for s in group]
                twice = sorted({w for w in wire if wire.count(w) > 1})
                if twice:
                    raise ConfigError(f"archive.{self.name}: {twice[0]} is named in two markets of one protocol "
                                      f"({', '.join(s for s in group if split_market(s)[1] == twice[0])}): keep one")
                decl.validate(settings, wire, channels, depth)
            return
        allowed, why = self.allowed_depths(settings)
        if depth not in allowed:
            shown = f"{allowed[0]}..{allowed[-1]}" if isinstance(allowed, range) else ", ".join(map(str, allowed))
            raise ConfigError(f"depth: {depth} is not supported by {self.name} (allowed: {shown}"
                              f"{'; ' + why if why else ''})")
        for sym in symbols:
            if not re.fullmatch(self.symbol_pattern, sym):
                raise ConfigError(f"archive.{self.name}: {sym!r} is not a {self.symbol_kind}")

    # -- connections -----------------------------------------------------------------------
    def stream_values(self, settings: VenueSettings, depth: int) -> dict[str, Any]:
        """Extra values for the stream-name templates (e.g. a book depth chosen from ``depth``)."""
        return {}

    def request_param(self, settings: VenueSettings, name: str) -> Any:
        """What a subscribe request carries for the stream ``name`` (default: the name)."""
        return name

    def subscription(self, settings: VenueSettings, symbol: str, channel: str, depth: int) -> Subscription:
        """Our ``channel`` of ``symbol`` as the venue names and requests it (its first stream)."""
        return self.subscriptions_of(settings, symbol, channel, depth)[0]

    def subscriptions_of(self, settings: VenueSettings, symbol: str, channel: str, depth: int) -> list[Subscription]:
        """Every stream our ``channel`` of ``symbol`` needs on this venue (none: it does not publish it)."""
        templates = self.streams.get(channel, ())
        values = {**vars(settings), **self.stream_values(settings, depth), "symbol": symbol, "low": symbol.lower()}
        names = [t.format(**values) for t in ((templates,) if isinstance(templates, str) else templates)]
        return [Subscription(symbol, channel, name, self.request_param(settings, name)) for name in names]

    def publishes(self, channel: str) -> bool:
        """True when this venue has a stream for our ``channel``."""
        return bool(self.streams.get(channel))

    def route(self, sub: Subscription) -> str:
        """The route (key of ``routes``) a subscription lives on."""
        return next(iter(self.routes))

    def plan_connections(self, settings: VenueSettings, endpoints: Endpoints, symbols: list[str],
                         channels: list[str], depth: int) -> list[ConnectionPlan]:
        """Sockets per protocol and route, each carrying at most ``max_streams_per_connection``
        subscriptions; ``symbols`` are the archive's names (``spot/BTCUSDT``)."""
        if self._single(symbols):
            return self._plan(settings, endpoints, symbols, channels, depth)
        plans = []
        for decl, group in self.by_protocol(symbols).items():
            names = {split_market(s)[1]: s for s in group}
            for plan in decl._plan(settings, endpoints.of(decl.protocol_key), list(names), channels, depth):
                plan.protocol = decl.protocol_key
                plan.names = {wire: names[wire] for wire in plan.symbols if names[wire] != wire}
                if decl.protocol_key:
                    plan.name = f"{decl.protocol_key}-{plan.name}"
                plans.append(plan)
        return plans

    def _plan(self, settings: VenueSettings, endpoints: Endpoints, symbols: list[str],
              channels: list[str], depth: int) -> list[ConnectionPlan]:
        """This declaration's sockets for its own (wire) symbols."""
        by_route: dict[str, list[Subscription]] = {}
        for symbol in symbols:
            for channel in CHANNEL_ORDER:
                if channel in channels:
                    for sub in self.subscriptions_of(settings, symbol, channel, depth):
                        by_route.setdefault(self.route(sub), []).append(sub)
        # one yaml key for every protocol of the venue, each within its own documented limit
        per_conn = min(settings.max_streams_per_connection, self.connections.stream_limit or 1 << 30)
        plans = []
        for route, subs in sorted(by_route.items()):
            for i in range(0, len(subs), per_conn):
                chunk = subs[i:i + per_conn]
                plans.append(ConnectionPlan(
                    name=f"{route}-{i // per_conn}", url=f"{endpoints.ws_base}{self.routes[route]}",
                    symbols=list(dict.fromkeys(s.symbol for s in chunk)), channels=list(channels),
                    subscriptions=chunk, rest_base=endpoints.rest_base))
        return plans

    @abstractmethod
    def request_frame(self, op: str, params: list[Any], req_id: int) -> str:
        """A ``subscribe``/``unsubscribe`` request for ``params`` as the venue's text frame."""

    def make_client(self, plan: ConnectionPlan, settings: VenueSettings, sink: RowSink, depth: int) -> VenueClient:
        """Protocol state for one planned socket (rows named as the archive names its symbols)."""
        decl = self.protocols.get(plan.protocol, self) if plan.protocol else self
        return decl.Client(decl, plan, settings, QualifiedSink(sink, plan.names) if plan.names else sink, depth)

    # -- server side -----------------------------------------------------------------------
    def make_sim_server(self, symbols: list[str], sim_cfg: dict[str, Any], depth: int):
        """The venue's simulator (a ``SimulatedVenue``) for these symbols; symbols of several
        protocols get one simulator each behind one loopback port."""
        return self._servers(symbols, lambda decl, wire: decl._sim_server(wire, sim_cfg, depth))

    def _sim_server(self, symbols: list[str], sim_cfg: dict[str, Any], depth: int):
        if self.SimServer is None:
            raise ConfigError(f"source=sim: {self.name} has no simulator{' for ' + self.protocol_key if self.protocol_key else ''}")
        return self.SimServer(symbols, sim_cfg, depth)

    def make_replay_server(self, path: str, speed: float, symbols: list[str]):
        """A ``ReplayVenue`` serving the recording at ``path`` back over this venue's protocol(s)."""
        return self._servers(symbols, lambda decl, wire: decl._replay_server(path, speed, wire))

    def _replay_server(self, path: str, speed: float, symbols: list[str]):
        if self.ReplayServer is None:
            raise ConfigError(f"replay.file: {self.name} has no recording format to replay")
        return self.ReplayServer(path, speed, symbols)

    def _servers(self, symbols: list[str], make):
        """One server for bare symbols of the main protocol, else a ``MarketServers`` of one per protocol."""
        if self._single(symbols):
            return make(self, symbols)
        from actors.venues.sim.server import MarketServers

        servers, names = {}, {}
        for decl, group in self.by_protocol(symbols).items():
            wire = [split_market(s)[1] for s in group]
            servers[decl.protocol_key] = make(decl, wire)
            names.update((s, (decl.protocol_key, w)) for s, w in zip(group, wire))
        return MarketServers(servers, names)

    def recorded(self, symbol: str, recorded: set[str]) -> bool:
        """True when a recording holding ``recorded`` (:meth:`recording_symbols`) serves the archive
        symbol ``symbol``: named so, or the same wire symbol of the same protocol."""
        if symbol in recorded:
            return True
        bare = split_market(symbol)[1]
        return any(split_market(r)[1] == bare and self.protocol_of(r) is self.protocol_of(symbol) for r in recorded)

    def recording_matches(self, path: str) -> bool:
        """True when ``path`` is a recording of this venue (by its file name and first lines)."""
        suffix, lines = self.recording_sniff
        return bool(suffix) and str(path).endswith(suffix) and any(map(self.recorded_line, first_lines(path, lines)))

    def recorded_line(self, line: str) -> bool:
        """True for a line only this venue's recordings hold (see ``recording_sniff``)."""
        return False

    def recording_symbols(self, path: str) -> set[str]:
        """The symbols a recording holds."""
        return set()

    def replay_settings(self, settings: VenueSettings, path: str) -> VenueSettings:
        """Settings to replay ``path`` with (e.g. the stream names the recording holds)."""
        return settings
