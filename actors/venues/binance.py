"""Binance USD-M futures: client, simulator and replay server of the public market-data protocol.

Wire protocol: ``docs/protocols/binance.md``. Since 2026-04-23 streams are routed: book and
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
import dataclasses
import time
from dataclasses import dataclass
from http import HTTPStatus

import orjson

from actors.venues.base import MS, Action, Connections, Subscription, Venue, quote
from actors.venues.settings import VenueSettings, choice
from actors.venues.sim.market import SimSymbol, SimTrade, Step
from actors.venues.sim.recordings import read_recording
from actors.venues.sim.server import ReplayVenue, Session, SimulatedVenue, VenueServer
from actors.venues.snapshot_sync import SnapshotSyncClient, UpdateIds

DEPTHS = (5, 10, 20, 50, 100, 500, 1000)      # REST snapshot limits; top-N is cut from the full book
PUBLIC_STREAMS = ("depth", "bookTicker", "trade", "rpiDepth")
NOT_FOUND = '{"code":-1,"msg":"not found"}'


@dataclass(frozen=True)
class BinanceSettings(VenueSettings):
    depth_stream: str = choice("depth@100ms", "depth", "depth@0ms", "depth@100ms", "depth@500ms")
    trade_stream: str = choice("trade", "trade", "aggTrade")
    snapshot_limit: int = choice(1000, *DEPTHS)


def route_of(stream: str) -> str:
    """The route a stream lives on: ``public`` or ``market`` (docs/protocols/binance.md, "URLs and routing")."""
    kind = stream.split("@", 1)[1] if "@" in stream else stream
    return "public" if kind.startswith(PUBLIC_STREAMS) else "market"


# ----------------------------------------------------------------------------- client
class BinanceClient(SnapshotSyncClient):
    """Protocol state of one Binance USD-M socket (see module docstring)."""

    settings: BinanceSettings
    snapshot_id_name = "lastUpdateId"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dropped_trades = 0

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
        return []

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
        return UpdateIds(update["pu"], update["U"], update["u"])

    def bridges(self, ids: UpdateIds, snapshot_id: int) -> bool:
        return ids.first <= snapshot_id <= ids.last

    def snapshot_url(self, symbol: str) -> str:
        return f"{self.plan.rest_base}/fapi/v1/depth?symbol={symbol}&limit={self.settings.snapshot_limit}"

    def parse_snapshot(self, body: bytes) -> tuple[int, list, list]:
        snap = orjson.loads(body)
        return int(snap["lastUpdateId"]), snap["bids"], snap["asks"]

    def update_levels(self, update: dict) -> tuple[list, list]:
        return update["b"], update["a"]

    def update_time(self, update: dict) -> int:
        return int(update["T"]) * MS


# ----------------------------------------------------------------------------- server side
class BinanceServer(VenueServer):
    """Routing and control frames shared by the simulator and the replay server."""

    ws_paths = ("/public", "/market")

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
            if route_of(stream) == path_route:
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

    async def send_book(self, s: SimSymbol, step: Step, now_ms: int) -> None:
        first = s.last_u + 1
        u = s.last_u + len(step.changes) + s.market.rng.randrange(3)
        bids, asks = step.levels()
        payload = orjson.dumps({"e": "depthUpdate", "E": now_ms, "T": now_ms, "s": s.symbol, "U": first, "u": u,
                                "pu": s.last_u, "b": bids, "a": asks}).decode()
        s.last_u = u
        self.record_book(s, u)
        if not self.take_skip(s):
            for name in self.subscribed_keys(f"{s.low}@depth"):
                await self.push(name, payload)

    snapshot_path = "/fapi/v1/depth"
    rest_errors = (NOT_FOUND, '{"code":-1121,"msg":"Invalid symbol."}')

    def snapshot_body(self, s: SimSymbol, query: dict[str, str]) -> str:
        bids, asks = s.market.snapshot(int(query.get("limit", 500)))
        now_ms = int(time.time() * 1000)
        return orjson.dumps({"lastUpdateId": s.last_u, "E": now_ms, "T": now_ms, "bids": bids, "asks": asks}).decode()

    async def malformed(self) -> None:
        for session in list(self.sessions):
            await self.send(session, '{"stream":"btcusdt@depth","data":{"e":"depthUpdate",')


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

    def __init__(self, path: str, speed: float, symbols: list[str]) -> None:
        super().__init__(path, speed, [s.lower() for s in symbols])
        self.snapshots_left = True
        self.waiting: list[asyncio.Future] = []
        self.waiter_arrived = asyncio.Event()

    def stream_of(self, rec) -> str | None:
        if not rec.payload.startswith('{"stream":"'):
            return None
        stream = rec.payload[11:rec.payload.index('"', 11)]
        return stream if stream.split("@")[0] in self.symbols else None

    async def on_record(self, rec) -> bool:
        if is_snapshot(rec.payload):
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
            return HTTPStatus.NOT_FOUND, NOT_FOUND
        if not self.snapshots_left:
            return HTTPStatus.SERVICE_UNAVAILABLE, NO_SNAPSHOT
        future = asyncio.get_running_loop().create_future()
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


# ----------------------------------------------------------------------------- declaration
class Binance(Venue):
    """Binance USD-M futures (docs/protocols/binance.md)."""

    name, Settings = "binance", BinanceSettings
    connections = Connections("wss://fstream.binance.com", "https://fapi.binance.com", max_streams=200,
                              stream_limit=1024, max_lifetime_s=1430 * 60.0)   # before Binance's 24 h cut
    routes = {"market": "/market/stream", "public": "/public/stream"}
    streams = {"l2book": "{low}@{depth_stream}", "trades": "{low}@{trade_stream}"}
    seq_name, prev_name = "u", "pu"
    symbol_pattern, symbol_kind = "[A-Z0-9]+", "Binance USD-M symbol (upper-case, e.g. BTCUSDT)"
    Client, SimServer, ReplayServer = BinanceClient, BinanceSimServer, BinanceReplayServer
    recording_sniff = (".gz", 200)

    def allowed_depths(self, settings: BinanceSettings) -> tuple[tuple[int, ...], str]:
        limit = settings.snapshot_limit
        return tuple(d for d in DEPTHS if d <= limit), f"REST snapshot limits up to snapshot_limit {limit}"

    def route(self, sub: Subscription) -> str:
        return route_of(sub.name)

    def request_frame(self, op: str, params: list, req_id: int) -> str:
        return orjson.dumps({"method": op.upper(), "params": params, "id": req_id}).decode()

    def recorded_line(self, line: str) -> bool:
        """hftbacktest-style Binance USD-M recordings hold combined depth streams with ``pu``."""
        return '"e":"depthUpdate"' in line and '"pu":' in line and '"stream":"' in line

    def recording_symbols(self, path: str) -> set[str]:
        return {s.split("@")[0].upper() for s in recorded_streams(path)}

    def replay_settings(self, settings: BinanceSettings, path: str) -> BinanceSettings:
        """Subscribe to the depth and trade stream names the recording holds."""
        for stream in recorded_streams(path):
            kind = stream.split("@", 1)[1]
            if kind.startswith("depth") and not kind[5:6].isdigit():
                settings = dataclasses.replace(settings, depth_stream=kind)
            elif kind in ("trade", "aggTrade"):
                settings = dataclasses.replace(settings, trade_stream=kind)
        return settings


VENUE = Binance()
