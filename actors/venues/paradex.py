"""Paradex: client and simulator of the JSON-RPC websocket with SBE binary market data.

Notes the code relies on: ``docs/protocols/paradex.md``; the codec is :mod:`actors.venues.paradex_sbe`.

Since 2026-09-21 Paradex sends public channel data only as SBE binary frames, on a socket opened
with ``?sbeSchemaId=1&sbeSchemaVersion=1``; subscribe requests, acks and errors stay JSON-RPC text.

Client (:class:`ParadexClient`):

* JSON-RPC ``subscribe`` per channel with ids; the ``result`` ack gives ``subscribed``.
* ``order_book.{market}.deltas`` (bare: a suffixed deltas channel is refused on the binary
  socket): a BookEvent SNAPSHOT replaces the book, DELTAs follow with ``seq`` + 1 (size 0 removes
  a level); a break gives ``gap`` and a resubscribe (a fresh SNAPSHOT). The book is kept whole and
  each applied message writes the top ``depth`` levels, ``seq``, ``ts_exchange`` = the event's ``ts``.
* ``trades.{market}``: TradeEvent ``side`` is the aggressor, ``tradeId`` the id (each trade
  written once), ``createdAt`` the exchange time, ``tradeType`` (FILL, LIQUIDATION, RPI, ...)
  handed to the sink as ``trade_type`` when the sink's ``trade`` takes it.
* A binary frame of another template id is skipped (counted in ``skipped_templates``); one that
  does not follow the schema (e.g. truncated) is one ``error`` event; the connection stays.
* Text frames with ``method: subscription`` are the JSON payloads of before SBE (old captures,
  the simulator's ``json`` mode): ``update_type`` ``s``/``d``, ``seq_no`` + 1, ``inserts``/``updates``/``deletes``.
* Paradex pings at the protocol level every 55 s; websockets answers automatically.
"""
from __future__ import annotations

import inspect
import time
from collections import Counter
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import orjson

from actors.feed.book import BID
from actors.venues import paradex_sbe as sbe
from actors.venues.base import MS, Action, Connections, ProtocolError, Venue, VenueClient, quote
from actors.venues.settings import VenueSettings
from actors.venues.sim.market import SimSymbol, SimTrade, Step
from actors.venues.sim.server import Session, SimulatedVenue

PATH = "/v1"
US = 1_000                                  # ns per microsecond
TAKER_SIDES = {sbe.BUY: 1, sbe.SELL: -1}    # SBE Side -> our side (254, not representable: 0)
PAYLOADS = ("sbe", "json")                  # the simulator's modes (source.paradex_payloads)


def decode_json(data: str | bytes) -> dict:
    """A text frame as a JSON-RPC dict."""
    msg = orjson.loads(data)
    if not isinstance(msg, dict):
        raise ProtocolError("not a JSON object")
    return msg


def levels(pairs: list[tuple[int, int]]) -> list[tuple[float, float]]:
    """SBE ``(price, size)`` mantissas as floats."""
    scale = sbe.SCALE
    return [(p / scale, s / scale) for p, s in pairs]


