"""Binance USD-M futures, COIN-M futures and spot: clients, simulators and replay servers of the
public market-data protocols.

Markets (an ``archive.binance`` entry names its symbol the way Binance does):

* ``BTCUSDT`` -- USD-M perpetual (``fstream``/``fapi``, the rules below); a dated USD-M contract
  (``BTCUSDT_250627``) is the same protocol and lands under ``futures/``.
* ``BTCUSD_PERP`` / ``BTCUSD_250627`` -- COIN-M perpetual / quarterly, routed to ``dstream``/``dapi``
  by their form (``<coin>USD_<PERP|YYMMDD>``); the quarterly lands under ``futures/``. The sync is
  USD-M's (``pu`` chain, ``/dapi/v1/depth`` snapshot); streams are not split by path; trades default
  to ``@aggTrade`` (``coinm_trade_stream``).
* ``spot/BTCUSDT`` -- spot (``stream.binance.com``/``api.binance.com``, docs/protocols/binance.md "Spot"): diffs carry
  no ``pu`` and no ``T``; after the ``/api/v3/depth`` snapshot (limits up to 5000), diffs with
  ``u <= lastUpdateId`` are dropped, the first applied one has ``U <= lastUpdateId + 1 <= u``, then
  each must start where the last ended (``U <= last u + 1 <= u``, normally ``U == last u + 1``);
  ``ts_exchange`` is ``E`` (spot diffs have no transaction time).

REST snapshots are spent from a per-connection weight budget (Binance's documented weights per
``limit``; 2400/min for futures, 6000/min for spot): a snapshot that would overspend it waits.

Wire protocol: ``docs/protocols/binance.md``. Since 2026-04-23 USD-M streams are routed: book and
trade streams on ``/public``, aggTrade and the rest on ``/market``; a stream subscribed on the
wrong path is acknowledged and then silently never delivered, so routing is decided here.

Client (:class:`BinanceClient`), per symbol:

* diff depth (``<sym>@<depth_stream>``) synchronised with the REST snapshot exactly as
  Binance documents for USD-M ("Local book sync"), with the shared :mod:`~actors.venues.snapshot_sync`:
  fetch ``/fapi/v1/depth``, drop diffs with ``u < lastUpdateId``, the first applied diff must
  bridge it (``U <= lastUpdateId <= u``), then every diff's ``pu`` must equal the previous ``u``.
* one l2book row per applied diff: ``seq = u``, ``ts_exchange = T`` (transaction time, the
  matching engine's time; ``E`` is only the push time), top ``depth`` levels.
* trades from ``<sym>@trade`` (or ``@aggTrade`` when ``trade_stream: aggTrade``), side -1
  when ``m`` (buyer is maker, so the taker sold) else +1; frames with zero price or size
  ("spent" ids) are dropped.
* ``derivatives`` from ``<sym>@markPrice@1s`` (on ``/market``): mark ``p``, index ``i``, funding
  ``r`` and next funding time ``T``; open interest has no stream, so it is polled from REST
  ``/fapi/v1/openInterest`` every ``open_interest_interval`` (weight 1 per call, checked against
  the per-IP budget at startup), the poll driven by the mark-price frames' receive times.
* ``liquidations`` from ``<sym>@forceOrder`` (on ``/market``): side ``S`` of the liquidation
  order, average price ``ap`` (``p`` when not filled yet) and filled size ``z`` (else ``q``).
  Binance pushes at most one liquidation per symbol per second (the latest): not all of them.
* Binance pings every 3 minutes and websockets answers automatically; the connection is
  replaced before Binance's 24 h cut (``max_lifetime``).

Simulator (:class:`BinanceSimServer`): both routed paths, combined and raw streams, SUBSCRIBE
acks (ack-then-silence on the wrong path), REST depth consistent with the stream ids, and the
fault knobs ``drop_connection``, ``stall``, ``break_chain`` and ``malformed``.

COIN-M and spot have simulators of their own (unrouted ``/stream`` and ``/ws``, their diff and
trade shapes, their REST paths); several markets in one run share a loopback port.

Replay (:class:`BinanceReplayServer`): serves an hftbacktest-style recording or a cryptofeed
capture (``BINANCE``/``BINANCE_DELIVERY``) back over the protocol of the market it was recorded
on; a REST snapshot is answered with the recorded one once the replay reaches the moment it was
fetched (cryptofeed captures name the symbol in the URL; hftbacktest holds one inline).
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import ClassVar

import orjson

from actors.storage.layout import join_market, split_market
from actors.errors import ConfigError
from actors.venues.base import MS, Action, Connections, FetchSnapshot, Subscription, Venue, quote
from actors.venues.settings import Seconds, VenueSettings, choice
from actors.venues.sim.market import SimSymbol, SimTrade, Step
from actors.venues.sim.recordings import first_lines, read_recording
from actors.venues.sim.server import ReplayVenue, Session, SimulatedVenue, VenueServer
from actors.venues.snapshot_sync import SnapshotSyncClient, UpdateIds

DEPTHS = (5, 10, 20, 50, 100, 500, 1000)      # REST snapshot limits; top-N is cut from the full book
SPOT_DEPTHS = (*DEPTHS, 5000)                  # /api/v3/depth limits
PUBLIC_STREAMS = ("depth", "bookTicker", "trade", "rpiDepth")
NOT_FOUND = '{"code":-1,"msg":"not found"}'
COINM_SYMBOL = re.compile(r"[A-Z0-9]+USD_(?:PERP|\d{6})")    # BTCUSD_PERP, BTCUSD_250627
DATED = re.compile(r".+_\d{6}")                              # a dated contract: futures/


@dataclass(frozen=True)
class BinanceSettings(VenueSettings):
    depth_stream: str = choice("depth@100ms", "depth", "depth@0ms", "depth@100ms", "depth@500ms")
    trade_stream: str = choice("trade", "trade", "aggTrade")
    snapshot_limit: int = choice(1000, *DEPTHS)
    coinm_ws_base: str = "wss://dstream.binance.com"
    coinm_rest_base: str = "https://dapi.binance.com"
    coinm_trade_stream: str = choice("aggTrade", "aggTrade", "trade")
    spot_ws_base: str = "wss://stream.binance.com:9443"
    spot_rest_base: str = "https://api.binance.com"
    spot_depth_stream: str = choice("depth@100ms", "depth", "depth@100ms")
    spot_trade_stream: str = choice("trade", "trade", "aggTrade")
    spot_snapshot_limit: int = choice(1000, *SPOT_DEPTHS)
    mark_price_stream: str = choice("markPrice@1s", "markPrice@1s", "markPrice")
    open_interest_interval: Seconds = 5.0       # REST poll per symbol (weight 1 each)


def futures_weight(limit: int) -> int:
    """REST weight of a USD-M / COIN-M depth snapshot (docs/protocols/binance.md, "Local book sync")."""
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


def spot_weight(limit: int) -> int:
    """REST weight of a spot ``/api/v3/depth`` snapshot (Binance spot REST docs)."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


