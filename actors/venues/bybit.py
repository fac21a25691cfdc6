"""Bybit v5 public, linear and spot: client, simulators and replay servers (``docs/protocols/bybit.md``).

``archive.bybit`` entries: ``BTCUSDT`` is the linear perpetual (``/v5/public/linear``),
``spot/BTCUSDT`` the spot pair (``/v5/public/spot``, archived under ``spot/``). Both speak the
same topics and sequencing; spot books come in depths 1, 50 and 200 only (``spot_book_depth``),
its trades carry no tick direction, and its tickers no best bid/ask.

Client (:class:`BybitClient`):

* ``orderbook.{1,50,200,1000}.{symbol}``: the smallest depth >= the archived depth (depth 20
  → ``orderbook.50``, as quantpylib does). A ``snapshot`` (or any message with ``u == 1``,
  a service restart) replaces the book; each ``delta`` must carry ``u == previous u + 1``.
  On a break: ``gap`` event, the book is dropped, and the topic is unsubscribed and
  subscribed again to get a fresh snapshot (``resync`` event when it arrives). One l2book
  row per applied message, ``seq = u``, ``ts_exchange = cts`` (matching-engine time) when
  present, else ``ts``.
* ``publicTrade.{symbol}``: taker side ``S`` (Buy +1, Sell -1), UUID ids ``i``, fill time ``T``.
* ``tickers.{symbol}`` (``derivatives``): a snapshot, then deltas carrying only the fields that
  changed; each is merged into the last known values before a row is written (a row only when
  mark/index/last price, funding rate, next funding time or open interest changed; a delta of
  only the best bid/ask writes none). A snapshot starts the values afresh. ``ts_exchange = ts``.
* ``allLiquidation.{symbol}`` (``liquidations``): ``S`` is the *position* side, so ``Buy`` (a long
  was liquidated) is a sell order, side -1; size ``v``, price ``p``, time ``T``; no order id.
* ``{"op":"ping"}`` every 20 s; acks (one per request) give ``subscribed`` or ``error`` events.

The simulator publishes the top-N view of a synthetic book as Bybit does (snapshot on
subscribe, then deltas of the levels that changed inside the view); the replay server serves a
cryptofeed capture back, topic by topic.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import orjson

from actors.storage.layout import join_market
from actors.venues.base import MS, Action, Connections, Venue, VenueClient
from actors.venues.settings import VenueSettings, choice
from actors.venues.sim.market import SimSymbol, SimTrade, Step
from actors.venues.sim.recordings import read_recording
from actors.venues.sim.server import ReplayVenue, Session, SimulatedVenue, VenueServer

BOOK_DEPTHS = (1, 50, 200, 1000)
SPOT_DEPTHS = (1, 50, 200)
PATH = "/v5/public/linear"
SPOT_PATH = "/v5/public/spot"


@dataclass(frozen=True)
class BybitSettings(VenueSettings):
    book_depth: int | None = choice(None, None, *BOOK_DEPTHS)   # None: chosen from the archived depth
    spot_ws_base: str = "wss://stream.bybit.com"
    spot_rest_base: str = "https://api.bybit.com"
    spot_book_depth: int | None = choice(None, None, *SPOT_DEPTHS)


def book_depth(depth: int, settings: BybitSettings | None = None, depths: tuple[int, ...] = BOOK_DEPTHS,
               key: str = "book_depth") -> int:
    """The Bybit book topic depth used for an archived depth (override: the setting ``key``)."""
    chosen = getattr(settings, key) if settings is not None else None
    return chosen or next(d for d in depths if d >= depth)


class BybitClient(VenueClient):
    """Protocol state of one Bybit linear socket (see module docstring)."""

    def handle(self, msg: dict, ts_local: int) -> list[Action]:
        topic = msg.get("topic")
        if topic:
            kind, _, rest = topic.partition(".")
            if kind == "orderbook":
                return self._on_book(rest.split(".", 1)[1], msg, ts_local)
            if kind == "publicTrade":
                self._on_trades(rest, msg, ts_local)
            elif kind == "tickers":
                self._on_ticker(rest, msg, ts_local)
            elif kind == "allLiquidation":
                self._on_liquidations(rest, msg, ts_local)
        elif msg.get("op") == "subscribe":
            self.acknowledged(msg.get("req_id", ""), ts_local, None if msg.get("success") else msg.get("ret_msg"))
        return []

    def _on_trades(self, sym: str, msg: dict, ts_local: int) -> None:
        """A ``publicTrade`` message as trades rows. A real one (``tests/fixtures/real/bybit``, 2026-08-10)::

            {"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1786310819681,"data":[{"T":1786310819680,
             "s":"BTCUSDT","S":"Sell","v":"0.004","p":"65114.20","L":"MinusTick",
             "i":"a9188a0a-82bc-50de-be60-03eedbe3cdd7","BT":false,"RPI":false,"seq":753843954913}]}

        ``S`` is the taker's side; ``i`` is a UUID, so trades cannot show a gap by id.
        """
        if sym not in self.states:
            return
        for t in msg["data"]:
            self.trade_row(sym, ts_local, int(t["T"]) * MS, str(t["i"]), float(t["p"]), float(t["v"]),
                           1 if t["S"] == "Buy" else -1)

    def _on_ticker(self, sym: str, msg: dict, ts_local: int) -> None:
        """``{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","markPrice":"65117.43",
        "openInterestValue":"3899995666.09",...},"cs":753843915209,"ts":1786310818183}``"""
        if sym not in self.states or "derivatives" not in self.plan.channels:
            return
        if msg.get("type") == "snapshot":
            self.forget_derivatives(sym)
        d = msg["data"]
        self.derivative_row(sym, ts_local, int(msg["ts"]) * MS if msg.get("ts") else None,
                            mark_price=_number(d.get("markPrice")), index_price=_number(d.get("indexPrice")),
                            funding_rate=_number(d.get("fundingRate")),
                            next_funding_time=int(d["nextFundingTime"]) * MS if d.get("nextFundingTime") else None,
                            open_interest=_number(d.get("openInterest")), last_price=_number(d.get("lastPrice")))

    def _on_liquidations(self, sym: str, msg: dict, ts_local: int) -> None:
        """``{"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":1739502303204,"data":[{"T":1739502302929,
        "s":"BTCUSDT","S":"Sell","v":"20000","p":"0.04499"}]}``: ``S`` is the liquidated position's side."""
        if sym not in self.states:
            return
        for liq in msg["data"]:
            self.liquidation_row(sym, ts_local, int(liq["T"]) * MS, -1 if liq["S"] == "Buy" else 1,
                                 float(liq["p"]), float(liq["v"]))

    def _on_book(self, sym: str, msg: dict, ts_local: int) -> list[Action]:
        """An ``orderbook`` snapshot or delta. A real delta (``tests/fixtures/real/bybit``, levels cut to 3)::

            {"topic":"orderbook.200.BTCUSDT","type":"delta","ts":1786310818130,"data":{"s":"BTCUSDT",
             "b":[["65095.30","0.005"],["65094.60","0.076"],["65093.10","0"]],
             "a":[["65116.60","0"],["65116.80","0.002"],["65129.10","0"]],
             "u":15076953,"seq":753843913870},"cts":1786310818129}

        ``u`` is the previous message's ``u`` + 1; ``cts`` is the matching-engine time.
        """
        st = self.states.get(sym)
        if st is None:
            return []
        data = msg["data"]
        u = int(data["u"])
        actions = self.sequence(sym, st, ts_local, snapshot=msg.get("type") == "snapshot" or u == 1, seq=u,
                                chained=st.last_seq is not None and u == st.last_seq + 1,
                                bids=data["b"], asks=data["a"], restart=u == 1)
        if actions is not None:
            return actions
        ts_ex = msg.get("cts") or msg.get("ts")
        return self.write_book(sym, st, ts_local, int(ts_ex) * MS if ts_ex else None, u)


