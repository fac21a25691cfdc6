"""Binance USD-M futures: client, simulator and replay server of the public market-data protocol.

Wire protocol: ``../shared/protocols.md`` §1. Since 2026-04-23 streams are routed: book and
trade streams on ``/public``, aggTrade and the rest on ``/market``; a stream subscribed on the
wrong path is acknowledged and then silently never delivered, so routing is decided here.

Client (:class:`BinanceClient`), per symbol:

* diff depth (``<sym>@<depth_stream>``) synchronised with the REST snapshot exactly as
  Binance documents for USD-M (§1.5): buffer diffs, fetch ``/fapi/v1/depth``, drop diffs with
  ``u < lastUpdateId``, the first applied diff must straddle it (``U <= lastUpdateId <= u``),
  then every diff's ``pu`` must equal the previous ``u``. A break writes a ``gap`` event, the
  book is discarded and re-synchronised from a fresh snapshot (``resync`` event) before any
  book row is written again. A snapshot too old to bridge the buffer gives a ``stale`` event
  and is fetched again.
* one l2book row per applied diff: ``seq = u``, ``ts_exchange = T`` (transaction time, the
  matching engine's time; ``E`` is only the push time), top ``depth`` levels.
* trades from ``<sym>@trade`` (or ``@aggTrade`` when ``trade_stream: aggTrade``), side -1
  when ``m`` (buyer is maker, so the taker sold) else +1; frames with zero price or size
  ("spent" ids) are dropped.
* Binance pings every 3 minutes and websockets answers automatically; the connection is
  replaced before Binance's 24 h cut (``max_lifetime``).

Simulator (:class:`BinanceSimServer`): both routed paths, combined and raw streams, SUBSCRIBE
acks (ack-then-silence on the wrong path), REST depth consistent with the stream ids, and the
fault knobs ``drop_connection``, ``stall``, ``break_chain`` and ``malformed``.

Replay (:class:`BinanceReplayServer`): serves an hftbacktest-style recording back over the
same protocol; the REST snapshot is answered with the recorded one when the replay reaches it.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus

import orjson

from actors.feed.book import ASK, BID, OrderBook
from actors.storage.layout import parse_duration
from actors.venues.sim.recordings import first_lines, read_recording
from actors.feed.records import RowSink
from actors.venues.sim.market import SimSymbol
from actors.errors import ConfigError
from actors.venues.base import Action, ConnectionPlan, Endpoints, FetchSnapshot, Send, VenueClient, quote
from actors.venues.sim.server import ReplayVenue, Session, SimulatedVenue, VenueServer

NAME = "binance"
MARKET = "perp"
DEPTHS = (5, 10, 20, 50, 100, 500, 1000)      # REST snapshot limits; top-N is cut from the full book
PUBLIC_STREAMS = ("depth", "bookTicker", "trade", "rpiDepth")
MS = 1_000_000
MAX_BUFFERED_DIFFS = 20_000
SNAPSHOT_RETRY_NS = 1_000_000_000


# ----------------------------------------------------------------------------- config
def validate(venue_cfg: dict, symbols: list[str], channels: list[str], depth: int) -> None:
    """Raise ConfigError (one line) for settings this venue cannot serve."""
    if depth not in DEPTHS:
        raise ConfigError(f"depth: {depth} is not supported by binance (allowed: {', '.join(map(str, DEPTHS))})")
    limit = int(venue_cfg.get("snapshot_limit", 1000))
    if limit < depth:
        raise ConfigError(f"venues.binance.snapshot_limit: {limit} is below depth {depth}")
    for sym in symbols:
        if not sym.isalnum() or sym.upper() != sym:
            raise ConfigError(f"archive.binance: {sym!r} is not a Binance USD-M symbol (upper-case, e.g. BTCUSDT)")
    trade_stream = venue_cfg.get("trade_stream", "trade")
    if trade_stream not in ("trade", "aggTrade"):
        raise ConfigError(f"venues.binance.trade_stream: {trade_stream!r} (allowed: trade, aggTrade)")


def route(stream: str) -> str:
    """The routed path a stream lives on: ``/public`` or ``/market`` (protocols.md §1.1)."""
    kind = stream.split("@", 1)[1] if "@" in stream else stream
    return "/public" if kind.split("@")[0].startswith(PUBLIC_STREAMS) else "/market"


def plan_connections(venue_cfg: dict, endpoints: Endpoints, symbols: list[str], channels: list[str],
                     depth: int) -> list[ConnectionPlan]:
    """Sockets per routed path, sharded at ``max_streams_per_connection`` streams each."""
    per_conn = int(venue_cfg.get("max_streams_per_connection", 200))
    streams_by_path: dict[str, list[tuple[str, str]]] = {}
    for sym in symbols:
        for stream in _streams(venue_cfg, sym, channels):
            streams_by_path.setdefault(route(stream), []).append((sym, stream))
    plans = []
    for path, items in sorted(streams_by_path.items()):
        for i in range(0, len(items), per_conn):
            chunk = items[i:i + per_conn]
            names = [s for _, s in chunk]
            frame = orjson.dumps({"method": "SUBSCRIBE", "params": names, "id": len(plans) + 1}).decode()
            plans.append(ConnectionPlan(
                name=f"{path.strip('/')}-{i // per_conn}", url=f"{endpoints.ws_base}{path}/stream",
                symbols=list(dict.fromkeys(s for s, _ in chunk)), channels=list(channels),
                subscribe_frames=[frame], extra={"rest_base": endpoints.rest_base, "streams": names}))
    return plans


def _streams(venue_cfg: dict, symbol: str, channels: list[str]) -> list[str]:
    low = symbol.lower()
    out = []
    if "l2book" in channels:
        out.append(f"{low}@{venue_cfg.get('depth_stream', 'depth@100ms')}")
    if "trades" in channels:
        out.append(f"{low}@{venue_cfg.get('trade_stream', 'trade')}")
    return out


def make_client(plan: ConnectionPlan, venue_cfg: dict, sink: RowSink, depth: int) -> "BinanceClient":
    return BinanceClient(plan, venue_cfg, sink, depth)


# ----------------------------------------------------------------------------- client
@dataclass
class _BookState:
    book: OrderBook = field(default_factory=OrderBook)
    synced: bool = False
    last_u: int | None = None
    buffer: deque = field(default_factory=deque)     # (payload, ts_local) while unsynced
    snapshot_pending: bool = False
    snapshot: tuple[int, list, list] | None = None   # loaded snapshot waiting for its straddling diff
    retry_at: int = 0
    synced_once: bool = False


class BinanceClient(VenueClient):
    """Protocol state of one Binance USD-M socket (see module docstring)."""

    heartbeat_s = None          # the server pings; websockets answers with pongs

    def __init__(self, plan: ConnectionPlan, venue_cfg: dict, sink: RowSink, depth: int) -> None:
        self.plan, self.sink, self.depth = plan, sink, depth
        self.max_lifetime_s = parse_duration(venue_cfg.get("max_lifetime", "1430m"), "venues.binance.max_lifetime")
        self.rest_base = plan.extra.get("rest_base", venue_cfg.get("rest_base", ""))
        self.limit = int(venue_cfg.get("snapshot_limit", 1000))
        self.streams: dict[str, tuple[str, str]] = {}   # stream name -> (symbol, kind)
        for stream in plan.extra.get("streams", []):
            sym_low, kind = stream.split("@", 1)
            self.streams[stream] = (sym_low.upper(), kind.split("@")[0])
        self.symbols = list(plan.symbols)
        self.states = {sym: _BookState() for sym in self.symbols}
        self.pending_acks: dict[int, list[str]] = {}
        self.dropped_trades = 0

    # -- connection ----------------------------------------------------------------------
    def on_connect(self, ts_local: int) -> list[Action]:
        actions: list[Action] = []
        for sym in self.symbols:
            self.sink.event(sym, ts_local, "", "connect", self.plan.url)
            self.states[sym] = _BookState()
        for frame in self.plan.subscribe_frames:
            req = orjson.loads(frame)
            self.pending_acks[req["id"]] = list(req["params"])
            actions.append(Send(frame))
        return actions

    def on_disconnect(self, ts_local: int, reason: str) -> None:
        self.event_all(ts_local, "disconnect", reason)
        for sym in self.symbols:
            self.states[sym] = _BookState()

    # -- frames --------------------------------------------------------------------------
    def on_frame(self, data: str | bytes, ts_local: int) -> list[Action]:
        msg = self.decode(data, ts_local)
        if msg is None:
            return []
        try:
            if "stream" in msg and "data" in msg:
                return self._on_payload(msg["stream"], msg["data"], ts_local)
            if "e" in msg:                                       # raw (non-combined) stream
                stream = f"{str(msg.get('s', '')).lower()}@{msg['e']}"
                return self._on_payload(stream, msg, ts_local)
            if "id" in msg and "result" in msg:
                self._on_ack(msg, ts_local)
                return []
            if "code" in msg or "error" in msg:
                self.event_all(ts_local, "error", f"venue error: {quote(data)}")
                return []
        except (KeyError, TypeError, ValueError) as exc:
            self.event_all(ts_local, "error", f"unexpected frame ({type(exc).__name__}: {exc}): {quote(data)}")
            return []
        return []

    def _on_ack(self, msg: dict, ts_local: int) -> None:
        streams = self.pending_acks.pop(msg["id"], [])
        for stream in streams:
            sym, kind = self.streams.get(stream, (stream.split("@")[0].upper(), ""))
            channel = "l2book" if kind == "depth" else "trades"
            if sym in self.states:
                self.sink.event(sym, ts_local, channel, "subscribed", stream)

    def _on_payload(self, stream: str, payload: dict, ts_local: int) -> list[Action]:
        event = payload.get("e")
        sym = str(payload.get("s", "")).upper()
        if sym not in self.states:
            return []
        if event == "depthUpdate":
            return self._on_depth(sym, payload, ts_local)
        if event in ("trade", "aggTrade"):
            self._on_trade(sym, payload, ts_local)
        return []

    def _on_trade(self, sym: str, t: dict, ts_local: int) -> None:
        price, size = float(t["p"]), float(t["q"])
        if price == 0.0 or size == 0.0:
            self.dropped_trades += 1
            return
        trade_id = str(t["t"] if t.get("e") == "trade" else t["a"])
        self.sink.trade(sym, ts_local, int(t["T"]) * MS, trade_id, price, size, -1 if t["m"] else 1)

    # -- depth sync ----------------------------------------------------------------------
    def _on_depth(self, sym: str, d: dict, ts_local: int) -> list[Action]:
        st = self.states[sym]
        if st.synced:
            if d["pu"] != st.last_u:
                return self._gap(sym, st, d, ts_local)
            self._apply(sym, st, d, ts_local)
            return [] if st.synced else self._fetch(sym, st, ts_local, force=True)
        st.buffer.append((d, ts_local))
        if len(st.buffer) > MAX_BUFFERED_DIFFS:
            st.buffer.popleft()
        if st.snapshot is not None:
            return self._bridge(sym, st, ts_local)
        return self._fetch(sym, st, ts_local)

    def _fetch(self, sym: str, st: _BookState, ts_local: int, force: bool = False) -> list[Action]:
        if st.snapshot_pending or (not force and ts_local < st.retry_at):
            return []
        st.snapshot_pending = True
        return [FetchSnapshot(sym, f"{self.rest_base}/fapi/v1/depth?symbol={sym}&limit={self.limit}")]

    def _gap(self, sym: str, st: _BookState, d: dict, ts_local: int) -> list[Action]:
        self.sink.event(sym, ts_local, "l2book", "gap", f"pu {d['pu']} != previous u {st.last_u}",
                        st.last_u, d["u"])
        st.synced = False
        st.book.clear()
        st.buffer.clear()
        st.buffer.append((d, ts_local))
        st.snapshot = None
        return self._fetch(sym, st, ts_local, force=True)

    def on_snapshot(self, symbol: str, body: bytes | None, ts_local: int,
                    error: str | None = None) -> list[Action]:
        st = self.states.get(symbol)
        if st is None:
            return []
        st.snapshot_pending = False
        if error is not None or body is None:
            self.sink.event(symbol, ts_local, "l2book", "error", f"snapshot failed: {error}"[:2000])
            st.retry_at = ts_local + SNAPSHOT_RETRY_NS
            return []
        try:
            snap = orjson.loads(body)
            st.snapshot = (int(snap["lastUpdateId"]), snap["bids"], snap["asks"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self.sink.event(symbol, ts_local, "l2book", "error", f"bad snapshot ({exc}): {quote(body)}")
            st.retry_at = ts_local + SNAPSHOT_RETRY_NS
            return []
        if st.synced:
            st.snapshot = None
            return []
        return self._bridge(symbol, st, ts_local)

    def _bridge(self, sym: str, st: _BookState, ts_local: int) -> list[Action]:
        """Apply the loaded snapshot and the buffered diffs once a diff straddles it."""
        last_id, bids, asks = st.snapshot
        while st.buffer and st.buffer[0][0]["u"] < last_id:
            st.buffer.popleft()
        if not st.buffer:
            return []                                # wait for the straddling diff
        first = st.buffer[0][0]
        if first["U"] > last_id:                     # snapshot older than everything buffered
            self.sink.event(sym, ts_local, "l2book", "stale",
                            f"snapshot {last_id} older than first buffered diff U={first['U']}",
                            last_id, first["U"])
            st.snapshot = None
            return self._fetch(sym, st, ts_local, force=True)
        st.book.load_snapshot(bids, asks)
        st.snapshot = None
        kind = "resync" if st.synced_once else "snapshot"
        self.sink.event(sym, ts_local, "l2book", kind, f"lastUpdateId {last_id}", last_id, first["u"])
        st.synced = st.synced_once = True
        st.last_u = None
        buffered, st.buffer = list(st.buffer), deque()
        for d, ts in buffered:
            if st.last_u is not None and d["pu"] != st.last_u:
                return self._gap(sym, st, d, ts)
            self._apply(sym, st, d, ts)
            if not st.synced:
                return self._fetch(sym, st, ts_local, force=True)
        return []

    def _apply(self, sym: str, st: _BookState, d: dict, ts_local: int) -> None:
        st.book.apply_levels(d["b"], d["a"])
        st.last_u = d["u"]
        if st.book.crossed():
            self.sink.event(sym, ts_local, "l2book", "crossed",
                            f"best bid {st.book.best_bid()} >= best ask {st.book.best_ask()} at u={d['u']}",
                            d["u"], d["u"])
            st.synced = False
            st.book.clear()
            return
        self.sink.book(sym, ts_local, int(d["T"]) * MS, d["u"], *st.book.top(self.depth))


# ----------------------------------------------------------------------------- server side
def _parse_subscription(session: Session, stream: str) -> None:
    """Subscribe a session; a stream on the wrong routed path is acked but stays silent."""
    if route(stream) == session.path.split("/stream")[0].split("/ws")[0]:
        session.streams.add(stream)
    else:
        session.silent.add(stream)


class _BinanceServerBase(VenueServer):
    """Routing and control frames shared by the simulator and the replay server."""

    ws_paths = ("/public", "/market")

    async def on_open(self, session: Session) -> None:
        names = []
        if "streams" in session.query:
            names = session.query["streams"][-1].split("/")
        elif "/ws/" in session.path:
            names = session.path.split("/ws/", 1)[1].split("/")
        session.combined = "/stream" in session.path  # type: ignore[attr-defined]
        for name in filter(None, names):
            _parse_subscription(session, name)
        if names:
            self.on_subscribed(session)

    async def on_message(self, session: Session, message: str | bytes) -> None:
        try:
            req = orjson.loads(message)
            method, req_id = req["method"], req.get("id")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await self.send(session, '{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}')
            return
        if method == "SUBSCRIBE":
            for stream in req.get("params", []):
                _parse_subscription(session, stream)
            await self.send(session, orjson.dumps({"result": None, "id": req_id}).decode())
            self.on_subscribed(session)
        elif method == "UNSUBSCRIBE":
            for stream in req.get("params", []):
                session.streams.discard(stream)
                session.silent.discard(stream)
            await self.send(session, orjson.dumps({"result": None, "id": req_id}).decode())
        elif method == "LIST_SUBSCRIPTIONS":
            await self.send(session, orjson.dumps({"result": sorted(session.streams | session.silent),
                                                   "id": req_id}).decode())
        else:
            await self.send(session, orjson.dumps({
                "code": 2, "msg": f"Invalid request: unknown variant {method}, expected one of SUBSCRIBE, "
                                  "UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY", "id": req_id}).decode())

    def on_subscribed(self, session: Session) -> None:
        """A session's subscriptions changed."""

    async def push(self, stream: str, payload: str) -> int:
        """Send a payload to every session subscribed to ``stream``; number of sessions reached."""
        reached = 0
        for session in list(self.sessions):
            if stream in session.streams:
                text = f'{{"stream":"{stream}","data":{payload}}}' if getattr(session, "combined", True) else payload
                if await self.send(session, text):
                    reached += 1
        return reached


