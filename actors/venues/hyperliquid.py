"""Hyperliquid: client, simulator and replay server (``../shared/protocols.md`` §4).

Client (:class:`HyperliquidClient`):

* ``l2Book``: every push is the full book (no sequence numbers), 20 levels per side, or 5
  levels at a faster cadence with ``fast: true`` (yaml). Each valid push is one l2book row,
  ``seq`` null, ``ts_exchange = time`` (block time). A crossed or empty-sided book is never
  written (``crossed`` event). The first book after (re)subscribing gives a ``snapshot`` /
  ``resync`` event; since pushes carry no sequence, gaps can only be seen as time between
  pushes (and as ``disconnect`` events).
* ``trades``: aggressor ``B`` (+1) / ``A`` (-1); the first message after subscribing repeats
  recent trades, so trades are de-duplicated by ``tid`` across reconnects (a bounded window of
  recent ids).
* ``{"method":"ping"}`` every ``ping_s`` (≤ 30 s) keeps the socket under the 60 s idle close;
  a non-JSON greeting frame is tolerated; key order is never relied on.

The simulator's ``break_chain`` fault pushes one crossed book (Hyperliquid has no sequence to
break); the client must refuse it.
"""
from __future__ import annotations

import time
from collections import deque

import orjson

from actors.feed.records import RowSink
from actors.venues.sim.recordings import first_lines, read_recording
from actors.venues.sim.market import SimSymbol
from actors.errors import ConfigError
from actors.venues.base import Action, ConnectionPlan, Endpoints, Send, VenueClient
from actors.venues.sim.server import ReplayVenue, Session, SimulatedVenue, VenueServer

NAME = "hyperliquid"
MARKET = "perp"
MS = 1_000_000
GREETING = "Websocket connection established."
TID_WINDOW = 100_000


def max_depth(venue_cfg: dict) -> int:
    return 5 if venue_cfg.get("fast") else 20


def validate(venue_cfg: dict, symbols: list[str], channels: list[str], depth: int) -> None:
    limit = max_depth(venue_cfg)
    if depth < 1 or depth > limit:
        raise ConfigError(f"depth: {depth} is not supported by hyperliquid (allowed: 1..{limit}; "
                          f"l2Book has {limit} levels{' with fast: true' if limit == 5 else ''})")
    for sym in symbols:
        if not sym or any(c in sym for c in " /\\") or sym != sym.strip():
            raise ConfigError(f"archive.hyperliquid: {sym!r} is not a Hyperliquid coin (e.g. BTC, ETH, SOL)")


def _subscriptions(venue_cfg: dict, coin: str, channels: list[str]) -> list[dict]:
    subs = []
    if "l2book" in channels:
        sub = {"type": "l2Book", "coin": coin}
        if venue_cfg.get("fast"):
            sub["fast"] = True
        subs.append(sub)
    if "trades" in channels:
        subs.append({"type": "trades", "coin": coin})
    return subs


def plan_connections(venue_cfg: dict, endpoints: Endpoints, symbols: list[str], channels: list[str],
                     depth: int) -> list[ConnectionPlan]:
    """Sockets of at most ``max_subscriptions_per_connection`` subscriptions on ``/ws``."""
    per_conn = int(venue_cfg.get("max_subscriptions_per_connection", 200))
    subs = [(coin, sub) for coin in symbols for sub in _subscriptions(venue_cfg, coin, channels)]
    plans = []
    for i in range(0, len(subs), per_conn):
        chunk = subs[i:i + per_conn]
        frames = [orjson.dumps({"method": "subscribe", "subscription": sub}).decode() for _, sub in chunk]
        plans.append(ConnectionPlan(name=f"ws-{i // per_conn}", url=f"{endpoints.ws_base}/ws",
                                    symbols=list(dict.fromkeys(c for c, _ in chunk)), channels=list(channels),
                                    subscribe_frames=frames))
    return plans


def make_client(plan: ConnectionPlan, venue_cfg: dict, sink: RowSink, depth: int) -> "HyperliquidClient":
    return HyperliquidClient(plan, venue_cfg, sink, depth)