#: our derivatives values -> Bybit's ticker fields (the simulator's names; no predicted funding rate)
TICKER_KEYS = {"mark_price": "markPrice", "index_price": "indexPrice", "funding_rate": "fundingRate",
               "next_funding_time": "nextFundingTime", "open_interest": "openInterest", "last_price": "lastPrice"}


def _number(text: str | None) -> float | None:
    """A Bybit decimal string as a float; absent or empty (``""``) is None."""
    return float(text) if text not in (None, "") else None


# ----------------------------------------------------------------------------- server side
class BybitServer(VenueServer):
    ws_paths = (PATH,)

    bad_request = '{"success":false,"ret_msg":"Invalid request","conn_id":"sim","op":""}'

    async def on_request(self, session: Session, op: str, req: dict) -> None:
        args = list(req.get("args") or [])
        bad = [a for a in args if not self.known(a)] if op == "subscribe" else []
        ret_msg = f"Invalid topic: {bad[0]}" if bad else ("pong" if op == "ping" else "")
        await self.send(session, orjson.dumps({"success": not bad, "ret_msg": ret_msg, "conn_id": "sim",
                                               "req_id": req.get("req_id", ""), "op": op}).decode())
        if op == "subscribe" and not bad:
            await self.subscribe(session, args)
        elif op == "unsubscribe":
            self.unsubscribe(session, args)


