"""A Binance USD-M load generator in its own process: real recorded frames, as fast as the socket takes them.

    python tests/bench/loadgen.py --symbols 4 --events 100000 [--tls DIR] [--frames real|small]
    (prints "PORT <n>" when ready)

The real recording (tests/fixtures/real/binance-usdm/btcusdt_20240808.gz) is turned into one
loop of events: every depth diff from the one that bridges the recorded REST snapshot on, and
every k-th trade so that there are 3 diffs to 1 trade (as ``aggTrade``). Each event is sent for
each of ``--symbols`` symbols (``S0USDT``, ``S1USDT``, ...), re-stamped with the symbol and
with ids shifted per loop so the ``U/u/pu`` chain never breaks; between loops one synthetic diff
turns the book at the loop's end back into the recorded snapshot. The REST depth snapshot
(``/fapi/v1/depth``) is the recorded one with the ids of the loop a symbol is in, so a client
that syncs by Binance's documented rules always has a true book, and
``/fapi/v1/exchangeInfo`` lists the symbols.

``--frames small`` serves small diffs instead (``build_small_loop``): 2 levels a side, drawn
from the recorded snapshot's own prices, mostly near the top, 3 diffs : 1 trade, on the same
recorded snapshot and with the same id rules (quiet symbols, Bybit and OKX deltas look like this).

Frames are pre-encoded (templates with the ids filled in) and written straight into the
socket's transport in batches, pausing while its buffer is full: the generator sends as fast
as the client reads. It sends exactly ``--events`` events per subscribed stream kind and
symbol (plus the loop diffs), then keeps the connection open and idle. ``GET /stats`` answers
``{"depth": n, "trades": n, "finished": connections}``: frames sent so far, and how many
connections were sent all their events, the ground truth a client's rows must match.

Subscriptions: ``/stream?streams=a/b/c`` (combined, as cryptofeed does) or SUBSCRIBE requests
on ``/public/stream`` and ``/market/stream`` (as our client does); any path is served.
``--tls DIR`` serves wss/https with a self-signed certificate for 127.0.0.1 written to
``DIR/cert.pem`` (clients trust it through ``SSL_CERT_FILE``).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import ssl
import struct
import sys
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors.venues.binance import is_snapshot  # noqa: E402
from actors.venues.sim.recordings import read_recording  # noqa: E402

RECORDING = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "real" / "binance-usdm" / "btcusdt_20240808.gz"
DIFFS_PER_TRADE = 3
HIGH_WATER = 1 << 20
BATCH = 128
SMALL_LEVELS = 2                 # levels a side of --frames small


@dataclass
class Loop:
    """One loop of recorded events, ready to be stamped."""

    snapshot: tuple[int, list, list]                   # lastUpdateId, bids, asks (strings)
    diffs: list[tuple[int, int, int, bytes]] = field(default_factory=list)   # U, u, pu, levels JSON
    trades: list[tuple[int, bytes, bytes, bool]] = field(default_factory=list)  # id, price, qty, m
    events: list[tuple[bool, int]] = field(default_factory=list)             # (is_diff, index)
    reset_levels: bytes = b""                          # end-of-loop book -> snapshot book
    id_step: int = 0                                   # ids shift per loop
    trade_step: int = 0


def levels_json(bids: list, asks: list) -> bytes:
    return b'"b":' + orjson.dumps(bids) + b',"a":' + orjson.dumps(asks)


def build_loop(path: Path = RECORDING) -> Loop:
    """The recording as one loop (see module docstring)."""
    snapshot = None
    recorded: list[dict] = []
    trades: list[tuple[int, dict]] = []
    for rec in read_recording(str(path)):
        if is_snapshot(rec.payload):
            snap = orjson.loads(rec.payload)
            snapshot = (snap["lastUpdateId"], snap["bids"], snap["asks"])
        elif '"depthUpdate"' in rec.payload[:80]:
            recorded.append(orjson.loads(rec.payload)["data"])
        elif '@trade"' in rec.payload[:40]:
            trades.append((len(recorded), orjson.loads(rec.payload)["data"]))
    assert snapshot is not None, "the recording holds no REST snapshot"
    skip = next(i for i, d in enumerate(recorded) if d["u"] >= snapshot[0])   # what the snapshot already holds
    diffs = recorded[skip:]
    trades = [(pos - skip, t) for pos, t in trades if pos > skip]
    assert snapshot and diffs[0]["U"] <= snapshot[0] <= diffs[0]["u"], "the recording's snapshot is not bridged"
    loop = Loop(snapshot)
    every = max(1, round(len(trades) * DIFFS_PER_TRADE / len(diffs)))
    kept = trades[::every]
    t = 0
    for i, d in enumerate(diffs):
        while t < len(kept) and kept[t][0] <= i:
            loop.events.append((False, t))
            t += 1
        loop.events.append((True, i))
    for _, tr in kept:
        loop.trades.append((tr["t"], tr["p"].encode(), tr["q"].encode(), tr["m"]))
    return close_loop(loop, diffs)


def build_small_loop(path: Path = RECORDING, diffs: int = 60_000, levels: int = SMALL_LEVELS,
                     seed: int = 24) -> Loop:
    """A loop of small diffs (``levels`` levels a side) on the recording's REST snapshot book.

    Each diff sets ``levels`` bid and ``levels`` ask levels, drawn from the snapshot's own prices
    (a bid price stays a bid price, so the book never crosses), mostly near the top: the level's
    rank is exponential with mean 15 (about 3 in 4 land in the best 20), a fifth of them removing
    the level (size 0), the others a new size. One trade (at the snapshot's best bid or ask) per
    ``DIFFS_PER_TRADE`` diffs. Seeded: every run serves the same frames."""
    import random

    rng = random.Random(seed)
    snap_id, bids, asks = recorded_snapshot(path)
    loop = Loop((snap_id, bids, asks))
    book_diffs = []
    prev = snap_id - 1
    for i in range(diffs):
        first = prev + 1
        last = first + 1 + rng.randrange(3)      # the first diff bridges the snapshot: U <= id <= u
        sides = {}
        for side, book in (("b", bids), ("a", asks)):
            ranks = sorted({min(int(rng.expovariate(1 / 15)), len(book) - 1) for _ in range(levels)})
            while len(ranks) < levels:
                ranks = sorted(set(ranks) | {rng.randrange(min(len(book), 200))})
            sides[side] = [[book[r][0], "0.000" if rng.random() < 0.2 else f"{rng.randrange(1, 50000) / 1000:.3f}"]
                           for r in ranks]
        sides["b"].reverse()                    # as Binance sends them: both sides by ascending price
        book_diffs.append({"U": first, "u": last, "pu": prev, "b": sides["b"], "a": sides["a"]})
        prev = last
        if i % DIFFS_PER_TRADE == DIFFS_PER_TRADE - 1:
            maker = rng.random() < 0.5
            price = (bids if maker else asks)[0][0]
            loop.trades.append((1_000_000 + len(loop.trades), price.encode(),
                                f"{rng.randrange(1, 5000) / 1000:.3f}".encode(), maker))
            loop.events.append((False, len(loop.trades) - 1))
        loop.events.append((True, i))
    return close_loop(loop, book_diffs)


def recorded_snapshot(path: Path = RECORDING) -> tuple[int, list, list]:
    """The recording's first REST snapshot: ``(lastUpdateId, bids, asks)`` (price/size strings)."""
    for rec in read_recording(str(path)):
        if is_snapshot(rec.payload):
            snap = orjson.loads(rec.payload)
            return snap["lastUpdateId"], snap["bids"], snap["asks"]
    raise AssertionError("the recording holds no REST snapshot")


def close_loop(loop: Loop, diffs: list[dict]) -> Loop:
    """Fill in the diffs' frames, the diff that turns the book at the loop's end back into the
    snapshot, and the id steps between loops."""
    snapshot = loop.snapshot
    for d in diffs:
        loop.diffs.append((d["U"], d["u"], d["pu"], levels_json(d["b"], d["a"])))
    book = {"b": {p: q for p, q in snapshot[1]}, "a": {p: q for p, q in snapshot[2]}}
    for d in diffs:
        for side in ("b", "a"):
            for p, q in d[side]:
                if float(q) == 0.0:
                    book[side].pop(p, None)
                else:
                    book[side][p] = q
    reset = {}
    for side, levels in (("b", snapshot[1]), ("a", snapshot[2])):
        start = {p for p, _ in levels}
        reset[side] = [[p, "0.000"] for p in book[side] if p not in start] + [list(x) for x in levels]
    loop.reset_levels = levels_json(reset["b"], reset["a"])
    last_u, first_pu = diffs[-1]["u"], diffs[0]["pu"]
    loop.id_step = last_u + 1 - first_pu          # the reset diff takes id last_u + 1
    loop.trade_step = loop.trades[-1][0] - loop.trades[0][0] + 1
    return loop


def ws_frame(payload: bytes) -> bytes:
    """An unmasked text frame (server to client)."""
    n = len(payload)
    if n < 126:
        return b"\x81" + bytes((n,)) + payload
    if n < 65536:
        return b"\x81\x7e" + struct.pack("!H", n) + payload
    return b"\x81\x7f" + struct.pack("!Q", n) + payload


class Generator:
    """Serves the loop to every connection (see module docstring)."""

    def __init__(self, loop: Loop, symbols: int, events: int) -> None:
        self.loop = loop
        self.symbols = [f"S{i}USDT" for i in range(symbols)]
        self.events = events
        self.sent = {"depth": 0, "trades": 0, "finished": 0}
        self.loop_of: dict[str, int] = {s: 0 for s in self.symbols}    # newest connection's loop per symbol

    # -- REST ---------------------------------------------------------------------------
    def rest(self, path: str, query: dict[str, list[str]]) -> tuple[HTTPStatus, bytes]:
        if path == "/fapi/v1/depth":
            symbol = query.get("symbol", [""])[-1]
            if symbol not in self.loop_of:
                return HTTPStatus.BAD_REQUEST, b'{"code":-1121,"msg":"Invalid symbol."}'
            limit = int(query.get("limit", ["1000"])[-1])
            last, bids, asks = self.loop.snapshot
            now = int(time.time() * 1000)
            return HTTPStatus.OK, orjson.dumps({"lastUpdateId": last + self.loop_of[symbol] * self.loop.id_step,
                                                "E": now, "T": now, "bids": bids[:limit], "asks": asks[:limit]})
        if path == "/fapi/v1/exchangeInfo":
            return HTTPStatus.OK, orjson.dumps({"symbols": [
                {"symbol": s, "baseAsset": s[:-4], "quoteAsset": "USDT", "contractType": "PERPETUAL",
                 "status": "TRADING", "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.10"}]}
                for s in self.symbols]})
        if path == "/stats":
            return HTTPStatus.OK, orjson.dumps(self.sent)
        return HTTPStatus.NOT_FOUND, b'{"code":-1,"msg":"not found"}'

    async def process_request(self, connection, request):
        url = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        status, body = self.rest(url.path, parse_qs(url.query))
        response = connection.respond(status, body.decode())
        response.headers["Content-Type"] = "application/json"
        return response

    # -- websocket ----------------------------------------------------------------------
    async def handle(self, ws) -> None:
        url = urlsplit(ws.request.path)
        streams: set[str] = set(parse_qs(url.query).get("streams", [""])[-1].split("/")) - {""}
        subscribed = asyncio.Event()
        if streams:
            subscribed.set()

        async def read_requests() -> None:
            async for message in ws:
                req = orjson.loads(message)
                if req.get("method") == "SUBSCRIBE":
                    streams.update(req.get("params") or [])
                    await ws.send(orjson.dumps({"result": None, "id": req.get("id")}).decode())
                    subscribed.set()
        reader = asyncio.ensure_future(read_requests())
        try:
            await subscribed.wait()
            await asyncio.sleep(0.05)           # subscriptions sent together arrive together
            await self.stream(ws, sorted(streams))
            await reader
        except Exception:      # the client went away: nothing to clean up but the reader
            pass
        finally:
            reader.cancel()

    async def stream(self, ws, streams: list[str]) -> None:
        """Send ``self.events`` events of every subscribed stream, then stay idle."""
        depth = [(s, self._symbol(s)) for s in streams if "@depth" in s]
        trade = [(s, self._symbol(s)) for s in streams if s.endswith(("@aggTrade", "@trade"))]
        depth = [(s.encode(), sym.encode(), sym) for s, sym in depth if sym]
        trade = [(s.encode(), sym.encode(), sym) for s, sym in trade if sym]
        loop, transport = self.loop, ws.transport
        n_events = len(loop.events)
        out: list[bytes] = []
        counts = [0, 0]
        sent = 0
        while sent < self.events:
            k, pos = divmod(sent, n_events)
            if pos == 0:
                for _, _, sym in depth:
                    self.loop_of[sym] = k
                if k:                          # the diff that turns the book back into the snapshot
                    u = loop.diffs[0][2] + k * loop.id_step
                    for stream, sym, _ in depth:
                        out.append(self._diff(stream, sym, u, u, u - 1, loop.reset_levels))
                    counts[0] += len(depth)
            is_diff, i = loop.events[pos]
            if is_diff:
                first, last, prev, levels = loop.diffs[i]
                shift = k * loop.id_step
                for stream, sym, _ in depth:
                    out.append(self._diff(stream, sym, first + shift, last + shift, prev + shift, levels))
                counts[0] += len(depth)
            else:
                tid, price, qty, maker = loop.trades[i]
                tid += k * loop.trade_step
                now = int(time.time() * 1000)
                for stream, sym, _ in trade:
                    out.append(ws_frame(b'{"stream":"%s","data":{"e":"aggTrade","E":%d,"a":%d,"s":"%s","p":"%s",'
                                        b'"q":"%s","f":%d,"l":%d,"T":%d,"m":%s}}'
                                        % (stream, now, tid, sym, price, qty, tid, tid, now,
                                           b"true" if maker else b"false")))
                counts[1] += len(trade)
            sent += 1
            if len(out) >= BATCH or sent == self.events:
                transport.write(b"".join(out))
                out.clear()
                self.sent["depth"] += counts[0]
                self.sent["trades"] += counts[1]
                counts = [0, 0]
                while transport.get_write_buffer_size() > HIGH_WATER:
                    if transport.is_closing():
                        return
                    await asyncio.sleep(0.0005)
                if transport.is_closing():
                    return
        self.sent["finished"] += 1

    @staticmethod
    def _diff(stream: bytes, sym: bytes, first: int, last: int, prev: int, levels: bytes) -> bytes:
        now = int(time.time() * 1000)
        return ws_frame(b'{"stream":"%s","data":{"e":"depthUpdate","E":%d,"T":%d,"s":"%s","U":%d,"u":%d,"pu":%d,%s}}'
                        % (stream, now, now, sym, first, last, prev, levels))

    def _symbol(self, stream: str) -> str | None:
        sym = stream.split("@", 1)[0].upper()
        return sym if sym in self.loop_of else None


def self_signed(folder: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1 (``folder/cert.pem``)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return ctx


async def serve_forever(gen: Generator, tls: ssl.SSLContext | None) -> None:
    from websockets.asyncio.server import serve

    async with serve(gen.handle, "127.0.0.1", 0, process_request=gen.process_request, ssl=tls,
                     compression=None, max_size=2 ** 24, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Future()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--events", type=int, default=100_000, help="events per stream kind and symbol")
    parser.add_argument("--tls", help="serve wss/https; the certificate goes into this folder")
    parser.add_argument("--frames", choices=("real", "small"), default="real",
                        help="real: the recording's diffs (~68 levels each); small: 2 levels a side")
    args = parser.parse_args()
    loop = build_loop() if args.frames == "real" else build_small_loop()
    tls = self_signed(Path(args.tls)) if args.tls else None
    asyncio.run(serve_forever(Generator(loop, args.symbols, args.events), tls))


if __name__ == "__main__":
    main()