class HyperliquidClient(VenueClient):
    """Protocol state of one Hyperliquid socket (see module docstring)."""

    def __init__(self, plan: ConnectionPlan, venue_cfg: dict, sink: RowSink, depth: int) -> None:
        self.plan, self.sink, self.depth = plan, sink, depth
        self.heartbeat_s = float(venue_cfg.get("ping_s", 30))
        self.symbols = list(plan.symbols)
        self.synced: dict[str, bool] = {s: False for s in self.symbols}
        self.synced_once: dict[str, bool] = {s: False for s in self.symbols}
        self.seen_tids: set[int] = set()
        self.tid_order: deque = deque()
        self.duplicates = 0

    def heartbeat_frame(self) -> str | None:
        return '{"method":"ping"}'

    def on_connect(self, ts_local: int) -> list[Action]:
        for sym in self.symbols:
            self.sink.event(sym, ts_local, "", "connect", self.plan.url)
            self.synced[sym] = False
        return [Send(frame) for frame in self.plan.subscribe_frames]

    def on_disconnect(self, ts_local: int, reason: str) -> None:
        self.event_all(ts_local, "disconnect", reason)
        for sym in self.symbols:
            self.synced[sym] = False

    def on_frame(self, data: str | bytes, ts_local: int) -> list[Action]:
        try:
            msg = orjson.loads(data)
            if not isinstance(msg, dict):
                raise ValueError("not a JSON object")
        except (orjson.JSONDecodeError, ValueError) as exc:
            text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else str(data)
            if text.strip() != GREETING:
                for sym in self.symbols:
                    self.sink.event(sym, ts_local, "", "error", f"malformed frame ({exc}): {text[:300]}")
            return []
        channel = msg.get("channel")
        try:
            if channel == "l2Book":
                self._on_book(msg["data"], ts_local)
            elif channel == "trades":
                self._on_trades(msg["data"], ts_local)
            elif channel == "subscriptionResponse":
                sub = (msg.get("data") or {}).get("subscription") or {}
                coin = sub.get("coin")
                if coin in self.synced:
                    kind = "l2book" if sub.get("type") == "l2Book" else "trades"
                    self.sink.event(coin, ts_local, kind, "subscribed", orjson.dumps(sub).decode())
            elif channel == "error":
                self.event_all(ts_local, "error", f"venue error: {str(msg.get('data'))[:300]}")
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self.event_all(ts_local, "error", f"unexpected frame ({type(exc).__name__}: {exc})")
        return []

    def _on_book(self, d: dict, ts_local: int) -> None:
        coin = d["coin"]
        if coin not in self.synced:
            return
        bids, asks = d["levels"]
        bid_px = [float(lv["px"]) for lv in bids[:self.depth]]
        ask_px = [float(lv["px"]) for lv in asks[:self.depth]]
        if not bid_px or not ask_px or bid_px[0] >= ask_px[0] or bid_px != sorted(bid_px, reverse=True) \
                or ask_px != sorted(ask_px):
            self.sink.event(coin, ts_local, "l2book", "crossed",
                            f"invalid book at time {d.get('time')}: best bid {bid_px[:1]} best ask {ask_px[:1]}")
            self.synced[coin] = False
            return
        if not self.synced[coin]:
            self.sink.event(coin, ts_local, "l2book", "resync" if self.synced_once[coin] else "snapshot",
                            f"time {d.get('time')}")
            self.synced[coin] = self.synced_once[coin] = True
        self.sink.book(coin, ts_local, int(d["time"]) * MS, None, bid_px,
                       [float(lv["sz"]) for lv in bids[:self.depth]], ask_px,
                       [float(lv["sz"]) for lv in asks[:self.depth]])

    def _on_trades(self, trades: list, ts_local: int) -> None:
        for t in trades:
            coin, tid = t["coin"], int(t["tid"])
            if coin not in self.synced:
                continue
            if tid in self.seen_tids:
                self.duplicates += 1
                continue
            self.seen_tids.add(tid)
            self.tid_order.append(tid)
            if len(self.tid_order) > TID_WINDOW:
                self.seen_tids.discard(self.tid_order.popleft())
            self.sink.trade(coin, ts_local, int(t["time"]) * MS, str(tid), float(t["px"]), float(t["sz"]),
                            1 if t["side"] == "B" else -1)