#: REST weight per minute the open-interest polls may use: half of Binance's 2400/min per IP, the
#: rest is left for depth snapshots (weight 20 each at limit 1000)
OPEN_INTEREST_WEIGHT_BUDGET = 1200
OPEN_INTEREST_PURPOSE = "open_interest"


def route_of(stream: str) -> str:
    """The route a stream lives on: ``public`` or ``market`` (docs/protocols/binance.md, "URLs and routing")."""
    kind = stream.split("@", 1)[1] if "@" in stream else stream
    return "public" if kind.startswith(PUBLIC_STREAMS) else "market"


# ----------------------------------------------------------------------------- client
class BinanceClient(SnapshotSyncClient):
    """Protocol state of one Binance USD-M socket (see module docstring)."""

    settings: BinanceSettings
    snapshot_id_name = "lastUpdateId"
    snapshot_path: ClassVar[str] = "/fapi/v1/depth"
    weight_per_minute: ClassVar[int] = 2400

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dropped_trades = 0
        self.spent: deque[tuple[int, int]] = deque()      # (ts_local, weight) of the last minute's snapshots
        self.open_interest_due: dict[str, int] = {}      # symbol -> ts_local (ns) of its next poll
        self.open_interest_asked: set[str] = set()      # polls on their way

    def handle(self, msg: dict, ts_local: int) -> list[Action]:
        if "stream" in msg and "data" in msg:
            return self._on_payload(msg["data"], ts_local)
        if "e" in msg:                                       # raw (non-combined) stream
            return self._on_payload(msg, ts_local)
        if "id" in msg and "result" in msg:
            self.acknowledged(msg["id"], ts_local)
        elif "code" in msg or "error" in msg:
            self.event_all(ts_local, "error", f"venue error: {quote(orjson.dumps(msg))}")
        return []

    def _on_payload(self, payload: dict, ts_local: int) -> list[Action]:
        """One stream payload: a ``depthUpdate`` goes to the snapshot sync, a trade to :meth:`_on_trade`.

        A real diff (``tests/fixtures/real/binance-usdm``, 2024-08-08, levels cut to 3), combined stream::

            {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161256299,"T":1723161256298,
             "s":"BTCUSDT","U":5123107832006,"u":5123107837557,"pu":5123107831937,
             "b":[["58710.20","0.014"],["61496.50","0.010"],["61510.90","0.000"]],
             "a":[["61800.30","3.330"],["61804.60","0.057"],["61810.00","0.285"]]}}

        ``pu`` chains to the previous diff's ``u``; ``T`` is the matching time; ``"0.000"`` removes a level.
        """
        if payload.get("e") == "forceOrder":
            self._on_force_order(payload, ts_local)
            return []
        sym = payload.get("s")
        if sym not in self.states:                  # upper-case on the wire; anything else is checked
            sym = str(sym or "").upper()
            if sym not in self.states:
                return []
        event = payload.get("e")
        if event == "depthUpdate":
            return self.on_update(sym, payload, ts_local)
        if event in ("trade", "aggTrade"):
            self._on_trade(sym, payload, ts_local)
        elif event == "markPriceUpdate":
            return self._on_mark_price(sym, payload, ts_local)
        return []

    def _on_mark_price(self, sym: str, m: dict, ts_local: int) -> list[Action]:
        """``{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091",
        "P":"11784.25641265","r":"0.00038167","T":1562306400000}`` (``P``: estimated settle price, not kept)."""
        self.derivative_row(sym, ts_local, int(m["E"]) * MS, mark_price=float(m["p"]), index_price=float(m["i"]),
                            funding_rate=float(m["r"]) if m.get("r") not in (None, "") else None,
                            next_funding_time=int(m["T"]) * MS if m.get("T") else None)
        if sym in self.open_interest_asked or ts_local < self.open_interest_due.get(sym, 0):
            return []
        self.open_interest_asked.add(sym)
        self.open_interest_due[sym] = ts_local + int(self.settings.open_interest_interval * 1e9)
        return [FetchSnapshot(sym, f"{self.plan.rest_base}/fapi/v1/openInterest?symbol={sym}", OPEN_INTEREST_PURPOSE)]

    def on_fetched(self, action: FetchSnapshot, body: bytes | None, ts_local: int,
                   error: str | None = None) -> list[Action]:
        """An open-interest answer ``{"openInterest":"10659.509","symbol":"BTCUSDT","time":1589437530011}``
        (a failed poll is an ``error`` event; the next one is due an interval later)."""
        if action.purpose != OPEN_INTEREST_PURPOSE:
            return super().on_fetched(action, body, ts_local, error)
        self.open_interest_asked.discard(action.symbol)
        try:
            if error is not None or body is None:
                raise ValueError(error)
            answer = orjson.loads(body)
            self.derivative_row(action.symbol, ts_local, int(answer["time"]) * MS,
                                open_interest=float(answer["openInterest"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self.sink.event(action.symbol, ts_local, "derivatives", "error",
                            f"open interest poll failed ({exc}): {quote(body or b'')}"[:2000])
        return []

    def _on_force_order(self, f: dict, ts_local: int) -> None:
        """``{"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014",
        "p":"9910","ap":"9910","X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}``"""
        o = f["o"]
        sym = str(o.get("s", "")).upper()
        if sym not in self.states:
            return
        price = float(o.get("ap") or 0) or float(o["p"])
        size = float(o.get("z") or 0) or float(o["q"])
        self.liquidation_row(sym, ts_local, int(o.get("T") or f["E"]) * MS, 1 if o["S"] == "BUY" else -1, price, size)

    def _on_trade(self, sym: str, t: dict, ts_local: int) -> None:
        """One trade or aggTrade payload as a trades row. A real one (``tests/fixtures/real/binance-usdm``)::

            {"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":5266583935,
             "p":"61800.30","q":"0.006","X":"MARKET","m":false}

        ``m`` false: the buyer was the taker (side +1).
        """
        price, size = float(t["p"]), float(t["q"])
        if price == 0.0 or size == 0.0:
            self.dropped_trades += 1
            return
        trade_id = str(t["t"] if t.get("e") == "trade" else t["a"])
        self.trade_row(sym, ts_local, int(t["T"]) * MS, trade_id, price, size, -1 if t["m"] else 1)

    # -- the local book sync rules -----------------------------------------------------
    def update_ids(self, update: dict) -> UpdateIds:
        return tuple.__new__(UpdateIds, (update["pu"], update["U"], update["u"]))   # UpdateIds(...) without its Python __new__

    def bridges(self, ids: UpdateIds, snapshot_id: int) -> bool:
        return ids.first <= snapshot_id <= ids.last

    @property
    def snapshot_limit(self) -> int:
        return self.settings.snapshot_limit

    def snapshot_url(self, symbol: str) -> str:
        return f"{self.plan.rest_base}{self.snapshot_path}?symbol={symbol}&limit={self.snapshot_limit}"

    def snapshot_weight(self) -> int:
        return futures_weight(self.snapshot_limit)

    def fetch(self, symbol: str, st, ts_local: int, force: bool = False) -> list[Action]:
        """A snapshot, if the last minute's snapshots leave room for its weight (else it waits)."""
        if st.fetching or (not force and ts_local < st.retry_at):
            return []
        while self.spent and self.spent[0][0] <= ts_local - 60 * 1_000_000_000:
            self.spent.popleft()
        weight = self.snapshot_weight()
        if self.spent and sum(w for _, w in self.spent) + weight > self.weight_per_minute:
            st.retry_at = self.spent[0][0] + 60 * 1_000_000_000
            return []
        self.spent.append((ts_local, weight))
        return super().fetch(symbol, st, ts_local, force=True)

    def parse_snapshot(self, body: bytes) -> tuple[int, list, list]:
        snap = orjson.loads(body)
        return int(snap["lastUpdateId"]), snap["bids"], snap["asks"]

    def update_levels(self, update: dict) -> tuple[list, list]:
        return update["b"], update["a"]

    def update_time(self, update: dict) -> int:
        return int(update["T"]) * MS


class BinanceCoinmClient(BinanceClient):
    """A COIN-M socket: USD-M's rules, the ``dapi`` snapshot. A real diff (2021 capture), with ``ps``::

        {"stream":"bchusd_perp@depth@100ms","data":{"e":"depthUpdate","E":1626916403873,"T":1626916403864,
         "s":"BCHUSD_PERP","ps":"BCHUSD","U":167006084465,"u":167006084895,"pu":167006084238,
         "b":[["427.27","0"],["427.53","260"],...],"a":[...]}}
    """

    snapshot_path = "/dapi/v1/depth"


class BinanceSpotClient(BinanceClient):
    """A spot socket: diffs without ``pu`` or ``T``, the ``api/v3`` snapshot (see module docstring).
    A real diff and the snapshot fetched after it (2021 capture): the diff ends at the snapshot's id,
    so it is dropped, and the next one (``U`` 499869753) bridges::

        {"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate","E":1633998512068,"s":"NKNUSDT",
         "U":499869750,"u":499869752,"b":[["0.35130000","6195.00000000"],...],"a":[]}}
        GET /api/v3/depth?symbol=NKNUSDT&limit=1000 -> {"lastUpdateId":499869752,"bids":[...],"asks":[...]}
    """

    snapshot_path = "/api/v3/depth"
    weight_per_minute = 6000

    @property
    def snapshot_limit(self) -> int:
        return self.settings.spot_snapshot_limit

    def snapshot_weight(self) -> int:
        return spot_weight(self.snapshot_limit)

    def update_ids(self, update: dict) -> UpdateIds:
        first = update["U"]
        return UpdateIds(first - 1, first, update["u"])

    def bridges(self, ids: UpdateIds, snapshot_id: int) -> bool:
        return ids.first <= snapshot_id + 1 <= ids.last

    def chains(self, ids: UpdateIds, last: int | None) -> bool:
        return last is not None and ids.first <= last + 1 <= ids.last

    def update_time(self, update: dict) -> int:
        return int(update["E"]) * MS


# ----------------------------------------------------------------------------- server side
class BinanceServer(VenueServer):
    """Routing and control frames shared by the simulator and the replay server."""

    ws_paths = ("/public", "/market")
    routed = True           # USD-M: a stream on the wrong path is acknowledged, then silent

    async def on_open(self, session: Session) -> None:
        names = []
        if "streams" in session.query:
            names = session.query["streams"][-1].split("/")
        elif "/ws/" in session.path:
            names = session.path.split("/ws/", 1)[1].split("/")
        session.combined = "/stream" in session.path  # type: ignore[attr-defined]
        await self._subscribe(session, list(filter(None, names)))

    async def _subscribe(self, session: Session, streams: list[str]) -> None:
        """A stream on the wrong routed path is acknowledged but stays silent."""
        path_route = session.path.strip("/").split("/")[0]
        for stream in streams:
            if not self.routed or route_of(stream) == path_route:
                await self.subscribe(session, [stream])
            else:
                session.silent.add(stream)

    op_key, bad_request = "method", '{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}'

    async def on_request(self, session: Session, method: str, req: dict) -> None:
        req_id = req.get("id")
        params = list(req.get("params") or [])
        result = None
        if method == "SUBSCRIBE":
            await self._subscribe(session, params)
        elif method == "UNSUBSCRIBE":
            self.unsubscribe(session, params)
        elif method == "LIST_SUBSCRIPTIONS":
            result = sorted(session.streams | session.silent)
        else:
            await self.send(session, orjson.dumps({
                "code": 2, "msg": f"Invalid request: unknown variant {method}, expected one of SUBSCRIBE, "
                                  "UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY", "id": req_id}).decode())
            return
        await self.send(session, orjson.dumps({"result": result, "id": req_id}).decode())

    def wrap(self, session: Session, key: str, payload: str) -> str:
        return f'{{"stream":"{key}","data":{payload}}}' if getattr(session, "combined", True) else payload


class BinanceSimServer(SimulatedVenue, BinanceServer):
    """Synthetic Binance USD-M market on loopback (see module docstring)."""

    def __init__(self, symbols: list[str], sim_cfg: dict, depth: int) -> None:
        SimulatedVenue.__init__(self, symbols, sim_cfg, depth)
        for s in self.symbols.values():
            s.last_u = 1_000_000_000 + s.market.rng.randrange(1_000_000)

    def reset_sequence(self, s: SimSymbol) -> None:
        """After a restart the update ids start again from a new, lower base (a new truth epoch)."""
        self.new_epoch(s)
        s.last_u = 1 + s.market.rng.randrange(1_000_000)

    def trade_message(self, s: SimSymbol, t: SimTrade, now_ms: int) -> tuple[str, str]:
        return f"{s.low}@trade", (f'{{"e":"trade","E":{now_ms},"T":{now_ms},"s":"{s.symbol}","t":{t.trade_id},'
                                  f'"p":"{t.price_str}","q":"{t.size_str}","X":"MARKET",'
                                  f'"m":{"true" if t.side < 0 else "false"}}}')

    def agg_trade_message(self, s: SimSymbol, t: SimTrade, now_ms: int) -> tuple[str, str]:
        """The trade as a one-fill ``aggTrade`` (id ``a`` = the trade id)."""
        return f"{s.low}@aggTrade", (f'{{"e":"aggTrade","E":{now_ms},"a":{t.trade_id},"s":"{s.symbol}",'
                                     f'"p":"{t.price_str}","q":"{t.size_str}","f":{t.trade_id},"l":{t.trade_id},'
                                     f'"T":{now_ms},"m":{"true" if t.side < 0 else "false"}}}')

    async def send_trade(self, s: SimSymbol, t: SimTrade, now_ms: int) -> None:
        """To the subscribers of ``@trade`` and of ``@aggTrade``; true once one of them got it."""
        reached = 0
        for key, payload in (self.trade_message(s, t, now_ms), self.agg_trade_message(s, t, now_ms)):
            reached += await self.push(key, payload)
        self.record_trade(s, t, reached, now_ms)

    def diff(self, s: SimSymbol, step: Step, now_ms: int) -> tuple[int, dict]:
        """The next diff's last update id and payload (USD-M: ids jump, ``pu`` chains)."""
        u = s.last_u + len(step.changes) + s.market.rng.randrange(3)
        bids, asks = step.levels()
        return u, {"e": "depthUpdate", "E": now_ms, "T": now_ms, "s": s.symbol, "U": s.last_u + 1, "u": u,
                   "pu": s.last_u, "b": bids, "a": asks}

    async def send_book(self, s: SimSymbol, step: Step, now_ms: int) -> None:
        u, diff = self.diff(s, step, now_ms)
        payload = orjson.dumps(diff).decode()
        s.last_u = u
        self.record_book(s, u)
        if not self.take_skip(s):
            for name in self.subscribed_keys(f"{s.low}@depth"):
                await self.push(name, payload)

    def derivatives_message(self, s: SimSymbol, changed: dict[str, str], now_ms: int) -> tuple[str, str]:
        """A ``markPriceUpdate`` (every value but open interest, which is polled from REST)."""
        v = s.derivatives.values
        key = next(iter(sorted(self.subscribed_keys(f"{s.low}@markPrice"))), f"{s.low}@markPrice@1s")
        return key, (f'{{"e":"markPriceUpdate","E":{now_ms},"s":"{s.symbol}","p":"{v["mark_price"]}",'
                     f'"i":"{v["index_price"]}","P":"{v["index_price"]}","r":"{v["funding_rate"]}",'
                     f'"T":{v["next_funding_time"]}}}')

    def liquidation_message(self, s: SimSymbol, liq, now_ms: int) -> tuple[str, str]:
        side = "BUY" if liq.side > 0 else "SELL"
        return f"{s.low}@forceOrder", (f'{{"e":"forceOrder","E":{now_ms},"o":{{"s":"{s.symbol}","S":"{side}",'
                                       f'"o":"LIMIT","f":"IOC","q":"{liq.size_str}","p":"{liq.price_str}",'
                                       f'"ap":"{liq.price_str}","X":"FILLED","l":"{liq.size_str}",'
                                       f'"z":"{liq.size_str}","T":{now_ms}}}}}')

    async def http(self, path: str, query: dict[str, str]) -> tuple[HTTPStatus, str]:
        """``/fapi/v1/openInterest`` besides the depth snapshot."""
        s = self.symbols.get(query.get("symbol", ""))
        if path != "/fapi/v1/openInterest" or s is None:
            return await super().http(path, query)
        oi = s.derivatives.values["open_interest"]
        if self.record_truth:
            s.truth.open_interest_served.add(float(oi))
        return HTTPStatus.OK, f'{{"openInterest":"{oi}","symbol":"{s.symbol}","time":{int(time.time() * 1000)}}}'

    snapshot_path = "/fapi/v1/depth"
    rest_errors = (NOT_FOUND, '{"code":-1121,"msg":"Invalid symbol."}')

    def snapshot_body(self, s: SimSymbol, query: dict[str, str]) -> str:
        bids, asks = s.market.snapshot(int(query.get("limit", 500)))
        now_ms = int(time.time() * 1000)
        return orjson.dumps({"lastUpdateId": s.last_u, "E": now_ms, "T": now_ms, "bids": bids, "asks": asks}).decode()

    async def malformed(self) -> None:
        for session in list(self.sessions):
            await self.send(session, '{"stream":"btcusdt@depth","data":{"e":"depthUpdate",')


class Unrouted:
    """COIN-M and spot servers: streams on ``/stream`` (combined) and ``/ws`` (raw), not split by path."""

    ws_paths = ("/stream", "/ws")
    routed = False


class BinanceCoinmSimServer(Unrouted, BinanceSimServer):
    """Synthetic COIN-M market: USD-M's diffs plus the pair ``ps``; the ``dapi`` snapshot."""

    snapshot_path = "/dapi/v1/depth"

    def diff(self, s: SimSymbol, step: Step, now_ms: int) -> tuple[int, dict]:
        u, payload = super().diff(s, step, now_ms)
        return u, {**payload, "ps": s.symbol.split("_")[0]}

    def snapshot_body(self, s: SimSymbol, query: dict[str, str]) -> str:
        body = orjson.loads(super().snapshot_body(s, query))
        return orjson.dumps({**body, "symbol": s.symbol, "pair": s.symbol.split("_")[0]}).decode()


class BinanceSpotSimServer(Unrouted, BinanceSimServer):
    """Synthetic spot market: contiguous update ids (``U`` = last ``u`` + 1), no ``pu``/``T``; ``api/v3``."""

    snapshot_path = "/api/v3/depth"

    def trade_message(self, s: SimSymbol, t: SimTrade, now_ms: int) -> tuple[str, str]:
        return f"{s.low}@trade", (f'{{"e":"trade","E":{now_ms},"s":"{s.symbol}","t":{t.trade_id},'
                                  f'"p":"{t.price_str}","q":"{t.size_str}","T":{now_ms},'
                                  f'"m":{"true" if t.side < 0 else "false"},"M":true}}')

    def diff(self, s: SimSymbol, step: Step, now_ms: int) -> tuple[int, dict]:
        u = s.last_u + max(1, len(step.changes))
        bids, asks = step.levels()
        return u, {"e": "depthUpdate", "E": now_ms, "s": s.symbol, "U": s.last_u + 1, "u": u, "b": bids, "a": asks}

    def snapshot_body(self, s: SimSymbol, query: dict[str, str]) -> str:
        bids, asks = s.market.snapshot(int(query.get("limit", 100)))
        return orjson.dumps({"lastUpdateId": s.last_u, "bids": bids, "asks": asks}).decode()


# ----------------------------------------------------------------------------- replay
NO_SNAPSHOT = '{"code":-1,"msg":"the recording holds no further depth snapshot"}'


def is_snapshot(payload: str) -> bool:
    """True for a recorded REST depth answer (not a stream frame)."""
    return '"lastUpdateId"' in payload[:64] and '"stream"' not in payload[:16]


def recorded_streams(path: str, limit: int = 5000) -> set[str]:
    """The stream names of a recording's first ``limit`` frames."""
    streams = set()
    for n, rec in enumerate(read_recording(path)):
        if n >= limit:
            break
        if rec.payload.startswith('{"stream":"'):
            streams.add(rec.payload[11:rec.payload.index('"', 11)])
    return streams


class BinanceReplayServer(ReplayVenue, BinanceServer):
    """Serves a recording back over the Binance protocol (see module docstring)."""

    snapshot_path = "/fapi/v1/depth"

    def __init__(self, path: str, speed: float, symbols: list[str]) -> None:
        super().__init__(path, speed, [s.lower() for s in symbols])
        self.snapshots_left = True
        self.waiting: list[asyncio.Future] = []
        self.waiter_arrived = asyncio.Event()
        # cryptofeed captures: the REST answers by symbol, each served once the replay reaches its time
        self.by_symbol = str(path).endswith((".jsonl.zst", ".jsonl"))
        self.recorded: dict[str, deque[list]] = {}        # symbol -> [ts, body, reached] in recorded order
        self.symbol_waiting: list[tuple[str, asyncio.Future]] = []
        self.request_arrived = asyncio.Event()
        self.requests: dict[str, int] = {}                  # snapshot requests per symbol
        self.data_clock = 0

    def stream_of(self, rec) -> str | None:
        if not rec.payload.startswith('{"stream":"'):
            return None
        stream = rec.payload[11:rec.payload.index('"', 11)]
        return stream if stream.split("@")[0] in self.symbols else None

    async def on_record(self, rec) -> bool:
        if rec.kind == "http":
            symbol = snapshot_symbol(rec.url)
            if symbol and symbol.lower() in self.symbols and is_snapshot(rec.payload):
                self.recorded.setdefault(symbol, deque()).append([rec.ts_local, rec.payload, False])
            return True
        if rec.kind != "recv":
            return True
        if is_snapshot(rec.payload):
            await self._serve_snapshot(rec.payload)
            return True
        self.data_clock = rec.ts_local
        for symbol, queue in self.recorded.items():
            if queue and queue[0][0] <= self.data_clock and not queue[0][2]:
                queue[0][2] = True                    # the moment it was fetched: its client asks now
                await self._await_request(symbol)
        if self.symbol_waiting:
            self._answer_due()
        return False

    async def _await_request(self, symbol: str, timeout_s: float = 10.0) -> None:
        """Hold the replay (briefly) until a client subscribed to ``symbol``'s depth asks for its snapshot."""
        prefix = f"{symbol.lower()}@depth"
        if not any(key.startswith(prefix) for session in self.sessions for key in session.streams):
            return
        deadline = asyncio.get_running_loop().time() + timeout_s
        asked = self.requests.get(symbol, 0)
        while not any(sym == symbol for sym, _ in self.symbol_waiting) and self.requests.get(symbol, 0) == asked:
            self.request_arrived.clear()
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self.request_arrived.wait(), max(left, 0.0))
            except asyncio.TimeoutError:
                return

    def _answer_due(self, finished: bool = False) -> None:
        """Answer the waiting requests whose symbol's next recorded snapshot the replay has reached."""
        still = []
        for symbol, future in self.symbol_waiting:
            queue = self.recorded.get(symbol)
            if future.done():
                continue
            if queue and queue[0][0] <= self.data_clock:
                future.set_result(queue.popleft()[1])
            elif finished:
                future.set_result(None)
            else:
                still.append((symbol, future))
        self.symbol_waiting = still

    async def on_finished(self) -> None:
        self.snapshots_left = False
        for future in self.waiting:
            if not future.done():
                future.set_result(None)
        self._answer_due(finished=True)

    async def http(self, path: str, query: dict[str, str]) -> tuple[HTTPStatus, str]:
        if path != self.snapshot_path:
            return HTTPStatus.NOT_FOUND, NOT_FOUND
        if not self.snapshots_left:
            return HTTPStatus.SERVICE_UNAVAILABLE, NO_SNAPSHOT
        future = asyncio.get_running_loop().create_future()
        if self.by_symbol:
            symbol = query.get("symbol", "").upper()
            self.symbol_waiting.append((symbol, future))
            self.requests[symbol] = self.requests.get(symbol, 0) + 1
            self.request_arrived.set()
            self._answer_due()
        else:
            self.waiting.append(future)
            self.waiter_arrived.set()
        body = await future
        if body is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, NO_SNAPSHOT
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


class BinanceCoinmReplayServer(Unrouted, BinanceReplayServer):
    """A COIN-M recording served back (``dstream`` paths, ``dapi`` snapshots)."""

    snapshot_path = "/dapi/v1/depth"


class BinanceSpotReplayServer(Unrouted, BinanceReplayServer):
    """A spot recording served back (``stream.binance.com`` paths, ``api/v3`` snapshots)."""

    snapshot_path = "/api/v3/depth"


def snapshot_symbol(url: str) -> str | None:
    """The symbol of a recorded ``.../depth?symbol=X`` request, or None."""
    m = re.search(r"/depth\?(?:.*&)?symbol=([A-Za-z0-9_]+)", url)
    return m.group(1).upper() if m else None


PROTOCOL_OF_HOST = (("dstream.", "coinm"), ("dapi.", "coinm"), ("fstream.", ""), ("fapi.", ""),
                    ("stream.binance.com", "spot"), ("data-stream.binance.vision", "spot"), ("api.binance.com", "spot"))


def recorded_protocols(path: str, limit: int = 5000) -> dict[str, str]:
    """Wire symbol (upper-case) -> the protocol key it was recorded on ("" USD-M, ``coinm``, ``spot``).

    A cryptofeed capture says it by the URL of each connection; an hftbacktest recording by its
    diffs (futures diffs carry ``pu``, spot diffs do not)."""
    conn_protocol: dict[str, str] = {}
    out: dict[str, str] = {}
    for n, rec in enumerate(read_recording(path)):
        if n >= limit:
            break
        if rec.kind == "connect":
            conn_protocol[rec.conn] = next((key for host, key in PROTOCOL_OF_HOST if host in rec.url), "")
            continue
        if rec.kind != "recv" or not rec.payload.startswith('{"stream":"'):
            continue
        stream = rec.payload[11:rec.payload.index('"', 11)]
        symbol = stream.split("@")[0].upper()
        if rec.conn in conn_protocol:
            out[symbol] = conn_protocol[rec.conn]
        elif '"depthUpdate"' in rec.payload[:120]:
            out[symbol] = ("coinm" if COINM_SYMBOL.fullmatch(symbol) else "") if '"pu":' in rec.payload else "spot"
        else:
            out.setdefault(symbol, "coinm" if COINM_SYMBOL.fullmatch(symbol) else "")
    return out


# ----------------------------------------------------------------------------- declaration
LIFETIME_S = 1430 * 60.0                   # a planned reconnect before Binance's 24 h cut


class BinanceBase(Venue):
    """What Binance's three protocols share: requests, names, 24 h connections."""

    name, Settings = "binance", BinanceSettings
    seq_name, prev_name = "u", "pu"
    routes = {"stream": "/stream"}             # COIN-M and spot: one path for every stream

    def request_frame(self, op: str, params: list, req_id: int) -> str:
        return orjson.dumps({"method": op.upper(), "params": params, "id": req_id}).decode()

    def allowed_depths(self, settings: BinanceSettings) -> tuple[tuple[int, ...], str]:
        limit = settings.snapshot_limit
        return tuple(d for d in DEPTHS if d <= limit), f"REST snapshot limits up to snapshot_limit {limit}"


class BinanceCoinm(BinanceBase):
    """Binance COIN-M futures (``dstream``/``dapi``): perpetuals ``BTCUSD_PERP``, quarterlies ``BTCUSD_250627``."""

    protocol_key = "coinm"
    connections = Connections("wss://dstream.binance.com", "https://dapi.binance.com", max_streams=200,
                              stream_limit=200, max_lifetime_s=LIFETIME_S)
    streams = {"l2book": "{low}@{depth_stream}", "trades": "{low}@{coinm_trade_stream}"}
    symbol_pattern, symbol_kind = COINM_SYMBOL.pattern, "Binance COIN-M symbol (e.g. BTCUSD_PERP, BTCUSD_250627)"
    Client, SimServer, ReplayServer = BinanceCoinmClient, BinanceCoinmSimServer, BinanceCoinmReplayServer


class BinanceSpot(BinanceBase):
    """Binance spot (``stream.binance.com``/``api.binance.com``, docs/protocols/binance.md "Spot")."""

    protocol_key = "spot"
    connections = Connections("wss://stream.binance.com:9443", "https://api.binance.com", max_streams=200,
                              stream_limit=1024, max_lifetime_s=LIFETIME_S)
    streams = {"l2book": "{low}@{spot_depth_stream}", "trades": "{low}@{spot_trade_stream}"}
    prev_name = None                           # spot diffs chain by U == last u + 1
    symbol_pattern, symbol_kind = "[A-Z0-9]+", "Binance spot symbol (upper-case, e.g. spot/BTCUSDT)"
    Client, SimServer, ReplayServer = BinanceSpotClient, BinanceSpotSimServer, BinanceSpotReplayServer

    def allowed_depths(self, settings: BinanceSettings) -> tuple[tuple[int, ...], str]:
        limit = settings.spot_snapshot_limit
        return (tuple(d for d in SPOT_DEPTHS if d <= limit),
                f"REST snapshot limits up to spot_snapshot_limit {limit}")


COINM, SPOT = BinanceCoinm(), BinanceSpot()
#: the settings keys naming each protocol's streams (for replay_settings)
STREAM_KEYS = {"": ("depth_stream", "trade_stream"), "coinm": ("depth_stream", "coinm_trade_stream"),
               "spot": ("spot_depth_stream", "spot_trade_stream")}


class Binance(BinanceBase):
    """Binance: USD-M futures, COIN-M futures and spot (docs/protocols/binance.md)."""

    connections = Connections("wss://fstream.binance.com", "https://fapi.binance.com", max_streams=200,
                              stream_limit=1024, max_lifetime_s=LIFETIME_S)
    routes = {"market": "/market/stream", "public": "/public/stream"}
    streams = {"l2book": "{low}@{depth_stream}", "trades": "{low}@{trade_stream}",
               "derivatives": "{low}@{mark_price_stream}", "liquidations": "{low}@forceOrder"}
    symbol_pattern, symbol_kind = r"[A-Z0-9]+(?:_\d{6})?", "Binance USD-M symbol (upper-case, e.g. BTCUSDT)"
    Client, SimServer, ReplayServer = BinanceClient, BinanceSimServer, BinanceReplayServer
    recording_sniff = (".gz", 200)
    markets = ("perp", "spot", "futures")
    protocols = {"coinm": COINM, "spot": SPOT}

    def qualify(self, symbol: str) -> str:
        """Spot as named; futures by their form: a dated contract is ``futures/``, the rest ``perp``."""
        market, bare = split_market(super().qualify(symbol))
        if market == "spot":
            return join_market(market, bare)
        natural = "futures" if DATED.fullmatch(bare) else "perp"
        if "/" in symbol and market != natural:
            raise ConfigError(f"archive.binance: {symbol!r}: {bare} is a{' dated' if natural == 'futures' else ' perpetual'}"
                              f" contract (write {join_market(natural, bare)!r})")
        return join_market(natural, bare)

    def protocol_of(self, symbol: str) -> Venue:
        market, bare = split_market(symbol)
        if market == "spot":
            return SPOT
        return COINM if COINM_SYMBOL.fullmatch(bare) else self

    def validate(self, settings: BinanceSettings, symbols: list[str], channels: list[str], depth: int) -> None:
        """Also: the open-interest polls of ``derivatives`` stay within their REST weight budget."""
        super().validate(settings, symbols, channels, depth)
        if "derivatives" not in channels:
            return
        interval = settings.open_interest_interval
        per_minute = len(symbols) * 60 / interval if interval > 0 else float("inf")
        if interval < 1 or per_minute > OPEN_INTEREST_WEIGHT_BUDGET:
            raise ConfigError(f"venues.binance.open_interest_interval: {interval:g}s for {len(symbols)} symbol(s) is "
                              f"{per_minute:.0f} REST weight/min (allowed: >= 1s and <= {OPEN_INTEREST_WEIGHT_BUDGET}/min,"
                              f" half of Binance's 2400/min per IP); poll less often or archive fewer symbols")

    def route(self, sub: Subscription) -> str:
        return route_of(sub.name)

    def recording_matches(self, path: str) -> bool:
        """hftbacktest recordings (``.gz``) hold combined depth streams; cryptofeed captures name Binance."""
        if str(path).endswith((".jsonl.zst", ".jsonl")):
            return any('"exchange":"BINANCE' in line for line in first_lines(path, 5))
        return super().recording_matches(path)

    def recorded_line(self, line: str) -> bool:
        """hftbacktest-style Binance recordings hold combined-stream depth diffs."""
        return '"e":"depthUpdate"' in line and '"stream":"' in line

    def recording_symbols(self, path: str) -> set[str]:
        """The archive's names of the recorded symbols (``spot/NKNUSDT``, ``futures/BTCUSD_211231``)."""
        return {join_market("spot", sym) if key == "spot" else
                join_market("futures" if DATED.fullmatch(sym) else "perp", sym)
                for sym, key in recorded_protocols(path).items()}

    def replay_settings(self, settings: BinanceSettings, path: str) -> BinanceSettings:
        """Subscribe to the depth and trade stream names the recording holds, per protocol."""
        protocols = recorded_protocols(path)
        for stream in recorded_streams(path):
            symbol, kind = stream.split("@", 1)
            depth_key, trade_key = STREAM_KEYS[protocols.get(symbol.upper(), "")]
            if kind.startswith("depth") and not kind[5:6].isdigit():
                settings = dataclasses.replace(settings, **{depth_key: kind})
            elif kind in ("trade", "aggTrade"):
                settings = dataclasses.replace(settings, **{trade_key: kind})
        return settings


VENUE = Binance()
