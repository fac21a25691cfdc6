"""WOO X v3 public: client and simulator (``docs/protocols/woox.md``). No recording exists.

Client (:class:`WooxClient`):

* ``orderbookupdate@{symbol}@{50|200|500}`` deltas synchronised with the REST snapshot
  ``/v3/public/orderbook?symbol=…&maxLevel=…`` by the shared :mod:`~actors.venues.snapshot_sync`:
  start at the update whose ``prevTs`` equals the snapshot's timestamp, then require
  ``prevTs == previous data.ts``. One l2book row per applied update, ``seq = data.ts`` (the
  chaining id), ``ts_exchange = data.ts``.
* ``trade@{symbol}``: ``sd`` taker side, ``px``/``sx``. The v3 trade payload carries no trade
  id, so ``trade_id`` is ``{data.ts}-{n}`` (n = position among trades with the same ``ts`` in
  this message); documented as an approximation. A trade frame repeated by the venue (same
  send ``ts`` and trades) is written once.
* The server pings with ``{"cmd":"PING"}``; the client answers ``{"cmd":"PONG"}``. Connections
  last at most 24 h (planned reconnect before).

Unverified (no official text or capture seen): the ack shape and the REST snapshot's exact
shape; the client accepts ``[px, sz]`` lists or ``{"price","quantity"}`` objects and the
timestamp as ``data.ts``, ``data.timestamp`` or a top-level ``timestamp``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from actors.venues.base import MS, Action, Connections, RecentIds, SendFrame, Venue, quote
from actors.venues.settings import VenueSettings, choice
from actors.venues.sim.market import SimSymbol, SimTrade, Step
from actors.venues.sim.server import Session, SimulatedVenue
from actors.venues.snapshot_sync import SnapshotSyncClient, UpdateIds

PATH = "/v3/public"


@dataclass(frozen=True)
class WooxSettings(VenueSettings):
    book_speed: int = choice(50, 50, 200, 500)            # orderbookupdate@{symbol}@{speed}
    snapshot_levels: int = 500                            # maxLevel of the REST snapshot


def levels_of(levels: list) -> list[list]:
    """``[[price, size], ...]`` from lists or ``{"price", "quantity"}`` objects."""
    return [[lv["price"], lv["quantity"]] if isinstance(lv, dict) else lv for lv in levels]


class WooxClient(SnapshotSyncClient):
    """Protocol state of one WOO X v3 socket (see module docstring)."""

    settings: WooxSettings
    snapshot_id_name = "ts"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recent_frames = RecentIds()

    def handle(self, msg: dict, ts_local: int) -> list[Action]:
        """One WOO X frame. No capture exists: the book delta as WOO X documents it (docs/protocols/woox.md)::

            {"topic":"orderbookupdate@SPOT_BTC_USDT@50","ts":1618826337580,
             "data":{"s":"SPOT_BTC_USDT","prevTs":1618826337380,"asks":[["56749.15","3.92864"],["56749.8","0"]],
             "bids":[["56745.2","1.03895025"]],"ts":1618826337570}}

        ``prevTs`` chains to the previous update's ``data.ts``.
        """
        cmd = msg.get("cmd")
        if cmd == "PING":
            return [SendFrame('{"cmd":"PONG"}')]
        if cmd in ("SUBSCRIBE", "subscribe") or "success" in msg and "topic" not in msg:
            self.acknowledged(msg.get("id", ""), ts_local, None if msg.get("success", True) else quote(str(msg)))
        elif cmd == "ERROR":
            self.event_all(ts_local, "error", f"venue error: {quote(orjson.dumps(msg))}")
        elif msg.get("topic", "").startswith("orderbookupdate@"):
            return self.on_update(msg["topic"].split("@")[1], msg["data"], ts_local)
        elif msg.get("topic", "").startswith("trade@"):
            self._on_trades(msg["topic"].split("@")[1], msg, ts_local)
        return []

    def _on_trades(self, sym: str, msg: dict, ts_local: int) -> None:
        """A ``trade`` message as trades rows. No capture exists; the shape tardis-node's tests hold::

            {"topic":"trade@PERP_ETH_USDT","ts":…,"data":{"ts":…,"px":"1622.8","sx":"0.09","sd":"SELL","src":1,
             "s":"PERP_ETH_USDT"}}

        ``data`` may also be a list of trades; ``sd`` is the taker's side; there is no trade id.
        """
        if sym not in self.states:
            return
        data = msg["data"]
        # no trade id: a frame repeated by the venue (same send time, same trades) is written once
        if not self.recent_frames.first_time(f"{sym}|{msg.get('ts')}|{orjson.dumps(data).decode()}"):
            self.duplicate_trades += 1
            return
        per_ts: dict[int, int] = {}
        for t in data if isinstance(data, list) else [data]:
            ts = int(t["ts"])
            n = per_ts.get(ts, 0)
            per_ts[ts] = n + 1
            self.trade_row(sym, ts_local, ts * MS, f"{ts}-{n}", float(t["px"]), float(t["sx"]),
                           1 if str(t["sd"]).upper() == "BUY" else -1)

    # -- the prevTs sync rules ------------------------------------------------------------
    def update_ids(self, update: dict) -> UpdateIds:
        ts = int(update["ts"])
        return UpdateIds(int(update["prevTs"]), ts, ts)

    def bridges(self, ids: UpdateIds, snapshot_id: int) -> bool:
        return ids.prev == snapshot_id

    def snapshot_url(self, symbol: str) -> str:
        return f"{self.plan.rest_base}/v3/public/orderbook?symbol={symbol}&maxLevel={self.settings.snapshot_levels}"

    def parse_snapshot(self, body: bytes) -> tuple[int, list, list]:
        snap = orjson.loads(body)
        data = snap.get("data", snap)
        stamp = data.get("ts") or data.get("timestamp") or snap.get("timestamp")
        return int(stamp), levels_of(data["bids"]), levels_of(data["asks"])

    def update_levels(self, update: dict) -> tuple[list, list]:
        return levels_of(update["bids"]), levels_of(update["asks"])

    def update_time(self, update: dict) -> int:
        return int(update["ts"]) * MS


# ----------------------------------------------------------------------------- simulator
class WooxSimServer(SimulatedVenue):
    """Synthetic WOO X market: ``prevTs``-chained book updates, REST snapshots, JSON PINGs."""

    ws_paths = (PATH,)

    async def on_open(self, session: Session) -> None:
        await self.send(session, '{"cmd":"PING","ts":%d}' % int(time.time() * 1000))

    op_key, bad_request = "cmd", '{"cmd":"ERROR","success":false,"msg":"invalid request"}'
    snapshot_path = "/v3/public/orderbook"
    rest_errors = ('{"success":false,"message":"not found"}', '{"success":false,"message":"symbol not exist"}')

    async def on_request(self, session: Session, cmd: str, req: dict) -> None:
        params = list(req.get("params") or [])
        if cmd == "subscribe":
            bad = [p for p in params if p.split("@")[1:2] and p.split("@")[1] not in self.symbols]
            await self.send(session, orjson.dumps({"id": req.get("id"), "cmd": "SUBSCRIBE", "success": not bad,
                                                   "ts": int(time.time() * 1000)}).decode())
            if not bad:
                await self.subscribe(session, params)
        elif cmd == "unsubscribe":
            self.unsubscribe(session, params)

    def snapshot_body(self, s: SimSymbol, query: dict[str, str]) -> str:
        bids, asks = s.market.snapshot(int(query.get("maxLevel", 100)))
        stamp = s.last_u or self._tick(s)
        return orjson.dumps({"success": True, "data": {
            "bids": [{"price": p, "quantity": q} for p, q in bids],
            "asks": [{"price": p, "quantity": q} for p, q in asks], "ts": stamp}, "timestamp": stamp}).decode()

    def _tick(self, s: SimSymbol) -> int:
        s.last_u = max(s.last_u + 1, int(time.time() * 1000))
        return s.last_u

    def reset_sequence(self, s: SimSymbol) -> None:
        """Update ids are times: they go on after a restart (the chain breaks at the reconnect)."""

    def clock_ms(self, s: SimSymbol) -> int:
        s.state["prev_ts"] = s.last_u or self._tick(s)       # the update chains to the previous ts
        return self._tick(s)

    def trade_message(self, s: SimSymbol, t: SimTrade, now_ms: int) -> tuple[str, str]:
        return f"trade@{s.symbol}", orjson.dumps({"topic": f"trade@{s.symbol}", "ts": now_ms, "data": {
            "ts": now_ms, "px": t.price_str, "sx": t.size_str, "sd": "BUY" if t.side > 0 else "SELL", "src": 1,
            "s": s.symbol}}).decode()

    async def send_book(self, s: SimSymbol, step: Step, now_ms: int) -> None:
        self.record_book(s, now_ms)
        if not self.take_skip(s):
            bids, asks = step.levels()
            for topic in self.subscribed_keys(f"orderbookupdate@{s.symbol}@"):
                await self.push(topic, orjson.dumps({"topic": topic, "ts": now_ms, "data": {
                    "s": s.symbol, "prevTs": s.state["prev_ts"], "asks": asks, "bids": bids, "ts": now_ms}}).decode())


# ----------------------------------------------------------------------------- declaration
class Woox(Venue):
    """WOO X v3 public (docs/protocols/woox.md). Symbols like PERP_BTC_USDT."""

    name, Settings = "woox", WooxSettings
    # the server pings with {"cmd":"PING"} (answered in WooxClient.handle); 24 h connection lifetime
    connections = Connections("wss://wss.woox.io", "https://api.woox.io", max_streams=100, stream_limit=100,
                              params_per_request=20, max_lifetime_s=1430 * 60.0, unmatched_ack_means_all=True)
    routes = {"public": PATH}
    streams = {"l2book": "orderbookupdate@{symbol}@{book_speed}", "trades": "trade@{symbol}"}
    seq_name, prev_name = "ts", "prevTs"
    trade_ids_unique = False    # the id is made up ({ts}-{n}): repeats are found by frame (WooxClient)
    symbol_pattern, symbol_kind = "(PERP|SPOT)_[^a-z]+", "WOO X symbol (e.g. PERP_BTC_USDT)"
    Client, SimServer = WooxClient, WooxSimServer

    def allowed_depths(self, settings: WooxSettings) -> tuple[range, str]:
        return range(1, settings.snapshot_levels + 1), f"snapshot_levels {settings.snapshot_levels}"

    def request_frame(self, op: str, params: list, req_id: int) -> str:
        return orjson.dumps({"id": str(req_id), "cmd": op, "params": params}).decode()


VENUE = Woox()