class BybitSimServer(SimulatedVenue, BybitServer):
    """Synthetic Bybit linear market: top-N views as snapshot + deltas with ``u`` + 1."""

    depths = BOOK_DEPTHS

    def known(self, topic: str) -> bool:
        parts = topic.split(".")
        if parts[0] == "orderbook" and len(parts) == 3:
            return parts[1].isdigit() and int(parts[1]) in self.depths and parts[2] in self.symbols
        return parts[0] in ("publicTrade", "tickers", "allLiquidation") and len(parts) == 2 and parts[1] in self.symbols

    def _ticker_message(self, s: SimSymbol, kind: str, values: dict[str, str], now_ms: int) -> str:
        data = {"symbol": s.symbol, **{TICKER_KEYS[k]: v for k, v in values.items() if k in TICKER_KEYS}}
        if "markPrice" in data and "openInterest" in data:
            data["openInterestValue"] = f"{float(data['markPrice']) * float(data['openInterest']):.2f}"
        return orjson.dumps({"topic": f"tickers.{s.symbol}", "type": kind, "data": data, "cs": s.last_u,
                             "ts": now_ms}).decode()

    def derivatives_message(self, s: SimSymbol, changed: dict[str, str], now_ms: int) -> tuple[str, str]:
        """A ``tickers`` delta of the values that changed (a subscriber got the snapshot first)."""
        return f"tickers.{s.symbol}", self._ticker_message(s, "delta", changed, now_ms)

    def liquidation_message(self, s: SimSymbol, liq, now_ms: int) -> tuple[str, str]:
        topic = f"allLiquidation.{s.symbol}"      # S: the liquidated position's side (a sell order closed a long)
        return topic, orjson.dumps({"topic": topic, "type": "snapshot", "ts": now_ms, "data": [{
            "T": now_ms, "s": s.symbol, "S": "Buy" if liq.side < 0 else "Sell", "v": liq.size_str,
            "p": liq.price_str}]}).decode()

    def _views(self, s: SimSymbol) -> dict[int, tuple[dict, dict]]:
        return s.state.setdefault("views", {})

    def _view(self, s: SimSymbol, n: int) -> tuple[dict, dict]:
        bids, asks = s.market.snapshot(n)
        return dict((p, q) for p, q in bids), dict((p, q) for p, q in asks)

    def _book_message(self, s: SimSymbol, topic: str, kind: str, bids: list, asks: list) -> str:
        now_ms = int(time.time() * 1000)
        return orjson.dumps({"topic": topic, "type": kind, "ts": now_ms, "data": {
            "s": s.symbol, "b": bids, "a": asks, "u": s.last_u, "seq": s.last_u}, "cts": now_ms}).decode()

    async def on_subscribe(self, session: Session, topic: str) -> None:
        parts = topic.split(".")
        if parts[0] == "tickers":                 # every value, then deltas
            s = self.symbols[parts[1]]
            await self.send_data(session, self._ticker_message(s, "snapshot", s.derivatives.values,
                                                               int(time.time() * 1000)))
            if self.record_truth:
                s.truth.derivatives.append(s.derivatives.floats())
            return
        if parts[0] != "orderbook":
            return
        s, n = self.symbols[parts[2]], int(parts[1])
        self._views(s)[n] = self._view(s, n)    # deltas from now on are relative to this snapshot
        self.first_seq(s, 1)
        # a fresh subscriber gets the current view with the current u (Bybit's snapshot)
        await self.send_data(session, self._book_message(s, topic, "snapshot", *s.market.snapshot(n)))

    async def restart_venue(self) -> None:
        """Bybit's service restart (docs/protocols/bybit.md, "Order book"): every book topic gets a snapshot with ``u == 1``
        (a new truth epoch) and the deltas go on from there; the sessions stay open."""
        async with self._stepping:
            for s in self.symbols.values():
                self.new_epoch(s)
                s.last_u = 1
                self.record_book(s, 1)
                for topic in self.subscribed_keys("orderbook."):
                    if topic.endswith(f".{s.symbol}"):
                        n = int(topic.split(".")[1])
                        self._views(s)[n] = self._view(s, n)
                        await self.push(topic, self._book_message(s, topic, "snapshot", *s.market.snapshot(n)))

    def trade_message(self, s: SimSymbol, t: SimTrade, now_ms: int) -> tuple[str, str]:
        topic = f"publicTrade.{s.symbol}"
        return topic, orjson.dumps({"topic": topic, "type": "snapshot", "ts": now_ms, "data": [{
            "T": now_ms, "s": s.symbol, "S": "Buy" if t.side > 0 else "Sell", "v": t.size_str, "p": t.price_str,
            **self.tick(), "i": f"{t.trade_id:08x}-sim", "BT": False, "RPI": False, "seq": t.trade_id}]}).decode()

    def tick(self) -> dict:
        """The trade's tick direction (futures only)."""
        return {"L": "ZeroPlusTick"}


    async def send_book(self, s: SimSymbol, step: Step, now_ms: int) -> None:
        s.last_u += 1
        self.record_book(s, s.last_u)
        skip = self.take_skip(s)
        for topic in self.subscribed_keys("orderbook."):
            if not topic.endswith(f".{s.symbol}"):
                continue
            n = int(topic.split(".")[1])
            old_b, old_a = self._views(s).get(n) or self._view(s, n)
            new_b, new_a = self._view(s, n)
            self._views(s)[n] = (new_b, new_a)
            b = [[p, q] for p, q in new_b.items() if old_b.get(p) != q] + \
                [[p, "0"] for p in old_b if p not in new_b]
            a = [[p, q] for p, q in new_a.items() if old_a.get(p) != q] + \
                [[p, "0"] for p in old_a if p not in new_a]
            if not skip:
                await self.push(topic, self._book_message(s, topic, "delta", b, a))


