"""Hyperliquid: client, simulator and replay server (``docs/protocols/hyperliquid.md``).

Client (:class:`HyperliquidClient`):

* ``l2Book``: every push is the full book (no sequence numbers), 20 levels per side, or 5
  levels at a faster cadence with ``fast: true`` (yaml). Each valid push is one l2book row,
  ``seq`` null, ``ts_exchange = time`` (block time). A crossed or empty-sided book is never
  written (``crossed`` event). The first book after (re)subscribing gives a ``snapshot`` /
  ``resync`` event; since pushes carry no sequence, gaps can only be seen as time between
  pushes (and as ``disconnect`` events). A push at the block ``time`` of the last book written
  (a repeated frame, the book re-sent on subscribe) is not written again; an older one (a late
  frame) is not written either, and is a ``gap`` event naming its time (``seq_from = seq_to``).
* ``trades``: aggressor ``B`` (+1) / ``A`` (-1); the first message after subscribing repeats
  recent trades, so trades are de-duplicated by ``tid`` across reconnects (the base client's
  bounded window of recent ids).
* ``{"method":"ping"}`` every ``heartbeat_interval`` (≤ 30 s) keeps the socket under the 60 s
  idle close; a non-JSON greeting frame is tolerated; key order is never relied on.

The simulator's ``break_chain`` fault pushes one crossed book (Hyperliquid has no sequence to
break); the client must refuse it.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import orjson

from actors.venues.base import MS, Action, Connections, Venue, VenueClient
from actors.venues.settings import VenueSettings
from actors.venues.sim.market import SimSymbol, SimTrade, Step
from actors.venues.sim.recordings import read_recording
from actors.venues.sim.server import ReplayVenue, Session, SimulatedVenue, VenueServer

GREETING = "Websocket connection established."
PATH = "/ws"


@dataclass(frozen=True)
class HyperliquidSettings(VenueSettings):
    fast: bool = False              # l2Book with 5 levels at ~0.5 s instead of 20 levels


def key_of(sub: dict) -> str:
    """A subscription object as its stream key, e.g. ``l2Book:BTC``."""
    return f"{sub.get('type')}:{sub.get('coin')}"


class HyperliquidClient(VenueClient):
    """Protocol state of one Hyperliquid socket (see module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.book_time: dict[str, int] = {}   # block time of the last book row written per coin
        self.repeated_books = 0

    def handle(self, msg: dict, ts_local: int) -> list[Action]:
        channel = msg.get("channel")
        if channel == "l2Book":
            self._on_book(msg["data"], ts_local)
        elif channel == "trades":
            self._on_trades(msg["data"], ts_local)
        elif channel == "activeAssetCtx":
            self._on_asset_ctx(msg["data"], ts_local)
        elif channel == "subscriptionResponse":
            self.acknowledged(key_of((msg.get("data") or {}).get("subscription") or {}), ts_local)
        elif channel == "error":
            self.event_all(ts_local, "error", f"venue error: {str(msg.get('data'))[:300]}")
        return []

    def _on_asset_ctx(self, d: dict, ts_local: int) -> None:
        """``{"coin":"BTC","ctx":{"funding":"0.0000125","openInterest":"22342.1","oraclePx":"105050.0",
        "markPx":"105056.0","midPx":"105055.5","premium":"0.0001",...}}``: mark ``markPx``, index
        ``oraclePx``, funding ``funding`` (hourly), open interest; no exchange time, no next funding time."""
        coin = d["coin"]
        if coin not in self.states:
            return
        ctx = d["ctx"]
        num = lambda key: float(ctx[key]) if ctx.get(key) not in (None, "") else None     # noqa: E731
        self.derivative_row(coin, ts_local, None, mark_price=num("markPx"), index_price=num("oraclePx"),
                            funding_rate=num("funding"), open_interest=num("openInterest"))

    def _on_book(self, d: dict, ts_local: int) -> None:
        """An ``l2Book`` push: the whole book. A real one (``tests/fixtures/real/hyperliquid``, 2025-01-26,
        levels cut to 3 per side)::

            {"channel":"l2Book","data":{"coin":"BTC","levels":[
             [{"n":5,"px":"105055.0","sz":"3.03622"},{"n":1,"px":"105054.0","sz":"0.1428"},
              {"n":2,"px":"105053.0","sz":"0.16179"}],
             [{"n":13,"px":"105056.0","sz":"6.34472"},{"n":1,"px":"105057.0","sz":"0.0001"},
              {"n":1,"px":"105058.0","sz":"0.0001"}]],"time":1737918843542}}

        ``levels`` is ``[bids, asks]``; ``time`` is the block time, the only id a push has.
        """
        coin = d["coin"]
        st = self.states.get(coin)
        if st is None:
            return
        bids, asks = d["levels"]
        bid_px = [float(lv["px"]) for lv in bids[:self.depth]]
        ask_px = [float(lv["px"]) for lv in asks[:self.depth]]
        if not bid_px or not ask_px or bid_px[0] >= ask_px[0] or bid_px != sorted(bid_px, reverse=True) \
                or ask_px != sorted(ask_px):
            self.sink.event(coin, ts_local, "l2book", "crossed",
                            f"invalid book at time {d.get('time')}: best bid {bid_px[:1]} best ask {ask_px[:1]}")
            st.synced = False
            return
        if not st.synced:
            self.synced_event(coin, st, ts_local, f"time {d.get('time')}")
        block_time, last = int(d["time"]), self.book_time.get(coin, -1)
        if block_time == last:                 # the same book again (repeated frame, re-sent on subscribe)
            self.repeated_books += 1
            return
        if block_time < last:                  # a late push: never written after a newer book
            self.sink.event(coin, ts_local, "l2book", "gap", f"l2Book of time {block_time} arrived after time {last}: "
                            "not written (a book is never written after a newer one)", block_time, block_time)
            return
        self.book_time[coin] = block_time
        self.book_row(coin, ts_local, block_time * MS, None, bid_px,
                      [float(lv["sz"]) for lv in bids[:self.depth]], ask_px,
                      [float(lv["sz"]) for lv in asks[:self.depth]])

    def _on_trades(self, trades: list, ts_local: int) -> None:
        """The ``data`` of a ``trades`` message as trades rows. A real one (``tests/fixtures/real/hyperliquid``,
        one of its trades)::

            {"channel":"trades","data":[{"coin":"BTC",
             "hash":"0xde477894bfb2b4eac0a8041c9228ca013100955485522c8e6e787dfa0077475b","px":"105056.0",
             "side":"B","sz":"0.00219","tid":121451470284048,"time":1737918794873,
             "users":["0xe9ed7e16612d676df804f5aecd16e1f9bf9ec9dd","0x6802b4267f7f2bf7003dcf993c51542245b38329"]}]}

        ``side`` ``B``: the buyer was the aggressor (+1); ``tid`` is unique across assets.
        """
        for t in trades:
            coin, tid = t["coin"], int(t["tid"])
            if coin not in self.states:
                continue
            self.trade_row(coin, ts_local, int(t["time"]) * MS, str(tid), float(t["px"]), float(t["sz"]),
                           1 if t["side"] == "B" else -1)


# ----------------------------------------------------------------------------- server side
class HyperliquidServer(VenueServer):
    ws_paths = (PATH,)

    op_key, bad_request = "method", '{"channel":"error","data":"Error parsing JSON"}'

    async def on_request(self, session: Session, method: str, req: dict) -> None:
        if method == "ping":
            await self.send(session, '{"channel":"pong"}')
            return
        sub = req.get("subscription") or {}
        if method == "subscribe" and not self.known(key_of(sub)):
            await self.send(session, orjson.dumps({"channel": "error",
                                                   "data": f"Invalid subscription {orjson.dumps(sub).decode()}"}).decode())
        elif method in ("subscribe", "unsubscribe"):
            await self.send(session, orjson.dumps({"channel": "subscriptionResponse",
                                                   "data": {"method": method, "subscription": sub}}).decode())
            await self.change_subscriptions(session, method, [key_of(sub)])


class HyperliquidSimServer(SimulatedVenue, HyperliquidServer):
    """Synthetic Hyperliquid market: a full 20-level book push per step, trades with unique tids."""

    stream_kinds = ("l2Book", "trades", "activeAssetCtx")

    def derivatives_message(self, s: SimSymbol, changed: dict[str, str], now_ms: int) -> tuple[str, str]:
        v = s.derivatives.values
        return f"activeAssetCtx:{s.symbol}", orjson.dumps({"channel": "activeAssetCtx", "data": {"coin": s.symbol, "ctx": {
            "funding": v["funding_rate"], "openInterest": v["open_interest"], "prevDayPx": v["index_price"],
            "dayNtlVlm": "0.0", "premium": "0.0", "oraclePx": v["index_price"], "markPx": v["mark_price"],
            "midPx": v["last_price"], "impactPxs": [v["index_price"], v["mark_price"]]}}}).decode()

    def __init__(self, symbols: list[str], sim_cfg: dict, depth: int) -> None:
        super().__init__(symbols, sim_cfg, depth)
        self.repeated_trades = max(1, int(sim_cfg.get("repeated_trades", 10)))   # on every subscribe

    def _levels(self, s: SimSymbol, n: int) -> list:
        bids, asks = s.market.snapshot(n)
        return [[{"px": p, "sz": q, "n": 1} for p, q in bids], [{"px": p, "sz": q, "n": 1} for p, q in asks]]

    async def on_subscribe(self, session: Session, key: str) -> None:
        kind, coin = key.split(":", 1)
        if kind != "trades":
            return
        s = self.symbols[coin]
        recent = list(s.state.get("recent", []))
        if recent:          # like Hyperliquid: the first message repeats recent trades
            if await self.send_data(session, orjson.dumps({"channel": "trades",
                                                           "data": [t[1] for t in recent]}).decode()):
                for trade, _ in recent:
                    self._record_once(s, trade)

    def reset_sequence(self, s: SimSymbol) -> None:
        """Block times go on after a restart (they are the book's only id)."""

    def _record_once(self, s: SimSymbol, trade) -> None:
        recorded = s.state.setdefault("recorded", set())
        if trade.trade_id not in recorded:
            recorded.add(trade.trade_id)
            self.record_trade(s, trade, 1)

    def clock_ms(self, s: SimSymbol) -> int:
        s.last_u = max(s.last_u + 1, int(time.time() * 1000))        # block time, unique per push
        return s.last_u

    async def send_trade(self, s: SimSymbol, t: SimTrade, now_ms: int) -> None:
        wire = {"coin": s.symbol, "side": "B" if t.side > 0 else "A", "px": t.price_str, "sz": t.size_str,
                "hash": f"0x{t.trade_id:064x}", "time": now_ms, "tid": t.trade_id, "users": ["0x1", "0x2"]}
        s.state.setdefault("recent", deque(maxlen=self.repeated_trades)).append((t, wire))
        if await self.push(f"trades:{s.symbol}", orjson.dumps({"channel": "trades", "data": [wire]}).decode()):
            self._record_once(s, t)

    async def send_book(self, s: SimSymbol, step: Step, now_ms: int) -> None:
        levels = self._levels(s, 20)
        if self.take_skip(s):                 # break_chain: one invalid (crossed) book
            levels = [levels[1][:1] + levels[0][1:], levels[1]]
        else:
            self.record_book(s, s.last_u)
        payload = orjson.dumps({"channel": "l2Book", "data": {"coin": s.symbol, "time": s.last_u,
                                                              "levels": levels}}).decode()
        await self.push(f"l2Book:{s.symbol}", payload)


# ----------------------------------------------------------------------------- replay
def stream_key(payload: str) -> str | None:
    """The stream key (``l2Book:BTC``) of a recorded frame, or None."""
    msg = orjson.loads(payload)
    channel = msg.get("channel")
    if channel == "l2Book":
        return key_of({"type": "l2Book", "coin": msg["data"]["coin"]})
    if channel == "trades" and msg.get("data"):
        return key_of({"type": "trades", "coin": msg["data"][0]["coin"]})
    return None


class HyperliquidReplayServer(ReplayVenue, HyperliquidServer):
    """Serves an hftbacktest capture back to the sessions subscribed to each (type, coin)."""

    def stream_of(self, rec) -> str | None:
        key = stream_key(rec.payload)
        return key if key and key.split(":", 1)[1] in self.symbols else None


# ----------------------------------------------------------------------------- declaration
class Hyperliquid(Venue):
    """Hyperliquid perps (docs/protocols/hyperliquid.md). Symbols are coin names (BTC, ETH, SOL)."""

    name, Settings = "hyperliquid", HyperliquidSettings
    # {"method":"ping"} every 30 s: the server closes sockets idle for 60 s
    connections = Connections("wss://api.hyperliquid.xyz", "https://api.hyperliquid.xyz", max_streams=200,
                              params_per_request=1, heartbeat_frame='{"method":"ping"}', heartbeat_s=30.0,
                              ignored_frames=(GREETING,), acks_by_request=False)
    routes = {"ws": PATH}
    streams = {"l2book": "l2Book:{symbol}", "trades": "trades:{symbol}", "derivatives": "activeAssetCtx:{symbol}"}
    reconnect_is_resync = True          # no sequence: every sync after the first is a resync
    seq_name = "time"
    symbol_pattern, symbol_kind = r"[^\s/\\]+", "Hyperliquid coin (e.g. BTC, ETH, SOL)"
    Client, SimServer, ReplayServer = HyperliquidClient, HyperliquidSimServer, HyperliquidReplayServer
    recording_sniff = (".gz", 20)               # hftbacktest captures

    def allowed_depths(self, settings: HyperliquidSettings) -> tuple[range, str]:
        levels = 5 if settings.fast else 20
        return range(1, levels + 1), f"l2Book has {levels} levels{' with fast: true' if settings.fast else ''}"

    def request_param(self, settings: HyperliquidSettings, name: str) -> dict:
        kind, coin = name.split(":", 1)
        return {"type": kind, "coin": coin, **({"fast": True} if settings.fast and kind == "l2Book" else {})}

    def request_frame(self, op: str, params: list, req_id: int) -> str:
        return orjson.dumps({"method": op, "subscription": params[0]}).decode()

    def recorded_line(self, line: str) -> bool:
        return '"channel":"l2Book"' in line or '"channel":"trades"' in line

    def recording_symbols(self, path: str) -> set[str]:
        coins = set()
        for n, rec in enumerate(read_recording(path)):
            if n > 5000:
                break
            key = stream_key(rec.payload)
            if key:
                coins.add(key.split(":", 1)[1])
        return coins


VENUE = Hyperliquid()