class BinanceSimServer(SimulatedVenue, _BinanceServerBase):
    """Synthetic Binance USD-M market on loopback (see module docstring)."""

    def __init__(self, symbols: list[str], sim_cfg: dict, depth: int) -> None:
        SimulatedVenue.__init__(self, symbols, sim_cfg, depth)
        for s in self.symbols.values():
            s.last_u = 1_000_000_000 + s.market.rng.randrange(1_000_000)

    async def step(self, s: SimSymbol) -> int:
        step = s.market.step()
        now_ms = int(time.time() * 1000)
        sent = 0
        if step.trade is not None:
            t = step.trade
            payload = (f'{{"e":"trade","E":{now_ms},"T":{now_ms},"s":"{s.symbol}","t":{t.trade_id},'
                       f'"p":"{t.price_str}","q":"{t.size_str}","X":"MARKET","m":{"true" if t.side < 0 else "false"}}}')
            self.record_trade(s, t, await self.push(f"{s.low}@trade", payload))
            sent += 1
        first = s.last_u + 1
        u = s.last_u + len(step.changes) + s.market.rng.randrange(3)
        bids = [[c.price, c.size] for c in step.changes if c.side == BID]
        asks = [[c.price, c.size] for c in step.changes if c.side == ASK]
        payload = orjson.dumps({"e": "depthUpdate", "E": now_ms, "T": now_ms, "s": s.symbol, "U": first, "u": u,
                                "pu": s.last_u, "b": bids, "a": asks}).decode()
        s.last_u = u
        self.record_book(s, u)
        if not self.take_skip(s):
            for name in self._depth_streams(s):
                await self.push(name, payload)
        return sent + 1

    def _depth_streams(self, s: SimSymbol) -> set[str]:
        names = set()
        for session in self.sessions:
            for stream in session.streams:
                if stream.startswith(f"{s.low}@depth"):
                    names.add(stream)
        return names

    async def http(self, path: str, query: dict[str, str]) -> tuple[HTTPStatus, str]:
        if path != "/fapi/v1/depth":
            return HTTPStatus.NOT_FOUND, '{"code":-1,"msg":"not found"}'
        s = self.symbols.get(query.get("symbol", ""))
        if s is None:
            return HTTPStatus.BAD_REQUEST, '{"code":-1121,"msg":"Invalid symbol."}'
        limit = int(query.get("limit", 500))
        bids, asks = s.market.snapshot(limit)
        now_ms = int(time.time() * 1000)
        return HTTPStatus.OK, orjson.dumps({"lastUpdateId": s.last_u, "E": now_ms, "T": now_ms,
                                            "bids": bids, "asks": asks}).decode()

    async def malformed(self) -> None:
        for session in list(self.sessions):
            await self.send(session, '{"stream":"btcusdt@depth","data":{"e":"depthUpdate",')