class BybitSpotSimServer(BybitSimServer):
    """Synthetic Bybit spot market: ``/v5/public/spot``, books 1/50/200, trades without tick direction."""

    ws_paths = (SPOT_PATH,)
    depths = SPOT_DEPTHS

    def tick(self) -> dict:
        return {}


# ----------------------------------------------------------------------------- replay
def path_kind(url: str) -> str:
    """The protocol key of a recorded connection's URL ("" linear, ``spot``)."""
    return "spot" if SPOT_PATH in url else ""


def recorded_topics(path: str) -> set[tuple[str, str]]:
    """``(protocol key, topic)`` of every recorded topic message (by its connection's URL)."""
    topics, kinds = set(), {}
    for rec in read_recording(path):
        if rec.kind == "connect":
            kinds[rec.conn] = path_kind(rec.url)
        elif rec.kind == "recv" and rec.payload.startswith('{"topic":"'):
            topics.add((kinds.get(rec.conn, ""), rec.payload[10:rec.payload.index('"', 10)]))
    return topics


class BybitReplayServer(ReplayVenue, BybitServer):
    """Serves a capture back: every recorded topic message (of a connection to this protocol's
    path) to the sessions subscribed to it."""

    protocol = ""

    def __init__(self, path: str, speed: float, symbols: list[str]) -> None:
        super().__init__(path, speed, symbols)
        self.conn_kind: dict[str, str] = {}

    async def on_record(self, rec) -> bool:
        if rec.kind == "connect":
            self.conn_kind[rec.conn] = path_kind(rec.url)
            return True
        return False

    def stream_of(self, rec) -> str | None:
        if rec.kind != "recv" or not rec.payload.startswith('{"topic":"'):
            return None
        if self.conn_kind.get(rec.conn, self.protocol) != self.protocol:
            return None
        topic = rec.payload[10:rec.payload.index('"', 10)]
        return topic if topic.rsplit(".", 1)[-1] in self.symbols else None


