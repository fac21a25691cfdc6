"""Loopback servers that speak a venue's protocol: the machinery shared by simulators and replays.

A :class:`VenueServer` is one websockets server on ``127.0.0.1`` (free port) that also answers
plain HTTP GETs on the same port (the venue's REST snapshot endpoints). Subclasses implement
the venue: :meth:`VenueServer.on_message` for client frames, :meth:`VenueServer.http` for REST,
and usually a background task (:meth:`VenueServer.run`) that pushes market data.

:class:`ServerThread` runs a server's event loop in a daemon thread so the driver process can
host it next to Ray. Replay servers interleave *clock frames* (``actors.feed.clock``) carrying
the recorded receive time; the feed connection reads them and never hands them to the venue
parser.
"""
from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from actors.feed.clock import encode_clock

#: the largest frame the feed client accepts (``max_size`` in ``actors/feed/connection.py``)
CLIENT_MAX_FRAME = 2 ** 24


class Session:
    """One client websocket: its path, query, subscriptions, counters and pending frame faults."""

    def __init__(self, ws: ServerConnection, path: str, query: dict[str, list[str]]) -> None:
        self.ws = ws
        self.path = path
        self.query = query
        self.streams: set[str] = set()      # what the client subscribed to (venue's names)
        self.silent: set[str] = set()       # acknowledged but never delivered (wrong route)
        self.sent = 0
        self.last_clock: int | None = None
        self.open = True
        # frame faults (see VenueServer.send_data): data frames only, control frames pass
        self.muted = False                  # ack_then_silence: no data frame reaches this client
        self.duplicates = 0                 # duplicate_frames: the next N data frames are sent twice
        self.reorders = 0                   # reorder_frames: the next N pairs of data frames are swapped
        self.held: str | bytes | None = None   # ... the frame waiting to go after the next one
        self.oversize = False               # oversized_frame: the next data frame exceeds the client's limit


def oversized(text: str | bytes, limit: int = CLIENT_MAX_FRAME) -> str | bytes:
    """A JSON object frame padded with a ``pad`` field to ``limit + 1`` bytes (ASCII); a binary
    frame padded with zero bytes."""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text) + bytes(max(1, limit + 1 - len(text)))
    filler = ',"pad":""'
    return text[:-1] + filler[:-1] + "x" * max(1, limit + 1 - len(text) - len(filler)) + '"}'


