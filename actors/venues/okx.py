"""OKX v5 public: client, simulator and replay server (``docs/protocols/okx.md``).

Client (:class:`OkxClient`):

* ``books`` (400 levels: snapshot, then updates) or ``books5`` (5-level snapshots) per
  ``book_channel``. Updates chain by ``prevSeqId == previous seqId`` with the two documented
  exceptions (an empty heartbeat with ``prevSeqId == seqId``, and a reset where
  ``seqId < prevSeqId``). Any other break: ``gap`` event and resubscribe (fresh snapshot,
  ``resync`` event). Older data has no seq ids; there the CRC32 ``checksum`` is the proof.
* The CRC32 checksum (first 25 bids and asks interleaved as ``px:sz`` with the exact strings
  sent, signed 32-bit) is verified whenever it is non-zero (pre-2026 data, the simulator); a
  mismatch is a ``gap`` event (detail "checksum") and a resubscribe, and the row is not written.
  Since 2026-06-23 OKX sends 0 and only the seq chain applies.
* ``derivatives``: ``mark-price``, ``funding-rate`` and ``open-interest`` per instId, merged into
  one row per change (``liquidation-orders`` is subscribed per instType, not per instrument: not
  archived yet).
* One l2book row per applied message, ``seq = seqId`` (null in old data), ``ts_exchange = ts``.
  Sizes are contracts for SWAP/FUTURES; with ``ct_val: {instId: value}`` they are converted.
* ``trades``: ``side`` is the taker side; ``tradeId`` string; ``ts`` fill time.
* Text ``ping`` every 20 s (OKX closes sockets idle for 30 s); a ``notice`` (64008, planned
  upgrade) triggers a reconnect.

Markets: spot, swaps and futures share one socket and one protocol (instIds name them). A bare
instId is archived under ``perp/`` as it always was; ``spot/BTC-USDT`` (or ``futures/BTC-USD-220527``)
archives it under that market's folder.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import orjson

from actors.feed.book import ASK, BID, OrderBook
from actors.venues.base import MS, Action, BookState, Connections, Reconnect, Venue, VenueClient
from actors.venues.settings import VenueSettings, choice
from actors.venues.sim.market import SimSymbol, SimTrade, Step
from actors.venues.sim.recordings import read_recording
from actors.venues.sim.server import ReplayVenue, Session, SimulatedVenue, VenueServer

CHECKSUM_LEVELS = 25
PATH = "/ws/v5/public"


@dataclass(frozen=True)
class OkxSettings(VenueSettings):
    book_channel: str = choice("books", "books", "books5")   # books: 400 levels, seq chain; books5: snapshots
    ct_val: dict[str, float] = field(default_factory=dict)    # instId -> contract value (sizes in coin)


def key_of(arg: dict) -> str:
    """A channel argument as its stream key, e.g. ``books:BTC-USDT-SWAP``."""
    return f"{arg.get('channel')}:{arg.get('instId')}"


def checksum(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    """OKX's CRC32 of the top 25 levels (strings as sent), as a signed 32-bit int."""
    parts = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts.append(f"{bids[i][0]}:{bids[i][1]}")
        if i < len(asks):
            parts.append(f"{asks[i][0]}:{asks[i][1]}")
    value = zlib.crc32(":".join(parts).encode())
    return value - (1 << 32) if value >= 1 << 31 else value