class BybitSpotReplayServer(BybitReplayServer):
    """A spot capture served back on ``/v5/public/spot``."""

    ws_paths = (SPOT_PATH,)
    protocol = "spot"


# ----------------------------------------------------------------------------- declaration
class BybitBase(Venue):
    """What Bybit's linear and spot protocols share (docs/protocols/bybit.md)."""

    name, Settings = "bybit", BybitSettings
    connections = Connections("wss://stream.bybit.com", "https://api.bybit.com", max_streams=200,
                              params_per_request=10, heartbeat_frame='{"op":"ping"}', heartbeat_s=20.0,
                              unmatched_ack_means_all=True)    # no documented connection lifetime
    streams = {"l2book": "orderbook.{book_depth}.{symbol}", "trades": "publicTrade.{symbol}"}
    seq_name = "u"
    Client = BybitClient
    depths: tuple[int, ...] = BOOK_DEPTHS

    def allowed_depths(self, settings: BybitSettings) -> tuple[range, str]:
        return range(1, self.depths[-1] + 1), f"books {', '.join(map(str, self.depths))}"

    depth_key = "book_depth"                  # the setting choosing the book topic's depth

    def stream_values(self, settings: BybitSettings, depth: int) -> dict[str, int]:
        return {"book_depth": book_depth(depth, settings, self.depths, self.depth_key)}

    def request_frame(self, op: str, params: list, req_id: int) -> str:
        return orjson.dumps({"req_id": str(req_id), "op": op, "args": params}).decode()


class BybitSpot(BybitBase):
    """Bybit v5 public spot (``spot/BTCUSDT``). A real delta (2026 capture) chains like linear's::

        {"topic":"orderbook.200.BTCUSDT","ts":1786310816618,"type":"delta","data":{"s":"BTCUSDT",
         "b":[["65140.4","0.875077"]],"a":[["65154.6","0.09948"],...],"u":62505425,"seq":112488545865},
         "cts":1786310816585}
    """

    protocol_key = "spot"
    routes = {"spot": SPOT_PATH}
    symbol_pattern, symbol_kind = "[A-Z0-9]+", "Bybit spot symbol (upper-case, e.g. spot/BTCUSDT)"
    SimServer, ReplayServer = BybitSpotSimServer, BybitSpotReplayServer
    depths, depth_key = SPOT_DEPTHS, "spot_book_depth"


SPOT = BybitSpot()


class Bybit(BybitBase):
    """Bybit v5 public, linear USDT/USDC perpetuals, and spot (docs/protocols/bybit.md)."""

    routes = {"linear": PATH}
    streams = {"l2book": "orderbook.{book_depth}.{symbol}", "trades": "publicTrade.{symbol}",
               "derivatives": "tickers.{symbol}", "liquidations": "allLiquidation.{symbol}"}
    symbol_pattern, symbol_kind = "[A-Z0-9]+", "Bybit linear symbol (upper-case, e.g. BTCUSDT)"
    SimServer, ReplayServer = BybitSimServer, BybitReplayServer
    recording_sniff = (".jsonl.zst", 20)        # cryptofeed captures
    markets = ("perp", "spot")
    protocols = {"spot": SPOT}

    def recorded_line(self, line: str) -> bool:
        return "stream.bybit.com" in line or '"topic":"orderbook.' in line or "publicTrade." in line

    def recording_symbols(self, path: str) -> set[str]:
        return {join_market("spot" if kind else "perp", t.rsplit(".", 1)[1]) for kind, t in recorded_topics(path)
                if t.startswith(("orderbook.", "publicTrade."))}

    def replay_settings(self, settings: BybitSettings, path: str) -> BybitSettings:
        """Subscribe to the book depth the recording holds (per protocol)."""
        for kind, key in (("", "book_depth"), ("spot", "spot_book_depth")):
            depths = {int(t.split(".")[1]) for k, t in recorded_topics(path) if k == kind and t.startswith("orderbook.")}
            if depths:
                settings = dataclasses.replace(settings, **{key: max(depths)})
        return settings


VENUE = Bybit()