def make_sim_server(symbols: list[str], sim_cfg: dict, depth: int) -> BinanceSimServer:
    return BinanceSimServer(symbols, sim_cfg, depth)


# ----------------------------------------------------------------------------- replay
def _is_snapshot(payload: str) -> bool:
    return '"lastUpdateId"' in payload[:64] and '"stream"' not in payload[:16]


def recording_matches(path: str) -> bool:
    """True for an hftbacktest-style Binance USD-M recording (combined streams with ``pu``)."""
    if not str(path).endswith(".gz"):
        return False
    for line in first_lines(path, 200):
        if '"e":"depthUpdate"' in line and '"pu":' in line and '"stream":"' in line:
            return True
    return False


def _recorded_streams(path: str, limit: int = 5000) -> set[str]:
    streams = set()
    for n, rec in enumerate(read_recording(path)):
        if n >= limit:
            break
        if rec.payload.startswith('{"stream":"'):
            streams.add(rec.payload[11:rec.payload.index('"', 11)])
    return streams


def recording_symbols(path: str) -> set[str]:
    return {s.split("@")[0].upper() for s in _recorded_streams(path)}


def replay_venue_cfg(venue_cfg: dict, path: str) -> dict:
    """Subscribe to the depth and trade stream names the recording holds."""
    cfg = dict(venue_cfg)
    for stream in _recorded_streams(path):
        kind = stream.split("@", 1)[1]
        if kind.startswith("depth") and not kind[5:6].isdigit():
            cfg["depth_stream"] = kind
        elif kind in ("trade", "aggTrade"):
            cfg["trade_stream"] = kind
    return cfg