class StringBook(OrderBook):
    """An order book that also remembers each level's price and size strings (for checksums)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: dict[str, dict[float, tuple[str, str]]] = {BID: {}, ASK: {}}

    def apply_levels(self, bids, asks) -> None:
        for side, levels in ((BID, bids), (ASK, asks)):
            raw = self.raw[side]
            for px, sz, *_ in levels:
                price, size = float(px), float(sz)
                self.apply(side, price, size)
                if size == 0.0:
                    raw.pop(price, None)
                else:
                    raw[price] = (px, sz)

    def clear(self) -> None:
        super().clear()
        self.raw = {BID: {}, ASK: {}}

    def top_strings(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bid_px, _, ask_px, _ = self.top(n)
        return [self.raw[BID][p] for p in bid_px], [self.raw[ASK][p] for p in ask_px]


DERIVATIVE_CHANNELS = ("mark-price", "funding-rate", "open-interest")


def _number(text: str | None) -> float | None:
    """An OKX decimal string as a float; absent or ``""`` is None."""
    return float(text) if text not in (None, "") else None


class OkxClient(VenueClient):
    """Protocol state of one OKX public socket (see module docstring)."""

    settings: OkxSettings
    book_type = StringBook

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.checksums_verified = 0

    def handle(self, msg: dict, ts_local: int) -> list[Action]:
        if msg.get("event") is not None:
            return self._on_event(msg, ts_local)
        arg = msg.get("arg") or {}
        sym = arg.get("instId")
        if sym not in self.states:
            return []
        if arg.get("channel") == "trades":
            self._on_trades(sym, msg["data"], ts_local)
        elif arg.get("channel") in DERIVATIVE_CHANNELS:
            self._on_derivatives(sym, arg["channel"], msg["data"], ts_local)
        elif arg.get("channel") == self.settings.book_channel:
            return self._on_book(sym, msg, ts_local)
        return []

    def _on_event(self, msg: dict, ts_local: int) -> list[Action]:
        event = msg["event"]
        if event == "subscribe":
            self.acknowledged(key_of(msg.get("arg") or {}), ts_local)
        elif event == "error":
            self.event_all(ts_local, "error", f"venue error {msg.get('code')}: {msg.get('msg')}")
        elif event == "notice":
            self.event_all(ts_local, "error", f"venue notice {msg.get('code')}: {msg.get('msg')}")
            return [Reconnect(f"venue notice {msg.get('code')}")]
        return []

    def _on_trades(self, sym: str, trades: list, ts_local: int) -> None:
        """The ``data`` of a ``trades`` message as trades rows. A real one (``tests/fixtures/real/okx``, 2022-05-13)::

            {"arg":{"channel":"trades","instId":"BTC-USD-220527"},"data":[{"instId":"BTC-USD-220527",
             "tradeId":"7849","px":"30218.8","sz":"1","side":"buy","ts":"1652459199958"}]}

        ``side`` is the taker's; ``sz`` is in contracts for a future (``ct_val`` converts).
        """
        scale = self.settings.ct_val.get(sym, 1.0)
        for t in trades:
            self.trade_row(sym, ts_local, int(t["ts"]) * MS, str(t["tradeId"]), float(t["px"]),
                           float(t["sz"]) * scale, 1 if t["side"] == "buy" else -1)

    def _on_derivatives(self, sym: str, channel: str, data: list, ts_local: int) -> None:
        """``mark-price`` ``{"instId","instType","markPx","ts"}``, ``open-interest`` ``{"oi","oiCcy","ts"}``
        (``oiCcy``: in the base currency, as our sizes; else ``oi`` contracts x ``ct_val``) and
        ``funding-rate`` ``{"fundingRate","nextFundingRate","fundingTime" (the coming settlement),"ts"}``,
        each merged into the symbol's values (one row per change)."""
        for d in data:
            ts = int(d["ts"]) * MS if d.get("ts") else None
            if channel == "mark-price":
                self.derivative_row(sym, ts_local, ts, mark_price=_number(d.get("markPx")))
            elif channel == "open-interest":
                oi = _number(d.get("oiCcy"))
                if oi is None and _number(d.get("oi")) is not None:
                    oi = float(d["oi"]) * self.settings.ct_val.get(sym, 1.0)
                self.derivative_row(sym, ts_local, ts, open_interest=oi)
            else:
                self.derivative_row(sym, ts_local, ts, funding_rate=_number(d.get("fundingRate")),
                                    predicted_funding_rate=_number(d.get("nextFundingRate")),
                                    next_funding_time=int(d["fundingTime"]) * MS if d.get("fundingTime") else None)

    def _on_book(self, sym: str, msg: dict, ts_local: int) -> list[Action]:
        """A ``books`` snapshot or update (or a ``books5`` snapshot). A real update, whole
        (``tests/fixtures/real/okx``, 2022-05-13: before seq ids, so the CRC32 is the proof)::

            {"arg":{"channel":"books","instId":"BTC-USD-220527"},"action":"update","data":[{
             "asks":[["30249.4","0","0","0"],["30261","4","0","1"],["30310.3","19","0","1"]],
             "bids":[["30182.6","452","0","1"]],"ts":"1652459225464","checksum":-914047754}]}

        A level is ``[price, size, "0", orders]``, size ``"0"`` deletes; since 2026 ``seqId`` and
        ``prevSeqId`` chain the updates and ``checksum`` is 0.
        """
        st = self.states[sym]
        d = msg["data"][0]
        seq, prev = d.get("seqId"), d.get("prevSeqId")
        snapshot = msg.get("action") == "snapshot" or self.settings.book_channel == "books5"
        actions = self.sequence(sym, st, ts_local, snapshot=snapshot, seq=seq, chained=self._chained(st, seq, prev, d),
                                bids=d["bids"], asks=d["asks"], prev=prev)
        if actions is not None:
            return actions
        expected = d.get("checksum")
        if expected:
            got = checksum(*st.book.top_strings(CHECKSUM_LEVELS))  # type: ignore[attr-defined]
            if got != expected:
                self.gap(sym, st, ts_local, seq, detail=f"checksum {got} != {expected}")
                return self.resubscribe(sym)
            self.checksums_verified += 1
        return self.write_book(sym, st, ts_local, int(d["ts"]) * MS, seq)

    @staticmethod
    def _chained(st: BookState, seq: int | None, prev: int | None, d: dict) -> bool:
        """``prevSeqId`` follows the last ``seqId``, or one of the two documented exceptions."""
        if seq is None or st.last_seq is None or prev == st.last_seq:
            return True
        heartbeat = prev == seq and not d["bids"] and not d["asks"]
        return heartbeat or seq < prev

    def top(self, symbol: str, st: BookState) -> tuple[list[float], list[float], list[float], list[float]]:
        bid_px, bid_sz, ask_px, ask_sz = st.book.top(self.depth)
        scale = self.settings.ct_val.get(symbol)
        if scale:
            bid_sz, ask_sz = [s * scale for s in bid_sz], [s * scale for s in ask_sz]
        return bid_px, bid_sz, ask_px, ask_sz