class ParadexClient(VenueClient):
    """Protocol state of one Paradex socket (see module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: binary frames of templates we do not archive, by template id
        self.skipped_templates: Counter[int] = Counter()
        try:
            self.typed_trades = "trade_type" in inspect.signature(self.sink.trade).parameters
        except (TypeError, ValueError):
            self.typed_trades = False

    def decode(self, data: str | bytes, ts_local: int) -> dict | sbe.TradeEvent | sbe.BookEvent | None:
        """A binary frame as its SBE event; a text frame as JSON-RPC. None: skipped or malformed.

        A BookEvent DELTA as it is laid out on the wire (seq 7, ts 1760000000000000 us, one bid
        42000.5 x 0.001, no asks, market BTC-USD-PERP): the 8-byte header, the 89-byte block, the
        ``bids`` and ``asks`` groups, the market name (hex, then what it is)::

            5900 0300 0100 0100                                blockLength 89, templateId 3, schemaId 1, version 1
            0000ceeeb5400600 0700000000000000 01               ts (us), seq, pkgType DELTA
            0000000000000080 0000000000000080 0000000000000080  bestBid price/size, bestAsk price: null
            0000000000000080 0000000000000080 0000000000000080  bestAsk size, relativeSpread, bestBidApi price: null
            0000000000000080 0000000000000080 0000000000000080  bestBidApi size, bestAskApi price/size: null
            1000 0100 80007de6d1030000 a086010000000000        bids: 16-byte entries, 1: 42000.5, 0.001
            1000 0000                                          asks: 16-byte entries, none
            0c 4254432d5553442d50455250                        varString8: 12, "BTC-USD-PERP"

        (laid out from the schema's offsets with its own example values, 42000.50 and 0.001; no
        capture of the binary feed was available to us: tests/venues/test_venue_paradex.py decodes it).
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                event = sbe.decode(data)
            except sbe.SbeError as exc:
                self.event_all(ts_local, "error", f"malformed frame (SBE {exc}): {bytes(data[:64]).hex()}")
                return None
            if event is None:
                self.skipped_templates[sbe.read_header(data).template_id] += 1
            return event
        try:
            return decode_json(data)
        except (ProtocolError, orjson.JSONDecodeError) as exc:
            self.event_all(ts_local, "error", f"malformed frame ({exc}): {quote(data)}"[:500])
            return None

    def handle(self, msg: dict | sbe.TradeEvent | sbe.BookEvent, ts_local: int) -> list[Action]:
        if isinstance(msg, sbe.BookEvent):
            return self._on_book(msg.market, ts_local, msg.ts_us * US, msg.seq, msg.pkg_type == sbe.SNAPSHOT,
                                 levels(msg.bids), levels(msg.asks))
        if isinstance(msg, sbe.TradeEvent):
            if msg.market in self.states:
                self._trade(msg.market, ts_local, msg.created_at_us * US, str(msg.trade_id), msg.price / sbe.SCALE,
                            msg.size / sbe.SCALE, TAKER_SIDES.get(msg.side, 0), msg.trade_type_name)
            return []
        if "result" in msg or "error" in msg:
            self.acknowledged(msg.get("id"), ts_local, str(msg["error"]) if "error" in msg else None)
        elif msg.get("method") == "subscription":
            channel, data = msg["params"]["channel"], msg["params"]["data"]
            if channel.startswith("order_book."):
                return self._on_json_book(data, ts_local)
            if channel.startswith("trades."):
                self._on_json_trade(data, ts_local)
        return []

    def _trade(self, symbol: str, ts_local: int, ts_exchange: int, trade_id: str, price: float, size: float,
               side: int, trade_type: str) -> None:
        """One trade, once; its type reaches a sink that takes ``trade_type``."""
        if not self.typed_trades:
            self.trade_row(symbol, ts_local, ts_exchange, trade_id, price, size, side)
        elif self.recent_trades[symbol].first_time(trade_id):
            self.market_rows += 1
            self.sink.trade(symbol, ts_local, ts_exchange, trade_id, price, size, side, trade_type=trade_type)
        else:
            self.duplicate_trades += 1

    def _on_book(self, symbol: str, ts_local: int, ts_exchange: int, seq: int, snapshot: bool,
                 bids: list, asks: list) -> list[Action]:
        st = self.states.get(symbol)
        if st is None:
            return []
        actions = self.sequence(symbol, st, ts_local, snapshot=snapshot, seq=seq,
                                chained=st.last_seq is not None and seq == st.last_seq + 1, bids=bids, asks=asks)
        if actions is not None:
            return actions
        return self.write_book(symbol, st, ts_local, ts_exchange, seq)

    # -- JSON payloads of before SBE ---------------------------------------------------------
    def _on_json_trade(self, t: dict | list, ts_local: int) -> None:
        for trade in t if isinstance(t, list) else [t]:
            if trade["market"] in self.states:
                self._trade(trade["market"], ts_local, int(trade["created_at"]) * MS, str(trade["id"]),
                            float(trade["price"]), float(trade["size"]), 1 if trade["side"] == "BUY" else -1,
                            str(trade.get("trade_type") or "FILL"))

    def _on_json_book(self, d: dict, ts_local: int) -> list[Action]:
        changes = [(lv, "0") for lv in d.get("deletes", [])] + \
                  [(lv, lv["size"]) for lv in d.get("inserts", []) + d.get("updates", [])]
        bids = [(lv["price"], size) for lv, size in changes if lv["side"] == "BUY"]
        asks = [(lv["price"], size) for lv, size in changes if lv["side"] != "BUY"]
        return self._on_book(d["market"], ts_local, int(d["last_updated_at"]) * MS, int(d["seq_no"]),
                             d["update_type"] == "s", bids, asks)


