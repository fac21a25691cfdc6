"""Bybit v5 public linear: client, simulator and replay server (``../shared/protocols.md`` §3).

Client (:class:`BybitClient`):

* ``orderbook.{1,50,200,1000}.{symbol}``: the smallest depth >= the archived depth (depth 20
  → ``orderbook.50``, as quantpylib does). A ``snapshot`` (or any message with ``u == 1``,
  a service restart) replaces the book; each ``delta`` must carry ``u == previous u + 1``.
  On a break: ``gap`` event, the book is dropped, and the topic is unsubscribed and
  subscribed again to get a fresh snapshot (``resync`` event when it arrives). One l2book
  row per applied message, ``seq = u``, ``ts_exchange = cts`` (matching-engine time) when
  present, else ``ts``.
* ``publicTrade.{symbol}``: taker side ``S`` (Buy +1, Sell -1), UUID ids ``i``, fill time ``T``.
* ``{"op":"ping"}`` every 20 s; acks (one per request) give ``subscribed`` or ``error`` events.

The simulator publishes the top-N view of a synthetic book as Bybit does (snapshot on
subscribe, then deltas of the levels that changed inside the view); the replay server serves a
cryptofeed capture back, topic by topic.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from http import HTTPStatus  # noqa: F401  (kept for symmetry with other venues' REST handlers)

import orjson

from actors.feed.book import OrderBook
from actors.storage.layout import parse_duration
from actors.venues.sim.recordings import first_lines, read_recording
from actors.feed.records import RowSink
from actors.venues.sim.market import SimSymbol
from actors.errors import ConfigError
from actors.venues.base import Action, ConnectionPlan, Endpoints, Send, VenueClient, quote
from actors.venues.sim.server import ReplayVenue, Session, SimulatedVenue, VenueServer

NAME = "bybit"
MARKET = "perp"
BOOK_DEPTHS = (1, 50, 200, 1000)
MS = 1_000_000
ARGS_PER_REQUEST = 10


def book_depth(depth: int, venue_cfg: dict | None = None) -> int:
    """The Bybit book topic depth used for an archived depth (override: ``book_depth``)."""
    override = (venue_cfg or {}).get("book_depth")
    if override:
        return int(override)
    return next(d for d in BOOK_DEPTHS if d >= depth)


def validate(venue_cfg: dict, symbols: list[str], channels: list[str], depth: int) -> None:
    if depth < 1 or depth > BOOK_DEPTHS[-1]:
        raise ConfigError(f"depth: {depth} is not supported by bybit (allowed: 1..1000; books "
                          f"{', '.join(map(str, BOOK_DEPTHS))})")
    for sym in symbols:
        if not sym.isalnum() or sym.upper() != sym:
            raise ConfigError(f"archive.bybit: {sym!r} is not a Bybit linear symbol (upper-case, e.g. BTCUSDT)")


def _topics(venue_cfg: dict, symbol: str, channels: list[str], depth: int) -> list[str]:
    out = []
    if "l2book" in channels:
        out.append(f"orderbook.{book_depth(depth, venue_cfg)}.{symbol}")
    if "trades" in channels:
        out.append(f"publicTrade.{symbol}")
    return out


def plan_connections(venue_cfg: dict, endpoints: Endpoints, symbols: list[str], channels: list[str],
                     depth: int) -> list[ConnectionPlan]:
    """One socket per ``max_topics_per_connection`` topics on ``/v5/public/linear``."""
    per_conn = int(venue_cfg.get("max_topics_per_connection", 200))
    topics = [(sym, t) for sym in symbols for t in _topics(venue_cfg, sym, channels, depth)]
    plans = []
    for i in range(0, len(topics), per_conn):
        chunk = topics[i:i + per_conn]
        names = [t for _, t in chunk]
        frames = [orjson.dumps({"req_id": str(j // ARGS_PER_REQUEST + 1), "op": "subscribe",
                                "args": names[j:j + ARGS_PER_REQUEST]}).decode()
                  for j in range(0, len(names), ARGS_PER_REQUEST)]
        plans.append(ConnectionPlan(name=f"linear-{i // per_conn}", url=f"{endpoints.ws_base}/v5/public/linear",
                                    symbols=list(dict.fromkeys(s for s, _ in chunk)), channels=list(channels),
                                    subscribe_frames=frames, extra={"topics": names}))
    return plans


def make_client(plan: ConnectionPlan, venue_cfg: dict, sink: RowSink, depth: int) -> "BybitClient":
    return BybitClient(plan, venue_cfg, sink, depth)


@dataclass
class _BookState:
    book: OrderBook = field(default_factory=OrderBook)
    synced: bool = False
    last_u: int | None = None
    synced_once: bool = False


class BybitClient(VenueClient):
    """Protocol state of one Bybit linear socket (see module docstring)."""

    def __init__(self, plan: ConnectionPlan, venue_cfg: dict, sink: RowSink, depth: int) -> None:
        self.plan, self.sink, self.depth = plan, sink, depth
        self.heartbeat_s = float(venue_cfg.get("ping_s", 20))
        lifetime = venue_cfg.get("max_lifetime")
        self.max_lifetime_s = parse_duration(lifetime, "venues.bybit.max_lifetime") if lifetime else None
        self.symbols = list(plan.symbols)
        self.states = {s: _BookState() for s in self.symbols}
        self.requests: dict[str, list[str]] = {}
        self.req_counter = 0

    def heartbeat_frame(self) -> str | None:
        return '{"op":"ping"}'

    def on_connect(self, ts_local: int) -> list[Action]:
        for sym in self.symbols:
            self.sink.event(sym, ts_local, "", "connect", self.plan.url)
            self.states[sym] = _BookState()
        actions: list[Action] = []
        for frame in self.plan.subscribe_frames:
            req = orjson.loads(frame)
            self.requests[req["req_id"]] = list(req["args"])
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
            topic = msg.get("topic")
            if topic:
                kind, _, rest = topic.partition(".")
                if kind == "orderbook":
                    return self._on_book(rest.split(".", 1)[1], msg, ts_local)
                if kind == "publicTrade":
                    self._on_trades(rest, msg, ts_local)
                return []
            if msg.get("op") in ("subscribe", "unsubscribe"):
                self._on_ack(msg, ts_local)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self.event_all(ts_local, "error", f"unexpected frame ({type(exc).__name__}: {exc}): {quote(data)}")
        return []

    def _on_ack(self, msg: dict, ts_local: int) -> None:
        args = self.requests.pop(str(msg.get("req_id", "")), None)
        if msg.get("op") != "subscribe":
            return
        if args is None:                   # acks without our req_id: attribute to every symbol
            args = [t for t in self.plan.extra.get("topics", [])]
        for topic in args:
            sym = topic.rsplit(".", 1)[1]
            if sym not in self.states:
                continue
            channel = "l2book" if topic.startswith("orderbook") else "trades"
            if msg.get("success"):
                self.sink.event(sym, ts_local, channel, "subscribed", topic)
            else:
                self.sink.event(sym, ts_local, channel, "error", f"subscribe {topic} failed: {msg.get('ret_msg')}")

    def _on_trades(self, sym: str, msg: dict, ts_local: int) -> None:
        if sym not in self.states:
            return
        for t in msg["data"]:
            self.sink.trade(sym, ts_local, int(t["T"]) * MS, str(t["i"]), float(t["p"]), float(t["v"]),
                            1 if t["S"] == "Buy" else -1)

    def _on_book(self, sym: str, msg: dict, ts_local: int) -> list[Action]:
        st = self.states.get(sym)
        if st is None:
            return []
        data = msg["data"]
        u = int(data["u"])
        if msg.get("type") == "snapshot" or u == 1:
            st.book.load_snapshot(data["b"], data["a"])
            kind = "resync" if st.synced_once else "snapshot"
            if not st.synced or u == 1:
                self.sink.event(sym, ts_local, "l2book", kind, f"u={u}", u, u)
            st.synced = st.synced_once = True
        elif not st.synced:
            return []                      # waiting for the snapshot after a resubscribe
        elif u != st.last_u + 1:
            self.sink.event(sym, ts_local, "l2book", "gap", f"u {u} after {st.last_u}", st.last_u, u)
            return self._resubscribe(sym, st, msg["topic"])
        else:
            st.book.apply_levels(data["b"], data["a"])
        st.last_u = u
        if st.book.crossed():
            self.sink.event(sym, ts_local, "l2book", "crossed",
                            f"best bid {st.book.best_bid()} >= best ask {st.book.best_ask()} at u={u}", u, u)
            return self._resubscribe(sym, st, msg["topic"])
        ts_ex = msg.get("cts") or msg.get("ts")
        self.sink.book(sym, ts_local, int(ts_ex) * MS if ts_ex else None, u, *st.book.top(self.depth))
        return []

    def _resubscribe(self, sym: str, st: _BookState, topic: str) -> list[Action]:
        st.synced = False
        st.book.clear()
        self.req_counter += 1
        req_id = f"resync-{self.req_counter}"
        self.requests[req_id] = [topic]
        return [Send(orjson.dumps({"op": "unsubscribe", "args": [topic], "req_id": f"u{req_id}"}).decode()),
                Send(orjson.dumps({"op": "subscribe", "args": [topic], "req_id": req_id}).decode())]


# ----------------------------------------------------------------------------- server side
class _BybitServerBase(VenueServer):
    ws_paths = ("/v5/public/linear",)

    async def on_message(self, session: Session, message: str | bytes) -> None:
        try:
            req = orjson.loads(message)
            op = req["op"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await self.send(session, '{"success":false,"ret_msg":"Invalid request","conn_id":"sim","op":""}')
            return
        req_id = req.get("req_id", "")
        if op == "ping":
            await self.send(session, orjson.dumps({"success": True, "ret_msg": "pong", "conn_id": "sim",
                                                   "req_id": req_id, "op": "ping"}).decode())
            return
        args = list(req.get("args") or [])
        bad = [a for a in args if not self.known_topic(a)]
        if op == "subscribe":
            if bad:
                await self.send(session, orjson.dumps({"success": False, "ret_msg": f"Invalid topic: {bad[0]}",
                                                       "conn_id": "sim", "req_id": req_id, "op": op}).decode())
                return
            await self.send(session, orjson.dumps({"success": True, "ret_msg": "", "conn_id": "sim",
                                                   "req_id": req_id, "op": op}).decode())
            for topic in args:
                session.streams.add(topic)
                await self.on_subscribe(session, topic)
        elif op == "unsubscribe":
            for topic in args:
                session.streams.discard(topic)
            await self.send(session, orjson.dumps({"success": True, "ret_msg": "", "conn_id": "sim",
                                                   "req_id": req_id, "op": op}).decode())

    def known_topic(self, topic: str) -> bool:
        return True

    async def on_subscribe(self, session: Session, topic: str) -> None:
        """A session subscribed to a topic (the simulator sends the book snapshot here)."""


class BybitSimServer(SimulatedVenue, _BybitServerBase):
    """Synthetic Bybit linear market: top-N views as snapshot + deltas with ``u`` + 1."""

    def known_topic(self, topic: str) -> bool:
        parts = topic.split(".")
        if parts[0] == "orderbook" and len(parts) == 3:
            return parts[1].isdigit() and int(parts[1]) in BOOK_DEPTHS and parts[2] in self.symbols
        return parts[0] == "publicTrade" and len(parts) == 2 and parts[1] in self.symbols

    def _views(self, s: SimSymbol) -> dict[int, tuple[dict, dict]]:
        return s.state.setdefault("views", {})

    def _view(self, s: SimSymbol, n: int) -> tuple[dict, dict]:
        bids, asks = s.market.snapshot(n)
        return dict((p, q) for p, q in bids), dict((p, q) for p, q in asks)

    async def on_subscribe(self, session: Session, topic: str) -> None:
        parts = topic.split(".")
        if parts[0] != "orderbook":
            return
        s, n = self.symbols[parts[2]], int(parts[1])
        self._views(s)[n] = self._view(s, n)    # deltas from now on are relative to this snapshot
        bids, asks = s.market.snapshot(n)
        now_ms = int(time.time() * 1000)
        # a fresh subscriber gets the current view with the current u (Bybit's snapshot)
        payload = orjson.dumps({"topic": topic, "type": "snapshot", "ts": now_ms,
                                "data": {"s": s.symbol, "b": bids, "a": asks, "u": s.last_u or 1,
                                         "seq": s.last_u}, "cts": now_ms}).decode()
        if not s.last_u:
            s.last_u = 1
            self.record_book(s, 1)
        await self.send(session, payload)

    async def step(self, s: SimSymbol) -> int:
        step = s.market.step()
        now_ms = int(time.time() * 1000)
        sent = 0
        if step.trade is not None:
            t = step.trade
            payload = orjson.dumps({"topic": f"publicTrade.{s.symbol}", "type": "snapshot", "ts": now_ms,
                                    "data": [{"T": now_ms, "s": s.symbol, "S": "Buy" if t.side > 0 else "Sell",
                                              "v": t.size_str, "p": t.price_str, "L": "ZeroPlusTick",
                                              "i": f"{t.trade_id:08x}-sim", "BT": False, "RPI": False,
                                              "seq": t.trade_id}]}).decode()
            self.record_trade(s, t, await self._push(f"publicTrade.{s.symbol}", payload))
            sent += 1
        s.last_u += 1
        self.record_book(s, s.last_u)
        skip = self.take_skip(s)
        for n in {int(t.split(".")[1]) for sess in self.sessions for t in sess.streams
                  if t.startswith("orderbook.") and t.endswith(f".{s.symbol}")}:
            old_b, old_a = self._views(s).get(n) or self._view(s, n)
            new_b, new_a = self._view(s, n)
            self._views(s)[n] = (new_b, new_a)
            b = [[p, q] for p, q in new_b.items() if old_b.get(p) != q] + \
                [[p, "0"] for p in old_b if p not in new_b]
            a = [[p, q] for p, q in new_a.items() if old_a.get(p) != q] + \
                [[p, "0"] for p in old_a if p not in new_a]
            if skip:
                continue
            topic = f"orderbook.{n}.{s.symbol}"
            await self._push(topic, orjson.dumps({"topic": topic, "type": "delta", "ts": now_ms,
                                                  "data": {"s": s.symbol, "b": b, "a": a, "u": s.last_u,
                                                           "seq": s.last_u}, "cts": now_ms}).decode())
        return sent + 1

    async def _push(self, topic: str, payload: str) -> int:
        reached = 0
        for session in list(self.sessions):
            if topic in session.streams and await self.send(session, payload):
                reached += 1
        return reached


def make_sim_server(symbols: list[str], sim_cfg: dict, depth: int) -> BybitSimServer:
    return BybitSimServer(symbols, sim_cfg, depth)


# ----------------------------------------------------------------------------- replay
def recording_matches(path: str) -> bool:
    if not str(path).endswith(".jsonl.zst"):
        return False
    return any("stream.bybit.com" in line or '"topic":"orderbook.' in line or "publicTrade." in line
               for line in first_lines(path, 20))


def _recorded_topics(path: str) -> set[str]:
    topics = set()
    for rec in read_recording(path):
        if rec.kind == "recv" and rec.payload.startswith('{"topic":"'):
            topics.add(rec.payload[10:rec.payload.index('"', 10)])
    return topics


def recording_symbols(path: str) -> set[str]:
    return {t.rsplit(".", 1)[1] for t in _recorded_topics(path)
            if t.startswith(("orderbook.", "publicTrade."))}


def replay_venue_cfg(venue_cfg: dict, path: str) -> dict:
    """Subscribe to the book depth the recording holds."""
    cfg = dict(venue_cfg)
    depths = {int(t.split(".")[1]) for t in _recorded_topics(path) if t.startswith("orderbook.")}
    if depths:
        cfg["book_depth"] = max(depths)
    return cfg


class BybitReplayServer(ReplayVenue, _BybitServerBase):
    """Serves a capture back: every recorded topic message to the sessions subscribed to it."""

    def stream_of(self, rec) -> str | None:
        if rec.kind != "recv" or not rec.payload.startswith('{"topic":"'):
            return None
        topic = rec.payload[10:rec.payload.index('"', 10)]
        return topic if topic.rsplit(".", 1)[-1] in self.symbols else None

    async def on_subscribe(self, session: Session, topic: str) -> None:
        self.subscribed.set()


def make_replay_server(path: str, speed: float, symbols: list[str]) -> BybitReplayServer:
    return BybitReplayServer(path, speed, symbols)