# ----------------------------------------------------------------------------- server side
class OkxServer(VenueServer):
    ws_paths = (PATH,)
    bad_request = '{"event":"error","code":"60012","msg":"Invalid request","connId":"sim"}'

    async def on_message(self, session: Session, message: str | bytes) -> None:
        if message == "ping":
            await self.send(session, "pong")
            return
        await super().on_message(session, message)

    async def on_request(self, session: Session, op: str, req: dict) -> None:
        for arg in req.get("args") or []:
            if op == "subscribe" and not self.known(key_of(arg)):
                await self.send(session, orjson.dumps({"event": "error", "code": "60018",
                                                       "msg": f"Wrong URL or channel:{arg.get('channel')},instId:"
                                                              f"{arg.get('instId')} doesn't exist",
                                                       "connId": "sim"}).decode())
            elif op in ("subscribe", "unsubscribe"):
                await self.send(session, orjson.dumps({"event": op, "arg": arg, "connId": "sim"}).decode())
                await self.change_subscriptions(session, op, [key_of(arg)])


class OkxSimServer(SimulatedVenue, OkxServer):
    """Synthetic OKX market: ``books`` snapshot on subscribe, updates with seq ids and CRC32 checksums."""

    stream_kinds = ("books", "trades", *DERIVATIVE_CHANNELS)

    def _derivative_frame(self, s: SimSymbol, channel: str, now_ms: int) -> tuple[str, str]:
        v, ts = s.derivatives.values, str(now_ms)
        data = {"instId": s.symbol, "instType": "SWAP", "ts": ts}
        if channel == "mark-price":
            data["markPx"] = v["mark_price"]
        elif channel == "open-interest":
            data.update(oi=v["open_interest"], oiCcy=v["open_interest"])
        else:
            data.update(fundingRate=v["funding_rate"], nextFundingRate=v["predicted_funding_rate"],
                        fundingTime=v["next_funding_time"],
                        nextFundingTime=str(int(v["next_funding_time"]) + 8 * 3600 * 1000))
        return f"{channel}:{s.symbol}", orjson.dumps({"arg": {"channel": channel, "instId": s.symbol},
                                                      "data": [data]}).decode()

    def derivatives_message(self, s: SimSymbol, changed: dict[str, str], now_ms: int) -> list[tuple[str, str]]:
        """``mark-price`` every time; ``funding-rate`` and ``open-interest`` when theirs moved (and, like
        OKX, the current value to a new subscriber)."""
        channels = ["mark-price"] + (["funding-rate"] if {"funding_rate", "next_funding_time"} & set(changed) else []) \
            + (["open-interest"] if "open_interest" in changed else [])
        return [self._derivative_frame(s, channel, now_ms) for channel in channels]

    def _book_message(self, s: SimSymbol, action: str, bids, asks, prev: int) -> str:
        top_b, top_a = s.market.snapshot(CHECKSUM_LEVELS)
        return orjson.dumps({"arg": {"channel": "books", "instId": s.symbol}, "action": action, "data": [{
            "asks": [[p, q, "0", "1"] for p, q in asks], "bids": [[p, q, "0", "1"] for p, q in bids],
            "ts": str(self.clock_ms(s)), "checksum": checksum(top_b, top_a),
            "prevSeqId": prev, "seqId": s.last_u}]}).decode()

    async def on_subscribe(self, session: Session, key: str) -> None:
        channel, inst_id = key.split(":", 1)
        if channel in DERIVATIVE_CHANNELS:
            await self.send_data(session, self._derivative_frame(self.symbols[inst_id], channel,
                                                                 int(time.time() * 1000))[1])
            return
        if channel != "books":
            return
        s = self.symbols[inst_id]
        self.first_seq(s, 1000)
        await self.send_data(session, self._book_message(s, "snapshot", *s.market.snapshot(400), -1))

    async def restart_venue(self) -> None:
        """OKX maintenance (docs/protocols/okx.md, "Sequence rules"): each symbol's next update resets ``seqId`` below its
        ``prevSeqId`` (a new truth epoch); later updates chain normally; the sessions stay open."""
        for s in self.symbols.values():
            s.state["reset"] = True

    def trade_message(self, s: SimSymbol, t: SimTrade, now_ms: int) -> tuple[str, str]:
        return f"trades:{s.symbol}", orjson.dumps({"arg": {"channel": "trades", "instId": s.symbol}, "data": [{
            "instId": s.symbol, "tradeId": str(t.trade_id), "px": t.price_str, "sz": t.size_str,
            "side": "buy" if t.side > 0 else "sell", "ts": str(now_ms)}]}).decode()

    async def send_book(self, s: SimSymbol, step: Step, now_ms: int) -> None:
        prev = s.last_u or 1000
        if s.state.pop("reset", False):                       # venue_restart: seqId < prevSeqId
            self.new_epoch(s)
            s.last_u = 1 + s.market.rng.randrange(max(1, min(5, prev - 1)))
        else:
            s.last_u = prev + 1 + s.market.rng.randrange(5)   # OKX seq steps are arbitrary
        self.record_book(s, s.last_u)
        if not self.take_skip(s):
            await self.push(f"books:{s.symbol}", self._book_message(s, "update", *step.levels(), prev))