class ParadexSimServer(SimulatedVenue):
    """Synthetic Paradex market: SBE binary data frames (default) or the JSON payloads of before
    SBE (``paradex_payloads: json``, to replay the old shapes); snapshot then deltas, seq + 1.

    In SBE mode a socket must negotiate ``sbeSchemaId=1`` and ``sbeSchemaVersion`` 0 or 1 (else
    HTTP 400, as Paradex); ``malformed`` sends a truncated BookEvent; every 10th trade id is a
    LIQUIDATION (``trade_types``)."""

    ws_paths = (PATH,)

    op_key, bad_request = "method", '{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}'

    def __init__(self, symbols: list[str], sim_cfg: dict, depth: int) -> None:
        super().__init__(symbols, sim_cfg, depth)
        self.payloads = str(sim_cfg.get("paradex_payloads") or "sbe")
        if self.payloads not in PAYLOADS:
            raise ValueError(f"paradex_payloads: {self.payloads!r} (allowed: {', '.join(PAYLOADS)})")
        self.binary = self.payloads == "sbe"
        #: trade id -> its FillType name, for every trade generated
        self.trade_types: dict[int, str] = {}

    async def _process_request(self, connection, request):
        url = urlsplit(request.path)
        if self.binary and request.headers.get("Upgrade", "").lower() == "websocket" and url.path.startswith(PATH):
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if query.get("sbeSchemaId") != str(sbe.SCHEMA_ID) or query.get("sbeSchemaVersion") not in ("0", "1"):
                return connection.respond(HTTPStatus.BAD_REQUEST, f"unsupported SBE schema {query or 'none'}: "
                                                                  f"connect with ?{sbe.NEGOTIATION}\n")
        return await super()._process_request(connection, request)

    def known(self, channel: str) -> bool:
        parts = channel.split(".")
        if len(parts) < 2 or parts[0] not in ("order_book", "trades") or parts[1] not in self.symbols:
            return False
        # the binary socket serves only the bare deltas book channel
        return not self.binary or parts[0] == "trades" or channel == f"order_book.{parts[1]}.deltas"

    async def on_request(self, session: Session, method: str, req: dict) -> None:
        req_id, params = req.get("id"), req.get("params")
        channel = str(params.get("channel", "")) if isinstance(params, dict) else ""
        if (method == "subscribe" and self.known(channel) and channel not in session.streams) or \
                (method == "unsubscribe" and channel in session.streams):
            await self.send(session, orjson.dumps({"jsonrpc": "2.0", "result": {"channel": channel},
                                                   "usIn": time.time_ns() // 1000, "usDiff": 10, "id": req_id}).decode())
            await self.change_subscriptions(session, method, [channel])
        else:
            await self.send(session, orjson.dumps({"jsonrpc": "2.0", "error": {
                "code": -32600, "message": f"cannot {method} {channel}"}, "id": req_id}).decode())

    def _message(self, channel: str, data: dict) -> str:
        return orjson.dumps({"jsonrpc": "2.0", "method": "subscription",
                             "params": {"channel": channel, "data": data}}).decode()

    def _book(self, s: SimSymbol, seq: int, pkg_type: int, bids: list, asks: list, now_ms: int) -> bytes:
        def pairs(side):
            return [(sbe.mantissa(p), sbe.mantissa(q)) for p, q in side]
        return sbe.encode_book(sbe.BookEvent(now_ms * 1000, seq, pkg_type, pairs(bids), pairs(asks), s.symbol))

    async def on_subscribe(self, session: Session, channel: str) -> None:
        kind, sym = channel.split(".")[:2]
        if kind != "order_book":
            return
        s = self.symbols[sym]
        self.first_seq(s, 1)
        bids, asks = s.market.snapshot(1000)
        now_ms = int(time.time() * 1000)
        if self.binary:     # a snapshot carries the current seq; the next delta is seq + 1
            await self.send_data(session, self._book(s, s.last_u, sbe.SNAPSHOT, bids, asks, now_ms))
            return
        levels = [{"side": "BUY", "price": p, "size": q} for p, q in bids] + \
                 [{"side": "SELL", "price": p, "size": q} for p, q in asks]
        await self.send_data(session, self._message(channel, {
            "seq_no": s.last_u, "market": s.symbol, "last_updated_at": now_ms,
            "update_type": "s", "inserts": levels, "updates": [], "deletes": []}))

    def trade_message(self, s: SimSymbol, t: SimTrade, now_ms: int) -> tuple[str, str | bytes]:
        channel = f"trades.{s.symbol}"
        kind = self.trade_types[t.trade_id] = "LIQUIDATION" if t.trade_id % 10 == 0 else "FILL"
        if self.binary:
            return channel, sbe.encode_trade(sbe.TradeEvent(
                now_ms * 1000, t.trade_id, t.trade_id, sbe.BUY if t.side > 0 else sbe.SELL, sbe.mantissa(t.price_str),
                sbe.mantissa(t.size_str), now_ms * 1000, sbe.FILL_TYPE_IDS[kind], s.symbol))
        return channel, self._message(channel, {"id": str(t.trade_id), "market": s.symbol,
                                                "side": "BUY" if t.side > 0 else "SELL", "size": t.size_str,
                                                "price": t.price_str, "created_at": now_ms, "trade_type": kind})

    async def send_book(self, s: SimSymbol, step: Step, now_ms: int) -> None:
        s.last_u = (s.last_u or 1) + 1
        self.record_book(s, s.last_u)
        if self.take_skip(s):
            return
        final = {(c.side, c.price): c.size for c in step.changes}   # last change per level wins
        channel = f"order_book.{s.symbol}.deltas"
        if self.binary:
            bids = [(px, sz) for (sd, px), sz in final.items() if sd == BID]
            asks = [(px, sz) for (sd, px), sz in final.items() if sd != BID]
            await self.push(channel, self._book(s, s.last_u, sbe.DELTA, bids, asks, now_ms))
            return
        side = {BID: "BUY"}
        updates = [{"side": side.get(sd, "SELL"), "price": px, "size": sz} for (sd, px), sz in final.items() if float(sz) > 0]
        deletes = [{"side": side.get(sd, "SELL"), "price": px, "size": "0"} for (sd, px), sz in final.items() if float(sz) == 0]
        await self.push(channel, self._message(channel, {
            "seq_no": s.last_u, "market": s.symbol, "last_updated_at": now_ms, "update_type": "d",
            "inserts": [], "updates": updates, "deletes": deletes}))

    async def malformed(self) -> None:
        if not self.binary:
            return await super().malformed()
        for session in list(self.sessions):
            s = next(iter(self.symbols.values()))
            frame = self._book(s, 0, sbe.DELTA, [("1.0", "1.0")] * 3, [], int(time.time() * 1000))
            await self.send(session, frame[:-20])      # cut inside the bids group


class Paradex(Venue):
    """Paradex perps (docs/protocols/paradex.md). Symbols like BTC-USD-PERP."""

    name = "paradex"
    # Paradex pings every 55 s and websockets answers
    connections = Connections("wss://ws.api.prod.paradex.trade", "https://api.prod.paradex.trade",
                              params_per_request=1)
    routes = {"ws": f"{PATH}?{sbe.NEGOTIATION}"}
    streams = {"l2book": "order_book.{symbol}.deltas", "trades": "trades.{symbol}"}
    seq_name = "seq"
    symbol_pattern, symbol_kind = r"(?=.*-)[^a-z]+", "Paradex market (e.g. BTC-USD-PERP)"
    Client, SimServer = ParadexClient, ParadexSimServer

    def allowed_depths(self, settings: VenueSettings) -> tuple[range, str]:
        return range(1, 1001), "full-depth deltas"

    def request_frame(self, op: str, params: list, req_id: int) -> str:
        return orjson.dumps({"jsonrpc": "2.0", "method": op, "params": {"channel": params[0]}, "id": req_id}).decode()


VENUE = Paradex()