class BinanceReplayServer(ReplayVenue, _BinanceServerBase):
    """Serves a recording back over the Binance protocol (see module docstring)."""

    def __init__(self, path: str, speed: float, symbols: list[str]) -> None:
        super().__init__(path, speed, [s.lower() for s in symbols])
        self.snapshots_left = True
        self.waiting: list[asyncio.Future] = []
        self.waiter_arrived = asyncio.Event()

    def on_subscribed(self, session: Session) -> None:
        if session.streams:
            self.subscribed.set()

    def stream_of(self, rec) -> str | None:
        if not rec.payload.startswith('{"stream":"'):
            return None
        stream = rec.payload[11:rec.payload.index('"', 11)]
        return stream if stream.split("@")[0] in self.symbols else None

    async def on_record(self, rec) -> bool:
        if _is_snapshot(rec.payload):
            await self._serve_snapshot(rec.payload)
            return True
        return False

    async def on_finished(self) -> None:
        self.snapshots_left = False
        for future in self.waiting:
            if not future.done():
                future.set_result(None)

    async def http(self, path: str, query: dict[str, str]) -> tuple[HTTPStatus, str]:
        if path != "/fapi/v1/depth":
            return HTTPStatus.NOT_FOUND, '{"code":-1,"msg":"not found"}'
        if not self.snapshots_left:
            return HTTPStatus.SERVICE_UNAVAILABLE, '{"code":-1,"msg":"the recording holds no further depth snapshot"}'
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.waiter_arrived.set()
        body = await future
        if body is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, '{"code":-1,"msg":"the recording holds no further depth snapshot"}'
        return HTTPStatus.OK, body

    async def _serve_snapshot(self, body: str) -> None:
        """Answer the pending snapshot request(s) with the recorded one (waiting briefly for one)."""
        if not self.waiting:
            self.waiter_arrived.clear()
            try:
                await asyncio.wait_for(self.waiter_arrived.wait(), 10)
            except asyncio.TimeoutError:
                return
        waiting, self.waiting = self.waiting, []
        for future in waiting:
            if not future.done():
                future.set_result(body)


def make_replay_server(path: str, speed: float, symbols: list[str]) -> BinanceReplayServer:
    return BinanceReplayServer(path, speed, symbols)
