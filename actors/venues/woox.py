"""WOO X v3 public: client and simulator (``../shared/protocols.md`` §7). No recording exists.

Client (:class:`WooxClient`):

* ``orderbookupdate@{symbol}@{50|200|500}`` deltas synchronised with the REST snapshot
  ``/v3/public/orderbook?symbol=…&maxLevel=…``: buffer updates, fetch the snapshot, start at
  the update whose ``prevTs`` equals the snapshot's timestamp, then require
  ``prevTs == previous data.ts``. A break: ``gap`` event, fresh snapshot, ``resync`` event.
  One l2book row per applied update, ``seq = data.ts`` (the chaining id), ``ts_exchange = data.ts``.
* ``trade@{symbol}``: ``sd`` taker side, ``px``/``sx``. The v3 trade payload carries no trade
  id, so ``trade_id`` is ``{data.ts}-{n}`` (n = position among trades with the same ``ts`` in
  this message); documented as an approximation.
* The server pings with ``{"cmd":"PING"}``; the client answers ``{"cmd":"PONG"}``. Connections
  last at most 24 h (planned reconnect before).

Unverified (no official text or capture seen): the ack shape and the REST snapshot's exact
shape; the client accepts ``[px, sz]`` lists or ``{"price","quantity"}`` objects and the
timestamp as ``data.ts``, ``data.timestamp`` or a top-level ``timestamp``.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus

import orjson

from actors.feed.book import ASK, BID, OrderBook
from actors.storage.layout import parse_duration
from actors.feed.records import RowSink
from actors.venues.sim.market import SimSymbol
from actors.errors import ConfigError
from actors.venues.base import Action, ConnectionPlan, Endpoints, FetchSnapshot, Send, VenueClient, quote
from actors.venues.sim.server import Session, SimulatedVenue

NAME = "woox"
MARKET = "perp"
MS = 1_000_000
PARAMS_PER_REQUEST = 20
SNAPSHOT_RETRY_NS = 1_000_000_000


def validate(venue_cfg: dict, symbols: list[str], channels: list[str], depth: int) -> None:
    limit = int(venue_cfg.get("snapshot_levels", 500))
    if depth < 1 or depth > limit:
        raise ConfigError(f"depth: {depth} is not supported by woox (allowed: 1..{limit})")
    for sym in symbols:
        if not sym.startswith(("PERP_", "SPOT_")) or sym.upper() != sym:
            raise ConfigError(f"archive.woox: {sym!r} is not a WOO X symbol (e.g. PERP_BTC_USDT)")


def plan_connections(venue_cfg: dict, endpoints: Endpoints, symbols: list[str], channels: list[str],
                     depth: int) -> list[ConnectionPlan]:
    """Sockets of at most ``max_topics_per_connection`` (≤100) topics on ``/v3/public``."""
    per_conn = min(100, int(venue_cfg.get("max_topics_per_connection", 100)))
    speed = venue_cfg.get("book_speed", 50)
    topics = [(s, t) for s in symbols for t in
              ([f"orderbookupdate@{s}@{speed}"] if "l2book" in channels else []) +
              ([f"trade@{s}"] if "trades" in channels else [])]
    plans = []
    for i in range(0, len(topics), per_conn):
        chunk = topics[i:i + per_conn]
        names = [t for _, t in chunk]
        frames = [orjson.dumps({"id": str(j // PARAMS_PER_REQUEST + 1), "cmd": "subscribe",
                                "params": names[j:j + PARAMS_PER_REQUEST]}).decode()
                  for j in range(0, len(names), PARAMS_PER_REQUEST)]
        plans.append(ConnectionPlan(name=f"public-{i // per_conn}", url=f"{endpoints.ws_base}/v3/public",
                                    symbols=list(dict.fromkeys(s for s, _ in chunk)), channels=list(channels),
                                    subscribe_frames=frames, extra={"rest_base": endpoints.rest_base,
                                                                    "topics": names}))
    return plans


def make_client(plan: ConnectionPlan, venue_cfg: dict, sink: RowSink, depth: int) -> "WooxClient":
    return WooxClient(plan, venue_cfg, sink, depth)


@dataclass
class _BookState:
    book: OrderBook = field(default_factory=OrderBook)
    synced: bool = False
    last_ts: int | None = None
    buffer: deque = field(default_factory=deque)
    pending: bool = False
    snapshot: tuple[int, list, list] | None = None
    retry_at: int = 0
    synced_once: bool = False


def _levels(levels: list) -> list[list]:
    return [[lv["price"], lv["quantity"]] if isinstance(lv, dict) else lv for lv in levels]


class WooxClient(VenueClient):
    """Protocol state of one WOO X v3 socket (see module docstring)."""

    heartbeat_s = None          # the server pings with a JSON frame; we answer in on_frame

    def __init__(self, plan: ConnectionPlan, venue_cfg: dict, sink: RowSink, depth: int) -> None:
        self.plan, self.sink, self.depth = plan, sink, depth
        self.max_lifetime_s = parse_duration(venue_cfg.get("max_lifetime", "1430m"), "venues.woox.max_lifetime")
        self.rest_base = plan.extra.get("rest_base", venue_cfg.get("rest_base", ""))
        self.levels = int(venue_cfg.get("snapshot_levels", 500))
        self.symbols = list(plan.symbols)
        self.states = {s: _BookState() for s in self.symbols}
        self.requests: dict[str, list[str]] = {}

    def on_connect(self, ts_local: int) -> list[Action]:
        self.event_all(ts_local, "connect", self.plan.url)
        for sym in self.symbols:
            self.states[sym] = _BookState()
        actions: list[Action] = []
        for frame in self.plan.subscribe_frames:
            req = orjson.loads(frame)
            self.requests[req["id"]] = list(req["params"])
            actions.append(Send(frame))
        return actions

    def on_disconnect(self, ts_local: int, reason: str) -> None:
        self.event_all(ts_local, "disconnect", reason)
        for sym in self.symbols:
            self.states[sym] = _BookState()

    def on_frame(self, data: str | bytes, ts_local: int) -> list[Action]:
        msg = self.decode(data, ts_local)
        if msg is None:
            return []
        try:
            cmd = msg.get("cmd")
            if cmd == "PING":
                return [Send('{"cmd":"PONG"}')]
            if cmd in ("SUBSCRIBE", "subscribe") or "success" in msg and "topic" not in msg:
                self._on_ack(msg, ts_local)
                return []
            if cmd == "ERROR":
                self.event_all(ts_local, "error", f"venue error: {quote(data)}")
                return []
            topic = msg.get("topic", "")
            if topic.startswith("orderbookupdate@"):
                return self._on_update(topic.split("@")[1], msg["data"], ts_local)
            if topic.startswith("trade@"):
                self._on_trades(topic.split("@")[1], msg["data"], ts_local)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self.event_all(ts_local, "error", f"unexpected frame ({type(exc).__name__}: {exc}): {quote(data)}")
        return []

    def _on_ack(self, msg: dict, ts_local: int) -> None:
        topics = self.requests.pop(str(msg.get("id", "")), self.plan.extra.get("topics", []))
        for topic in topics:
            sym = topic.split("@")[1]
            if sym not in self.states:
                continue
            channel = "l2book" if topic.startswith("orderbook") else "trades"
            if msg.get("success", True):
                self.sink.event(sym, ts_local, channel, "subscribed", topic)
            else:
                self.sink.event(sym, ts_local, channel, "error", f"subscribe {topic} failed: {quote(str(msg))}")

    def _on_trades(self, sym: str, data, ts_local: int) -> None:
        if sym not in self.states:
            return
        per_ts: dict[int, int] = {}
        for t in data if isinstance(data, list) else [data]:
            ts = int(t["ts"])
            n = per_ts.get(ts, 0)
            per_ts[ts] = n + 1
            self.sink.trade(sym, ts_local, ts * MS, f"{ts}-{n}", float(t["px"]), float(t["sx"]),
                            1 if str(t["sd"]).upper() == "BUY" else -1)

    def _on_update(self, sym: str, d: dict, ts_local: int) -> list[Action]:
        st = self.states.get(sym)
        if st is None:
            return []
        if st.synced:
            if int(d["prevTs"]) != st.last_ts:
                return self._gap(sym, st, d, ts_local)
            self._apply(sym, st, d, ts_local)
            return []
        st.buffer.append((d, ts_local))
        if st.snapshot is not None:
            return self._bridge(sym, st, ts_local)
        return self._fetch(sym, st, ts_local)

    def _fetch(self, sym: str, st: _BookState, ts_local: int, force: bool = False) -> list[Action]:
        if st.pending or (not force and ts_local < st.retry_at):
            return []
        st.pending = True
        return [FetchSnapshot(sym, f"{self.rest_base}/v3/public/orderbook?symbol={sym}&maxLevel={self.levels}")]

    def _gap(self, sym: str, st: _BookState, d: dict, ts_local: int) -> list[Action]:
        self.sink.event(sym, ts_local, "l2book", "gap", f"prevTs {d['prevTs']} != previous ts {st.last_ts}",
                        st.last_ts, int(d["ts"]))
        st.synced, st.snapshot = False, None
        st.book.clear()
        st.buffer.clear()
        st.buffer.append((d, ts_local))
        return self._fetch(sym, st, ts_local, force=True)

    def on_snapshot(self, symbol: str, body: bytes | None, ts_local: int,
                    error: str | None = None) -> list[Action]:
        st = self.states.get(symbol)
        if st is None:
            return []
        st.pending = False
        try:
            if error is not None or body is None:
                raise ValueError(error or "empty body")
            snap = orjson.loads(body)
            data = snap.get("data", snap)
            stamp = data.get("ts") or data.get("timestamp") or snap.get("timestamp")
            st.snapshot = (int(stamp), _levels(data["bids"]), _levels(data["asks"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self.sink.event(symbol, ts_local, "l2book", "error", f"snapshot failed: {exc}"[:2000])
            st.retry_at = ts_local + SNAPSHOT_RETRY_NS
            return []
        return [] if st.synced else self._bridge(symbol, st, ts_local)

    def _bridge(self, sym: str, st: _BookState, ts_local: int) -> list[Action]:
        stamp, bids, asks = st.snapshot
        while st.buffer and int(st.buffer[0][0]["prevTs"]) < stamp:
            st.buffer.popleft()
        if not st.buffer:
            return []
        first = st.buffer[0][0]
        if int(first["prevTs"]) != stamp:
            self.sink.event(sym, ts_local, "l2book", "stale",
                            f"snapshot ts {stamp} does not chain to prevTs {first['prevTs']}", stamp, int(first["ts"]))
            st.snapshot = None
            return self._fetch(sym, st, ts_local, force=True)
        st.book.load_snapshot(bids, asks)
        st.snapshot = None
        self.sink.event(sym, ts_local, "l2book", "resync" if st.synced_once else "snapshot", f"ts {stamp}",
                        stamp, int(first["ts"]))
        st.synced = st.synced_once = True
        st.last_ts = stamp
        buffered, st.buffer = list(st.buffer), deque()
        for d, ts in buffered:
            if int(d["prevTs"]) != st.last_ts:
                return self._gap(sym, st, d, ts)
            self._apply(sym, st, d, ts)
        return []

    def _apply(self, sym: str, st: _BookState, d: dict, ts_local: int) -> None:
        st.book.apply_levels(_levels(d["bids"]), _levels(d["asks"]))
        st.last_ts = int(d["ts"])
        if st.book.crossed():
            self.sink.event(sym, ts_local, "l2book", "crossed", f"crossed at ts {d['ts']}", st.last_ts, st.last_ts)
            st.synced = False
            st.book.clear()
            return
        self.sink.book(sym, ts_local, st.last_ts * MS, st.last_ts, *st.book.top(self.depth))


# ----------------------------------------------------------------------------- simulator
class WooxSimServer(SimulatedVenue):
    """Synthetic WOO X market: ``prevTs``-chained book updates, REST snapshots, JSON PINGs."""

    ws_paths = ("/v3/public",)

    async def on_open(self, session: Session) -> None:
        await self.send(session, '{"cmd":"PING","ts":%d}' % int(time.time() * 1000))

    async def on_message(self, session: Session, message: str | bytes) -> None:
        try:
            req = orjson.loads(message)
            cmd = req["cmd"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await self.send(session, '{"cmd":"ERROR","success":false,"msg":"invalid request"}')
            return
        if cmd == "PONG":
            return
        params = list(req.get("params") or [])
        if cmd == "subscribe":
            bad = [p for p in params if p.split("@")[1:2] and p.split("@")[1] not in self.symbols]
            await self.send(session, orjson.dumps({"id": req.get("id"), "cmd": "SUBSCRIBE", "success": not bad,
                                                   "ts": int(time.time() * 1000)}).decode())
            if not bad:
                session.streams.update(params)
        elif cmd == "unsubscribe":
            session.streams.difference_update(params)

    async def http(self, path: str, query: dict[str, str]) -> tuple[HTTPStatus, str]:
        if path != "/v3/public/orderbook":
            return HTTPStatus.NOT_FOUND, '{"success":false,"message":"not found"}'
        s = self.symbols.get(query.get("symbol", ""))
        if s is None:
            return HTTPStatus.BAD_REQUEST, '{"success":false,"message":"symbol not exist"}'
        bids, asks = s.market.snapshot(int(query.get("maxLevel", 100)))
        stamp = s.last_u or self._tick(s)
        return HTTPStatus.OK, orjson.dumps({"success": True, "data": {
            "bids": [{"price": p, "quantity": q} for p, q in bids],
            "asks": [{"price": p, "quantity": q} for p, q in asks], "ts": stamp}, "timestamp": stamp}).decode()

    def _tick(self, s: SimSymbol) -> int:
        s.last_u = max(s.last_u + 1, int(time.time() * 1000))
        return s.last_u

    async def step(self, s: SimSymbol) -> int:
        step = s.market.step()
        prev = s.last_u or self._tick(s)
        now = self._tick(s)
        sent = 0
        if step.trade is not None:
            t = step.trade
            payload = orjson.dumps({"topic": f"trade@{s.symbol}", "ts": now, "data": {
                "ts": now, "px": t.price_str, "sx": t.size_str, "sd": "BUY" if t.side > 0 else "SELL", "src": 1,
                "s": s.symbol}}).decode()
            self.record_trade(s, t, await self._push(f"trade@{s.symbol}", payload))
            sent += 1
        self.record_book(s, now)
        if not self.take_skip(s):
            bids = [[c.price, c.size] for c in step.changes if c.side == BID]
            asks = [[c.price, c.size] for c in step.changes if c.side == ASK]
            for topic in {t for sess in self.sessions for t in sess.streams
                          if t.startswith(f"orderbookupdate@{s.symbol}@")}:
                await self._push(topic, orjson.dumps({"topic": topic, "ts": now, "data": {
                    "s": s.symbol, "prevTs": prev, "asks": asks, "bids": bids, "ts": now}}).decode())
        return sent + 1

    async def _push(self, topic: str, payload: str) -> int:
        reached = 0
        for session in list(self.sessions):
            if topic in session.streams and await self.send(session, payload):
                reached += 1
        return reached


def make_sim_server(symbols: list[str], sim_cfg: dict, depth: int) -> WooxSimServer:
    return WooxSimServer(symbols, sim_cfg, depth)