# ----------------------------------------------------------------------------- replay
def recorded_key(payload: str) -> str | None:
    """The stream key of a recorded frame (``books:BTC-USDT``), or None."""
    if not payload.startswith('{"arg":'):
        return None
    return key_of(orjson.loads(payload)["arg"])


class OkxReplayServer(ReplayVenue, OkxServer):
    """Serves a cryptofeed OKX capture back to the sessions subscribed to each (channel, instId)."""

    def stream_of(self, rec) -> str | None:
        key = recorded_key(rec.payload) if rec.kind == "recv" else None
        return key if key and key.split(":", 1)[1] in self.symbols else None


# ----------------------------------------------------------------------------- declaration
class Okx(Venue):
    """OKX v5 public (docs/protocols/okx.md). Symbols are instIds, e.g. BTC-USDT-SWAP."""

    name, Settings = "okx", OkxSettings
    # 60 = 30 instruments x (book + trades); text "ping" every 20 s: OKX closes sockets idle for 30 s
    connections = Connections("wss://ws.okx.com:8443", "https://www.okx.com", max_streams=60, params_per_request=20,
                              heartbeat_frame="ping", heartbeat_s=20.0, ignored_frames=("pong",),
                              acks_by_request=False)
    routes = {"public": PATH}
    streams = {"l2book": "{book_channel}:{symbol}", "trades": "trades:{symbol}",
               "derivatives": tuple(f"{channel}:{{symbol}}" for channel in DERIVATIVE_CHANNELS)}
    seq_name, prev_name = "seqId", "prevSeqId"
    symbol_pattern, symbol_kind = r"(?=.*-)[^\sa-z]+", "OKX instId (e.g. BTC-USDT-SWAP)"
    Client, SimServer, ReplayServer = OkxClient, OkxSimServer, OkxReplayServer
    recording_sniff = (".jsonl.zst", 40)        # cryptofeed captures
    markets = ("perp", "spot", "futures")      # one protocol: the market only names the archive folder

    def allowed_depths(self, settings: OkxSettings) -> tuple[range, str]:
        levels = 5 if settings.book_channel == "books5" else 400
        return range(1, levels + 1), f"{settings.book_channel} has {levels} levels"

    def subscriptions_of(self, settings: OkxSettings, symbol: str, channel: str, depth: int) -> list:
        """As every venue's, except that a spot instId (``BTC-USDT``: two parts) has no derivatives."""
        if channel == "derivatives" and symbol.split("/")[-1].count("-") < 2:
            return []
        return super().subscriptions_of(settings, symbol, channel, depth)

    def request_param(self, settings: OkxSettings, name: str) -> dict:
        channel, inst_id = name.split(":", 1)
        return {"channel": channel, "instId": inst_id}

    def request_frame(self, op: str, params: list, req_id: int) -> str:
        return orjson.dumps({"id": str(req_id), "op": op, "args": params}).decode()

    def recorded_line(self, line: str) -> bool:
        return "okx.com" in line or '"arg":{"channel"' in line or '\\"arg\\":{\\"channel' in line

    def recording_symbols(self, path: str) -> set[str]:
        out = set()
        for rec in read_recording(path):
            key = recorded_key(rec.payload) if rec.kind == "recv" else None
            if key and key.split(":")[0] in ("books", "books5", "trades"):
                out.add(key.split(":", 1)[1])
        return out


VENUE = Okx()