class VenueServer:
    """Base class of a venue's loopback server (see module docstring)."""

    ws_scheme = "ws"
    #: websocket paths this server accepts (prefix match); others get HTTP 404
    ws_paths: tuple[str, ...] = ("/",)
    #: the key naming a client request's operation, and the answer to a frame without one
    op_key = "op"
    bad_request = '{"error":"invalid request"}'

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None
        self.sessions: set[Session] = set()
        self.frames_sent = 0                # text frames sent to clients (acks and data)
        self.frames_doubled = 0             # duplicate_frames: second copies sent
        self.frames_swapped = 0             # reorder_frames: frames sent after the one that followed them
        self.finished = threading.Event()   # replay: every recorded frame was sent
        self.pending_faults: list[tuple[str, int]] = []   # frame faults for the next subscriber
        self._server = None
        self._tasks: list[asyncio.Task] = []

    # -- addresses -----------------------------------------------------------------------
    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._process_request,
                                   max_size=2 ** 24, ping_interval=None, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks.append(asyncio.ensure_future(self.run()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass

    async def run(self) -> None:
        """Background task started with the server (market data generation / replay)."""

    # -- HTTP ----------------------------------------------------------------------------
    async def _process_request(self, connection, request):
        url = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not any(url.path.startswith(p) for p in self.ws_paths):
                return connection.respond(HTTPStatus.NOT_FOUND, f"no websocket endpoint at {url.path}\n")
            return None
        status, body = await self.http(url.path, {k: v[-1] for k, v in parse_qs(url.query).items()})
        response = connection.respond(status, body)
        response.headers["Content-Type"] = "application/json"
        return response

    async def http(self, path: str, query: dict[str, str]) -> tuple[HTTPStatus, str]:
        """Answer a REST GET: (status, body)."""
        return HTTPStatus.NOT_FOUND, '{"code":-1,"msg":"not found"}'

    # -- websocket -----------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection, path: str | None = None) -> None:
        url = urlsplit(path if path is not None else ws.request.path)
        session = Session(ws, url.path, parse_qs(url.query))
        self.sessions.add(session)
        try:
            clock = self.initial_clock()
            if clock is not None:
                await self.send_clock(session, clock)
            await self.on_open(session)
            async for message in ws:
                await self.on_message(session, message)
        except ConnectionClosed:
            pass
        finally:
            session.open = False
            self.sessions.discard(session)
            # duplicated / reordered frames the closed session still owed go to the next subscriber, so an
            # injected frame fault reaches a frame also when the connection drops first
            self.pending_faults += [(kind, n) for kind, n in (("duplicate_frames", session.duplicates),
                                                              ("reorder_frames", session.reorders)) if n]
            self.on_close(session)

    def sent_on_open_sessions(self) -> int:
        """Text frames sent to the clients connected now (call on the server loop)."""
        return sum(session.sent for session in self.sessions if session.open)

    def initial_clock(self) -> int | None:
        """Replay servers: the recording's current time, sent as a clock frame on connect."""
        return None

    async def on_open(self, session: Session) -> None:
        """A client connected (e.g. pre-subscribe streams named in the URL)."""

    async def on_message(self, session: Session, message: str | bytes) -> None:
        """A client frame: a JSON object naming its operation (``op_key``) goes to :meth:`on_request`,
        anything else is answered with ``bad_request``."""
        try:
            req = orjson.loads(message)
        except orjson.JSONDecodeError:
            req = None
        if not isinstance(req, dict) or self.op_key not in req:
            await self.send(session, self.bad_request)
            return
        await self.on_request(session, req[self.op_key], req)

    async def on_request(self, session: Session, op: Any, req: dict) -> None:
        """A client request (subscribe, unsubscribe, ping, ...)."""

    def known(self, key: str) -> bool:
        """True for a stream this server can serve (simulators check names and symbols)."""
        return True

    def on_close(self, session: Session) -> None:
        """A client went away."""

    async def send(self, session: Session, text: str | bytes) -> bool:
        """Send one frame (text, or binary for bytes); False if the client is gone."""
        if not session.open:
            return False
        try:
            await session.ws.send(text)
        except ConnectionClosed:
            session.open = False
            return False
        session.sent += 1
        self.frames_sent += 1
        return True

    async def send_data(self, session: Session, text: str | bytes) -> bool:
        """Send one market-data frame, applying the session's frame faults; False if it does not
        reach the client (gone or muted). A frame held back to be swapped counts as sent: it goes
        out after the next data frame (or at :meth:`flush_held`)."""
        if session.muted or not session.open:
            return False
        if session.oversize:            # nothing waits behind a frame the client cannot read
            session.oversize = False
            await self._send_held(session)
            text = oversized(text)
        elif session.reorders and session.held is None:
            session.held = text
            return True
        sent = await self.send(session, text)
        if await self._send_held(session) and sent:
            self.frames_swapped += 1
        if sent and session.duplicates:
            session.duplicates -= 1
            if await self.send(session, text):
                self.frames_doubled += 1
        return sent

    async def _send_held(self, session: Session) -> bool:
        """Send the frame a reorder fault held back, if any; True when one was sent."""
        if session.held is None:
            return False
        held, session.held = session.held, None
        session.reorders = max(0, session.reorders - 1)
        return await self.send(session, held)

    async def flush_held(self) -> None:
        """Send every frame held back by a reorder fault (end of a run: nothing stays unsent)."""
        for session in list(self.sessions):
            session.reorders = 0
            await self._send_held(session)

    async def push(self, key: str, payload: str | bytes) -> int:
        """Send ``payload`` to every session subscribed to ``key``; how many sessions it reached."""
        reached = 0
        for session in list(self.sessions):
            if key in session.streams and await self.send_data(session, self.wrap(session, key, payload)):
                reached += 1
        return reached

    def subscribed_keys(self, prefix: str) -> set[str]:
        """The streams starting with ``prefix`` that some session subscribed to."""
        return {key for session in self.sessions for key in session.streams if key.startswith(prefix)}

    def wrap(self, session: Session, key: str, payload: str | bytes) -> str | bytes:
        """The frame that carries ``payload`` of stream ``key`` to ``session`` (default: as is)."""
        return payload

    async def subscribe(self, session: Session, keys: list[str]) -> None:
        """Subscribe ``session`` to the venue's streams ``keys`` (after the venue acked them); frame
        faults injected while nobody was subscribed apply to the first session that subscribes."""
        if keys and not session.streams:
            for kind, count in self.pending_faults:
                self._frame_fault(session, kind, count)
            self.pending_faults.clear()
        for key in keys:
            session.streams.add(key)
            await self.on_subscribe(session, key)

    def unsubscribe(self, session: Session, keys: list[str]) -> None:
        for key in keys:
            session.streams.discard(key)
            session.silent.discard(key)

    async def change_subscriptions(self, session: Session, op: str, keys: list[str]) -> None:
        """``op`` (``subscribe`` or ``unsubscribe``) for the streams ``keys``."""
        if op == "subscribe":
            await self.subscribe(session, keys)
        else:
            self.unsubscribe(session, keys)

    async def on_subscribe(self, session: Session, key: str) -> None:
        """``session`` subscribed to ``key`` (simulators send a snapshot here; replays start)."""

    async def send_clock(self, session: Session, ts_ns: int) -> None:
        """Tell a replay client the recorded receive time of the next frames."""
        if session.last_clock != ts_ns and session.open:
            try:
                await session.ws.send(encode_clock(ts_ns))
                session.last_clock = ts_ns
            except ConnectionClosed:
                session.open = False

    async def close_all(self, reason: str = "server closed the connection") -> None:
        for session in list(self.sessions):
            try:
                await session.ws.close(1001, reason[:100])
            except ConnectionClosed:
                pass

    # -- faults (thread-safe entry point) ------------------------------------------------
    def inject(self, kind: str, symbol: str | None = None, **kw: Any) -> None:
        """Inject a fault from any thread (see the venue's ``FAULTS``)."""
        if self.loop is None:
            raise RuntimeError("server is not running")
        asyncio.run_coroutine_threadsafe(self.fault(kind, symbol, **kw), self.loop).result(10)

    #: faults on the frames sent to the clients connected now (any server, replays too)
    FRAME_FAULTS = ("duplicate_frames", "reorder_frames", "oversized_frame", "ack_then_silence")

    async def fault(self, kind: str, symbol: str | None = None, **kw: Any) -> None:
        """A frame fault for every subscribed session (none: for the next one that subscribes):
        ``duplicate_frames`` / ``reorder_frames`` (the next ``count`` data frames sent twice / pairs
        swapped), ``oversized_frame`` (the next data frame padded beyond the client's maximum frame
        size), ``ack_then_silence`` (no more data frames, while acks and pongs still flow: only the
        client's idle timeout notices)."""
        if kind not in self.FRAME_FAULTS:
            raise ValueError(f"unknown fault {kind!r} (allowed: {', '.join(self.FRAME_FAULTS)})")
        count = int(kw.get("count") or 1)
        subscribed = [session for session in self.sessions if session.open and session.streams]
        if not subscribed:       # nobody subscribed right now: the next session that subscribes gets it
            self.pending_faults.append((kind, count))
        for session in subscribed:
            self._frame_fault(session, kind, count)

    @staticmethod
    def _frame_fault(session: Session, kind: str, count: int) -> None:
        if kind == "duplicate_frames":
            session.duplicates += count
        elif kind == "reorder_frames":
            session.reorders += count
        elif kind == "oversized_frame":
            session.oversize = True
        else:
            session.muted = True

    def call(self, fn, *args) -> Any:
        """Run ``fn(*args)`` on the server's loop (thread-safe) and return its result."""
        async def runner():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(10)


class SimulatedVenue(VenueServer):
    """A venue simulator: paced market steps per symbol, ground truth and the common fault knobs.

    Subclasses implement :meth:`step` (generate and push one market event for a symbol,
    returning how many messages it sent), :meth:`malformed` and their control frames. Faults:
    ``drop_connection`` (close every client socket), ``stall`` (send nothing for ``seconds``;
    the market does not move meanwhile), ``break_chain`` (the next book update of ``symbol`` is
    not sent, breaking the venue's sequence), ``malformed`` (one frame that is not valid JSON),
    ``venue_restart`` (the venue's own sequence starts again: in-band where the venue documents
    it, e.g. Bybit's ``u == 1`` snapshot, else every session is closed and the sequence reset;
    see :meth:`restart_venue`), and the frame faults of :class:`VenueServer` (duplicated,
    reordered and oversized frames, ack-then-silence). Scheduled ones come from
    ``sim_cfg["faults"]`` (``at_s`` after start).

    Ground truth (``record_truth``): every trade that reached a subscriber, and the true top-N
    book per update id; a venue restart starts a new truth epoch (update ids may repeat).
    """

    FAULTS = ("drop_connection", "stall", "break_chain", "malformed", "venue_restart", *VenueServer.FRAME_FAULTS)
    #: REST path of the book snapshot (None: the venue has none), and the answers to a wrong path
    #: and to an unknown ``symbol``
    snapshot_path: str | None = None
    rest_errors = ('{"error":"not found"}', '{"error":"unknown symbol"}')

    #: the stream kinds published, for keys shaped ``<kind>:<symbol>`` (else :meth:`known` is overridden)
    stream_kinds: tuple[str, ...] = ()

    def __init__(self, symbols: list[str], sim_cfg: dict, depth: int) -> None:
        from actors.venues.sim.market import SimSymbol

        super().__init__()
        seed = int(sim_cfg.get("seed", 7))
        self.symbols = {s: SimSymbol(s, seed) for s in symbols}
        self.rate = float(sim_cfg.get("messages_per_s", 200))
        self.record_truth = bool(sim_cfg.get("record_truth", False))
        self.derivatives_every = max(1, int(sim_cfg.get("derivatives_every", 10)))          # market steps
        self.liquidation_probability = float(sim_cfg.get("liquidation_probability", 0.01))  # per step
        self.depth = depth
        self.faults = sorted((dict(f) for f in sim_cfg.get("faults") or []), key=lambda f: float(f.get("at_s", 0)))
        self.stalled_until = 0.0
        self.paused = False
        self.tick_s = 0.01
        self._stepping = asyncio.Lock()     # held while market steps are sending

    async def http(self, path: str, query: dict[str, str]) -> tuple[HTTPStatus, str]:
        if path != self.snapshot_path:
            return HTTPStatus.NOT_FOUND, self.rest_errors[0]
        s = self.symbols.get(query.get("symbol", ""))
        if s is None:
            return HTTPStatus.BAD_REQUEST, self.rest_errors[1]
        return HTTPStatus.OK, self.snapshot_body(s, query)

    def known(self, key: str) -> bool:
        kind, _, symbol = key.partition(":")
        return kind in self.stream_kinds and symbol in self.symbols

    def snapshot_body(self, s, query: dict[str, str]) -> str:
        """The REST book snapshot of a symbol, consistent with the stream's update ids."""
        raise NotImplementedError

    def truth(self, symbol: str):
        """Every trade sent to a subscriber and the true top-``depth`` book per update id."""
        return self.symbols[symbol].truth

    def pause(self) -> None:
        """Stop generating (call on the server loop, e.g. via :meth:`call`); a step under way goes on."""
        self.paused = True

    def halt(self) -> None:
        """Stop generating; returns (from any thread) once no market step is still sending and
        every frame held back by a reorder fault went out."""
        async def halted() -> None:
            self.paused = True
            async with self._stepping:
                await self.flush_held()
        asyncio.run_coroutine_threadsafe(halted(), self.loop).result(10)

    def record_trade(self, s, trade, reached: int, exchange_ms: int = 0) -> None:
        if self.record_truth and reached:
            s.truth.trades.append(dataclasses.replace(trade, sent_ns=time.time_ns(), exchange_ms=exchange_ms))

    def record_book(self, s, update_id: int) -> None:
        if self.record_truth:
            s.truth.books[update_id] = s.market.top(self.depth)

    def new_epoch(self, s) -> None:
        """The venue's sequence of ``s`` starts again: later update ids belong to a new truth epoch."""
        if self.record_truth:
            s.truth.new_epoch(time.time_ns())

    async def restart_venue(self) -> None:
        """A venue restart: every session is closed and every symbol's sequence starts again
        (venues with an in-band restart override this)."""
        async with self._stepping:
            await self.close_all("venue restart")
            for s in self.symbols.values():
                self.reset_sequence(s)

    def reset_sequence(self, s) -> None:
        """Start ``s``'s update ids again (a new truth epoch); venues whose ids are times keep them."""
        self.new_epoch(s)
        s.last_u = 0

    def first_seq(self, s, first: int) -> int:
        """The symbol's current update id; a sequence not started yet starts at ``first`` (a true book)."""
        if not s.last_u:
            s.last_u = first
            self.record_book(s, first)
        return s.last_u

    def take_skip(self, s) -> bool:
        """True (once) when a break_chain fault asked to drop this symbol's next book update."""
        if s.skip_next_diff:
            s.skip_next_diff = False
            return True
        return False

    async def run(self) -> None:
        import time as _time

        started = last = _time.monotonic()
        budget = {s: 0.0 for s in self.symbols}
        while True:
            await asyncio.sleep(self.tick_s)
            now = _time.monotonic()
            while self.faults and now - started >= float(self.faults[0].get("at_s", 0)):
                f = self.faults.pop(0)
                await self.fault(f["kind"], f.get("symbol"), **{k: v for k, v in f.items()   # unset knobs: defaults
                                                               if k not in ("kind", "symbol", "at_s") and v is not None})
            elapsed, last = now - last, now
            if self.paused or now < self.stalled_until:
                continue
            async with self._stepping:
                for sym, state in self.symbols.items():
                    budget[sym] = min(budget[sym] + self.rate * elapsed, self.rate * 0.2 + 1)
                    while budget[sym] >= 1 and not self.paused:
                        budget[sym] -= await self.step(state)

    async def step(self, s) -> int:
        """One market event of ``s``: its trade (if any), then its book update; messages sent."""
        step = s.market.step()
        now_ms = self.clock_ms(s)
        if step.trade is not None:
            await self.send_trade(s, step.trade, now_ms)
        await self.send_book(s, step, now_ms)
        sent = 1 if step.trade is None else 2
        s.steps += 1
        if s.steps % self.derivatives_every == 0 and await self.send_derivatives(s, now_ms):
            sent += 1
        if self.liquidation_probability and s.derivatives.rng.random() < self.liquidation_probability \
                and await self.send_liquidation(s, now_ms):
            sent += 1
        return sent

    def derivatives_message(self, s, changed: dict[str, str], now_ms: int) -> tuple[str, str] | list | None:
        """``(stream key, payload)`` (or a list of them, for a venue that spreads the values over several
        channels) publishing the derivatives values: ``changed`` moved since the last one,
        ``s.derivatives.values`` holds them all; None: the venue publishes none."""
        return None

    def liquidation_message(self, s, liq, now_ms: int) -> tuple[str, str] | None:
        """``(stream key, payload)`` of one liquidation; None: the venue publishes none."""
        return None

    async def send_derivatives(self, s, now_ms: int) -> bool:
        """Move and publish a symbol's derivatives values; true (all of them) once a subscriber got them."""
        message = self.derivatives_message(s, s.derivatives.step(), now_ms)
        if message is None:
            return False
        reached = [await self.push(*m) for m in ([message] if isinstance(message, tuple) else message)]
        if any(reached) and self.record_truth:
            s.truth.derivatives.append(s.derivatives.floats())
        return True

    async def send_liquidation(self, s, now_ms: int) -> bool:
        """Publish one liquidation; true once a subscriber got it."""
        liq = s.derivatives.liquidation()
        message = self.liquidation_message(s, liq, now_ms)
        if message is None:
            return False
        if await self.push(*message) and self.record_truth:
            s.truth.liquidations.append(liq)
        return True

    def clock_ms(self, s) -> int:
        """The exchange time (ms) of a step (venues with block times keep them unique per symbol)."""
        return int(time.time() * 1000)

    def trade_message(self, s, trade, now_ms: int) -> tuple[str, str]:
        """``(stream key, payload)`` of a trade in the venue's shape."""
        raise NotImplementedError

    async def send_trade(self, s, trade, now_ms: int) -> None:
        """Push a trade to its subscribers; it is true once a subscriber got it."""
        key, payload = self.trade_message(s, trade, now_ms)
        self.record_trade(s, trade, await self.push(key, payload), now_ms)

    async def send_book(self, s, step, now_ms: int) -> None:
        """Advance the symbol's update id, record the true book and push the venue's book update
        (unless a ``break_chain`` fault drops it, see :meth:`take_skip`)."""
        raise NotImplementedError

    async def malformed(self) -> None:
        for session in list(self.sessions):
            await self.send(session, '{"broken": ')

    async def fault(self, kind: str, symbol: str | None = None, **kw: Any) -> None:
        import time as _time

        if kind == "drop_connection":
            await self.close_all("simulated disconnect")
        elif kind == "stall":
            self.stalled_until = _time.monotonic() + float(kw.get("seconds") or 5)
        elif kind == "break_chain":
            for s in ([self.symbols[symbol]] if symbol else self.symbols.values()):
                s.skip_next_diff = True
        elif kind == "malformed":
            await self.malformed()
        elif kind == "venue_restart":
            await self.restart_venue()
        elif kind in self.FRAME_FAULTS:
            await super().fault(kind, symbol, **kw)
        else:
            raise ValueError(f"unknown fault {kind!r} (allowed: {', '.join(self.FAULTS)})")


class ReplayVenue(VenueServer):
    """Serves a recording back frame by frame to the sessions subscribed to each frame's stream.

    Subclasses implement :meth:`stream_of` (the subscription key a recorded frame belongs to,
    or None to skip it) and may override :meth:`on_record` for frames that are not stream
    data (e.g. a recorded REST answer). Replay starts once a client subscribed; ``speed`` 1
    keeps the recorded pace, 0 is as fast as the client reads. Each frame is preceded by a
    clock frame with its recorded receive time; ``finished`` is set at the end.
    """

    def __init__(self, path: str, speed: float, symbols: list[str]) -> None:
        from actors.venues.sim.recordings import read_recording

        super().__init__()
        self.path, self.speed, self.symbols = path, speed, set(symbols)
        self.subscribed = asyncio.Event()
        self.clock = next(r for r in read_recording(path) if r.ts_local).ts_local

    def initial_clock(self) -> int | None:
        return self.clock

    async def on_subscribe(self, session: Session, key: str) -> None:
        self.subscribed.set()

    def stream_of(self, rec) -> str | None:
        raise NotImplementedError

    async def on_record(self, rec) -> bool:
        """Handle a recorded frame that is not stream data; True when handled."""
        return False

    async def run(self) -> None:
        import time as _time

        from actors.venues.sim.recordings import read_recording

        await self.subscribed.wait()
        await asyncio.sleep(0.2)              # let the client finish subscribing everything
        first_ts, t0 = None, _time.monotonic()
        try:
            for rec in read_recording(self.path):
                if self.speed > 0 and rec.kind == "recv":      # the pace of what the venue sent
                    first_ts = first_ts if first_ts is not None else rec.ts_local
                    delay = t0 + (rec.ts_local - first_ts) / 1e9 / self.speed - _time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                self.clock = rec.ts_local
                if await self.on_record(rec):
                    continue
                key = self.stream_of(rec)
                if key is None:
                    continue
                for session in list(self.sessions):
                    if key in session.streams:
                        await self.send_clock(session, rec.ts_local)
                        await self.send_data(session, rec.payload)
        finally:
            await self.on_finished()
            self.finished.set()

    async def on_finished(self) -> None:
        """The recording is exhausted."""


class MarketServers(VenueServer):
    """Several markets of one venue on one loopback port, each served by its own server
    (simulator or replay): the venue's main protocol at the root paths, every other one under
    ``/<key>`` (where :meth:`actors.venues.base.Endpoints.of` points its connections).

    ``names``: archive symbol (``spot/BTCUSDT``) -> (protocol key, wire symbol), so :meth:`truth`
    and faults take the archive's names. ``finished`` is set once every replay finished.
    """

    def __init__(self, servers: dict[str, VenueServer], names: dict[str, tuple[str, str]]) -> None:
        super().__init__()
        self.servers, self.names = servers, names

    def _route(self, path: str) -> tuple[VenueServer | None, str]:
        head, _, rest = path.lstrip("/").partition("/")
        if head in self.servers and head:
            return self.servers[head], "/" + rest
        return self.servers.get(""), path

    async def start(self) -> None:
        await super().start()
        for server in self.servers.values():
            server.loop, server.port = self.loop, self.port
            server._tasks.append(asyncio.ensure_future(server.run()))

    async def stop(self) -> None:
        for server in self.servers.values():
            for task in server._tasks:
                task.cancel()
        await super().stop()

    async def run(self) -> None:
        replays = [s for s in self.servers.values() if isinstance(s, ReplayVenue)]
        if not replays:
            return
        while not all(s.finished.is_set() for s in replays):
            await asyncio.sleep(0.05)
        self.finished.set()

    async def _process_request(self, connection, request):
        url = urlsplit(request.path)
        server, path = self._route(url.path)
        if server is None:
            return connection.respond(HTTPStatus.NOT_FOUND, f"nothing at {url.path}\n")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not any(path.startswith(p) for p in server.ws_paths):
                return connection.respond(HTTPStatus.NOT_FOUND, f"no websocket endpoint at {url.path}\n")
            return None
        status, body = await server.http(path, {k: v[-1] for k, v in parse_qs(url.query).items()})
        response = connection.respond(status, body)
        response.headers["Content-Type"] = "application/json"
        return response

    async def _handle(self, ws: ServerConnection, path: str | None = None) -> None:
        url = urlsplit(ws.request.path)
        server, rest = self._route(url.path)
        await server._handle(ws, rest + (f"?{url.query}" if url.query else ""))

    # -- what callers ask of a server, over every market --------------------------------
    @property
    def frames_sent(self) -> int:
        return sum(s.frames_sent for s in self.servers.values())

    @frames_sent.setter
    def frames_sent(self, value: int) -> None:      # VenueServer.__init__ sets it; the sum is the truth
        pass

    def sent_on_open_sessions(self) -> int:
        return sum(s.sent_on_open_sessions() for s in self.servers.values())

    def _of(self, symbol: str) -> tuple[Any, str]:
        key, wire = self.names[symbol]
        return self.servers[key], wire

    def truth(self, symbol: str):
        server, wire = self._of(symbol)
        return server.truth(wire)

    async def fault(self, kind: str, symbol: str | None = None, **kw: Any) -> None:
        targets = [self._of(symbol)] if symbol else [(s, None) for s in self.servers.values()]
        for server, wire in targets:
            await server.fault(kind, wire, **kw)

    def pause(self) -> None:
        for server in self.servers.values():
            if isinstance(server, SimulatedVenue):
                server.pause()

    def halt(self) -> None:
        for server in self.servers.values():
            if isinstance(server, SimulatedVenue):
                server.halt()


class ServerThread:
    """Runs a :class:`VenueServer` in a daemon thread with its own event loop."""

    def __init__(self, server: VenueServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, daemon=True, name=f"{type(server).__name__}")
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    def start(self) -> "ServerThread":
        self.thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"venue server failed to start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(15)