# ----------------------------------------------------------------------------- server side
class _HyperliquidServerBase(VenueServer):
    ws_paths = ("/ws",)

    async def on_message(self, session: Session, message: str | bytes) -> None:
        try:
            req = orjson.loads(message)
            method = req["method"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await self.send(session, '{"channel":"error","data":"Error parsing JSON"}')
            return
        if method == "ping":
            await self.send(session, '{"channel":"pong"}')
            return
        sub = req.get("subscription") or {}
        key = f"{sub.get('type')}:{sub.get('coin')}"
        if method == "subscribe":
            if not self.known(sub):
                await self.send(session, orjson.dumps({"channel": "error",
                                                       "data": f"Invalid subscription {orjson.dumps(sub).decode()}"}).decode())
                return
            session.streams.add(key)
            await self.send(session, orjson.dumps({"channel": "subscriptionResponse",
                                                   "data": {"method": "subscribe", "subscription": sub}}).decode())
            await self.on_subscribe(session, sub)
        elif method == "unsubscribe":
            session.streams.discard(key)
            await self.send(session, orjson.dumps({"channel": "subscriptionResponse",
                                                   "data": {"method": "unsubscribe", "subscription": sub}}).decode())

    def known(self, sub: dict) -> bool:
        return True

    async def on_subscribe(self, session: Session, sub: dict) -> None:
        """A session subscribed (the simulator sends recent trades here)."""

    async def push(self, key: str, payload: str) -> int:
        reached = 0
        for session in list(self.sessions):
            if key in session.streams and await self.send(session, payload):
                reached += 1
        return reached


class HyperliquidSimServer(SimulatedVenue, _HyperliquidServerBase):
    """Synthetic Hyperliquid market: a full 20-level book push per step, trades with unique tids."""

    def known(self, sub: dict) -> bool:
        return sub.get("type") in ("l2Book", "trades") and sub.get("coin") in self.symbols

    def _levels(self, s: SimSymbol, n: int) -> list:
        bids, asks = s.market.snapshot(n)
        return [[{"px": p, "sz": q, "n": 1} for p, q in bids], [{"px": p, "sz": q, "n": 1} for p, q in asks]]

    async def on_subscribe(self, session: Session, sub: dict) -> None:
        if sub.get("type") != "trades":
            return
        s = self.symbols[sub["coin"]]
        recent = list(s.state.get("recent", []))
        if recent:          # like Hyperliquid: the first message repeats recent trades
            await self.send(session, orjson.dumps({"channel": "trades", "data": [t[1] for t in recent]}).decode())
            for trade, _ in recent:
                self._record_once(s, trade)

    def _record_once(self, s: SimSymbol, trade) -> None:
        recorded = s.state.setdefault("recorded", set())
        if trade.trade_id not in recorded:
            recorded.add(trade.trade_id)
            self.record_trade(s, trade, 1)

    async def step(self, s: SimSymbol) -> int:
        step = s.market.step()
        s.last_u = max(s.last_u + 1, int(time.time() * 1000))        # block time, unique per push
        sent = 0
        if step.trade is not None:
            t = step.trade
            wire = {"coin": s.symbol, "side": "B" if t.side > 0 else "A", "px": t.price_str, "sz": t.size_str,
                    "hash": f"0x{t.trade_id:064x}", "time": s.last_u, "tid": t.trade_id, "users": ["0x1", "0x2"]}
            recent = s.state.setdefault("recent", deque(maxlen=10))
            recent.append((t, wire))
            if await self.push(f"trades:{s.symbol}", orjson.dumps({"channel": "trades", "data": [wire]}).decode()):
                self._record_once(s, t)
            sent += 1
        levels = self._levels(s, 20)
        if self.take_skip(s):                 # break_chain: one invalid (crossed) book
            levels = [levels[1][:1] + levels[0][1:], levels[1]]
        else:
            self.record_book(s, s.last_u)
        payload = orjson.dumps({"channel": "l2Book", "data": {"coin": s.symbol, "time": s.last_u,
                                                              "levels": levels}}).decode()
        await self.push(f"l2Book:{s.symbol}", payload)
        return sent + 1


def make_sim_server(symbols: list[str], sim_cfg: dict, depth: int) -> HyperliquidSimServer:
    return HyperliquidSimServer(symbols, sim_cfg, depth)


# ----------------------------------------------------------------------------- replay
def recording_matches(path: str) -> bool:
    if not str(path).endswith(".gz"):
        return False
    return any('"channel":"l2Book"' in line or '"channel":"trades"' in line for line in first_lines(path, 20))


def _coin_of(payload: str) -> tuple[str, str] | None:
    msg = orjson.loads(payload)
    channel = msg.get("channel")
    if channel == "l2Book":
        return "l2Book", msg["data"]["coin"]
    if channel == "trades" and msg.get("data"):
        return "trades", msg["data"][0]["coin"]
    return None


def recording_symbols(path: str) -> set[str]:
    coins = set()
    for n, rec in enumerate(read_recording(path)):
        if n > 5000:
            break
        found = _coin_of(rec.payload)
        if found:
            coins.add(found[1])
    return coins


def replay_venue_cfg(venue_cfg: dict, path: str) -> dict:
    return dict(venue_cfg)


class HyperliquidReplayServer(ReplayVenue, _HyperliquidServerBase):
    """Serves an hftbacktest capture back to the sessions subscribed to each (type, coin)."""

    def stream_of(self, rec) -> str | None:
        found = _coin_of(rec.payload)
        return f"{found[0]}:{found[1]}" if found and found[1] in self.symbols else None

    async def on_subscribe(self, session: Session, sub: dict) -> None:
        self.subscribed.set()


def make_replay_server(path: str, speed: float, symbols: list[str]) -> HyperliquidReplayServer:
    return HyperliquidReplayServer(path, speed, symbols)
