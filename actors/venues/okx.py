"""OKX v5 public: client, simulator and replay server (``../shared/protocols.md`` §5).

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
* One l2book row per applied message, ``seq = seqId`` (null in old data), ``ts_exchange = ts``.
  Sizes are contracts for SWAP/FUTURES; with ``ct_val: {instId: value}`` they are converted.
* ``trades``: ``side`` is the taker side; ``tradeId`` string; ``ts`` fill time.
* Text ``ping`` every 20 s (OKX closes sockets idle for 30 s); a ``notice`` (64008, planned
  upgrade) triggers a reconnect.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import orjson

from actors.feed.book import ASK, BID, OrderBook
from actors.venues.sim.recordings import first_lines, read_recording
from actors.feed.records import RowSink
from actors.venues.sim.market import SimSymbol
from actors.errors import ConfigError
from actors.venues.base import Action, ConnectionPlan, Endpoints, Reconnect, Send, VenueClient
from actors.venues.sim.server import ReplayVenue, Session, SimulatedVenue, VenueServer

NAME = "okx"
MARKET = "perp"
MS = 1_000_000
ARGS_PER_REQUEST = 20
CHECKSUM_LEVELS = 25


def validate(venue_cfg: dict, symbols: list[str], channels: list[str], depth: int) -> None:
    channel = venue_cfg.get("book_channel", "books")
    limit = 5 if channel == "books5" else 400
    if channel not in ("books", "books5"):
        raise ConfigError(f"venues.okx.book_channel: {channel!r} (allowed: books, books5)")
    if depth < 1 or depth > limit:
        raise ConfigError(f"depth: {depth} is not supported by okx {channel} (allowed: 1..{limit})")
    for sym in symbols:
        if sym.upper() != sym or " " in sym or "-" not in sym:
            raise ConfigError(f"archive.okx: {sym!r} is not an OKX instId (e.g. BTC-USDT-SWAP)")


def plan_connections(venue_cfg: dict, endpoints: Endpoints, symbols: list[str], channels: list[str],
                     depth: int) -> list[ConnectionPlan]:
    """Sockets of at most ``max_instruments_per_connection`` instruments on ``/ws/v5/public``."""
    per_conn = int(venue_cfg.get("max_instruments_per_connection", 30))
    book_channel = venue_cfg.get("book_channel", "books")
    plans = []
    for i in range(0, len(symbols), per_conn):
        chunk = symbols[i:i + per_conn]
        args = [{"channel": c, "instId": s} for s in chunk
                for c in ([book_channel] if "l2book" in channels else []) + (["trades"] if "trades" in channels else [])]
        frames = [orjson.dumps({"id": str(j // ARGS_PER_REQUEST + 1), "op": "subscribe",
                                "args": args[j:j + ARGS_PER_REQUEST]}).decode()
                  for j in range(0, len(args), ARGS_PER_REQUEST)]
        plans.append(ConnectionPlan(name=f"public-{i // per_conn}", url=f"{endpoints.ws_base}/ws/v5/public",
                                    symbols=list(chunk), channels=list(channels), subscribe_frames=frames))
    return plans


def make_client(plan: ConnectionPlan, venue_cfg: dict, sink: RowSink, depth: int) -> "OkxClient":
    return OkxClient(plan, venue_cfg, sink, depth)


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


@dataclass
class _BookState:
    book: StringBook = field(default_factory=StringBook)
    synced: bool = False
    last_seq: int | None = None
    synced_once: bool = False


class OkxClient(VenueClient):
    """Protocol state of one OKX public socket (see module docstring)."""

    def __init__(self, plan: ConnectionPlan, venue_cfg: dict, sink: RowSink, depth: int) -> None:
        self.plan, self.sink, self.depth = plan, sink, depth
        self.heartbeat_s = float(venue_cfg.get("ping_s", 20))
        self.symbols = list(plan.symbols)
        self.book_channel = venue_cfg.get("book_channel", "books")
        self.ct_val = {k: float(v) for k, v in (venue_cfg.get("ct_val") or {}).items()}
        self.states = {s: _BookState() for s in self.symbols}
        self.checksums_verified = 0

    def heartbeat_frame(self) -> str | None:
        return "ping"

    def on_connect(self, ts_local: int) -> list[Action]:
        self.event_all(ts_local, "connect", self.plan.url)
        for sym in self.symbols:
            self.states[sym] = _BookState()
        return [Send(frame) for frame in self.plan.subscribe_frames]

    def on_disconnect(self, ts_local: int, reason: str) -> None:
        self.event_all(ts_local, "disconnect", reason)
        for sym in self.symbols:
            self.states[sym] = _BookState()

    def on_frame(self, data: str | bytes, ts_local: int) -> list[Action]:
        if data == "pong" or data == b"pong":
            return []
        msg = self.decode(data, ts_local)
        if msg is None:
            return []
        try:
            event = msg.get("event")
            if event is not None:
                return self._on_event(msg, ts_local)
            arg = msg.get("arg") or {}
            sym = arg.get("instId")
            if sym not in self.states:
                return []
            if arg.get("channel") == "trades":
                self._on_trades(sym, msg["data"], ts_local)
            elif arg.get("channel") == self.book_channel:
                return self._on_book(sym, msg, ts_local)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self.event_all(ts_local, "error", f"unexpected frame ({type(exc).__name__}: {exc})")
        return []

    def _on_event(self, msg: dict, ts_local: int) -> list[Action]:
        event, arg = msg["event"], msg.get("arg") or {}
        sym = arg.get("instId")
        if event == "subscribe" and sym in self.states:
            channel = "trades" if arg.get("channel") == "trades" else "l2book"
            self.sink.event(sym, ts_local, channel, "subscribed", orjson.dumps(arg).decode())
        elif event == "error":
            self.event_all(ts_local, "error", f"venue error {msg.get('code')}: {msg.get('msg')}")
        elif event == "notice":
            self.event_all(ts_local, "error", f"venue notice {msg.get('code')}: {msg.get('msg')}")
            return [Reconnect(f"venue notice {msg.get('code')}")]
        return []

    def _on_trades(self, sym: str, trades: list, ts_local: int) -> None:
        scale = self.ct_val.get(sym, 1.0)
        for t in trades:
            self.sink.trade(sym, ts_local, int(t["ts"]) * MS, str(t["tradeId"]), float(t["px"]),
                            float(t["sz"]) * scale, 1 if t["side"] == "buy" else -1)

    def _on_book(self, sym: str, msg: dict, ts_local: int) -> list[Action]:
        st = self.states[sym]
        d = msg["data"][0]
        seq, prev = d.get("seqId"), d.get("prevSeqId")
        snapshot = msg.get("action") == "snapshot" or self.book_channel == "books5"
        if snapshot:
            st.book.clear()
            st.book.apply_levels(d["bids"], d["asks"])
            if not st.synced:
                self.sink.event(sym, ts_local, "l2book", "resync" if st.synced_once else "snapshot",
                                f"seqId {seq}", seq, seq)
            st.synced = st.synced_once = True
        elif not st.synced:
            return []
        else:
            if seq is not None and st.last_seq is not None:
                heartbeat = prev == seq and not d["bids"] and not d["asks"]
                reset = seq < prev
                if prev != st.last_seq and not reset and not heartbeat:
                    self.sink.event(sym, ts_local, "l2book", "gap", f"prevSeqId {prev} != previous seqId {st.last_seq}",
                                    st.last_seq, seq)
                    return self._resubscribe(sym, st, msg["arg"])
            st.book.apply_levels(d["bids"], d["asks"])
        st.last_seq = seq
        expected = d.get("checksum")
        if expected:
            got = checksum(*st.book.top_strings(CHECKSUM_LEVELS))
            if got != expected:
                self.sink.event(sym, ts_local, "l2book", "gap", f"checksum {got} != {expected}", st.last_seq, seq)
                return self._resubscribe(sym, st, msg["arg"])
            self.checksums_verified += 1
        if st.book.crossed():
            self.sink.event(sym, ts_local, "l2book", "crossed",
                            f"best bid {st.book.best_bid()} >= best ask {st.book.best_ask()}", seq, seq)
            return self._resubscribe(sym, st, msg["arg"])
        bid_px, bid_sz, ask_px, ask_sz = st.book.top(self.depth)
        scale = self.ct_val.get(sym)
        if scale:
            bid_sz, ask_sz = [s * scale for s in bid_sz], [s * scale for s in ask_sz]
        self.sink.book(sym, ts_local, int(d["ts"]) * MS, seq, bid_px, bid_sz, ask_px, ask_sz)
        return []

    def _resubscribe(self, sym: str, st: _BookState, arg: dict) -> list[Action]:
        st.synced = False
        st.book.clear()
        return [Send(orjson.dumps({"op": "unsubscribe", "args": [arg]}).decode()),
                Send(orjson.dumps({"op": "subscribe", "args": [arg]}).decode())]


# ----------------------------------------------------------------------------- server side
class _OkxServerBase(VenueServer):
    ws_paths = ("/ws/v5/public",)

    async def on_message(self, session: Session, message: str | bytes) -> None:
        if message == "ping":
            await self.send(session, "pong")
            return
        try:
            req = orjson.loads(message)
            op, args = req["op"], list(req.get("args") or [])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await self.send(session, '{"event":"error","code":"60012","msg":"Invalid request","connId":"sim"}')
            return
        for arg in args:
            key = f"{arg.get('channel')}:{arg.get('instId')}"
            if op == "subscribe":
                if not self.known(arg):
                    await self.send(session, orjson.dumps({"event": "error", "code": "60018",
                                                           "msg": f"Wrong URL or channel:{arg.get('channel')},instId:"
                                                                  f"{arg.get('instId')} doesn't exist",
                                                           "connId": "sim"}).decode())
                    continue
                await self.send(session, orjson.dumps({"event": "subscribe", "arg": arg, "connId": "sim"}).decode())
                session.streams.add(key)
                await self.on_subscribe(session, arg)
            elif op == "unsubscribe":
                session.streams.discard(key)
                await self.send(session, orjson.dumps({"event": "unsubscribe", "arg": arg, "connId": "sim"}).decode())

    def known(self, arg: dict) -> bool:
        return True

    async def on_subscribe(self, session: Session, arg: dict) -> None:
        """A session subscribed (the simulator sends the book snapshot here)."""


class OkxSimServer(SimulatedVenue, _OkxServerBase):
    """Synthetic OKX market: ``books`` snapshot on subscribe, updates with seq ids and CRC32 checksums."""

    def known(self, arg: dict) -> bool:
        return arg.get("channel") in ("books", "trades") and arg.get("instId") in self.symbols

    def _book_message(self, s: SimSymbol, action: str, bids, asks, prev: int) -> str:
        top_b, top_a = s.market.snapshot(CHECKSUM_LEVELS)
        return orjson.dumps({"arg": {"channel": "books", "instId": s.symbol}, "action": action, "data": [{
            "asks": [[p, q, "0", "1"] for p, q in asks], "bids": [[p, q, "0", "1"] for p, q in bids],
            "ts": str(int(time.time() * 1000)), "checksum": checksum(top_b, top_a),
            "prevSeqId": prev, "seqId": s.last_u}]}).decode()

    async def on_subscribe(self, session: Session, arg: dict) -> None:
        if arg.get("channel") != "books":
            return
        s = self.symbols[arg["instId"]]
        if not s.last_u:
            s.last_u = 1000
            self.record_book(s, s.last_u)
        bids, asks = s.market.snapshot(400)
        await self.send(session, self._book_message(s, "snapshot", bids, asks, -1))

    async def step(self, s: SimSymbol) -> int:
        step = s.market.step()
        sent = 0
        if step.trade is not None:
            t = step.trade
            payload = orjson.dumps({"arg": {"channel": "trades", "instId": s.symbol}, "data": [{
                "instId": s.symbol, "tradeId": str(t.trade_id), "px": t.price_str, "sz": t.size_str,
                "side": "buy" if t.side > 0 else "sell", "ts": str(int(time.time() * 1000))}]}).decode()
            self.record_trade(s, t, await self._push(f"trades:{s.symbol}", payload))
            sent += 1
        prev = s.last_u or 1000
        s.last_u = prev + 1 + s.market.rng.randrange(5)       # OKX seq steps are arbitrary
        self.record_book(s, s.last_u)
        if not self.take_skip(s):
            bids = [[c.price, c.size] for c in step.changes if c.side == BID]
            asks = [[c.price, c.size] for c in step.changes if c.side == ASK]
            await self._push(f"books:{s.symbol}", self._book_message(s, "update", bids, asks, prev))
        return sent + 1

    async def _push(self, key: str, payload: str) -> int:
        reached = 0
        for session in list(self.sessions):
            if key in session.streams and await self.send(session, payload):
                reached += 1
        return reached


def make_sim_server(symbols: list[str], sim_cfg: dict, depth: int) -> OkxSimServer:
    return OkxSimServer(symbols, sim_cfg, depth)


# ----------------------------------------------------------------------------- replay
def recording_matches(path: str) -> bool:
    if not str(path).endswith(".jsonl.zst"):
        return False
    return any("okx.com" in line or '"arg":{"channel"' in line or '\\"arg\\":{\\"channel' in line
               for line in first_lines(path, 40))


def _key(payload: str) -> str | None:
    if not payload.startswith('{"arg":'):
        return None
    arg = orjson.loads(payload)["arg"]
    return f"{arg.get('channel')}:{arg.get('instId')}"


def recording_symbols(path: str) -> set[str]:
    out = set()
    for rec in read_recording(path):
        key = _key(rec.payload) if rec.kind == "recv" else None
        if key and key.split(":")[0] in ("books", "books5", "trades"):
            out.add(key.split(":", 1)[1])
    return out


def replay_venue_cfg(venue_cfg: dict, path: str) -> dict:
    return dict(venue_cfg)


class OkxReplayServer(ReplayVenue, _OkxServerBase):
    """Serves a cryptofeed OKX capture back to the sessions subscribed to each (channel, instId)."""

    def stream_of(self, rec) -> str | None:
        if rec.kind != "recv":
            return None
        key = _key(rec.payload)
        return key if key and key.split(":", 1)[1] in self.symbols else None

    async def on_subscribe(self, session: Session, arg: dict) -> None:
        self.subscribed.set()


def make_replay_server(path: str, speed: float, symbols: list[str]) -> OkxReplayServer:
    return OkxReplayServer(path, speed, symbols)
