"""Defects the fault suite found outside its own files, each the smallest test that failed before its fix.

F1  feed/connection.py: the idle timeout counted every frame, so a venue that acknowledged the
    subscription and then sent no data but kept answering the client's pings was never noticed.
    Fixed: the watchdog counts market rows (``VenueClient.market_rows``), not frames.
F2  venue clients: a frame the venue sent twice was archived twice. Fixed: trades are written once
    per venue trade id (``VenueClient.trade_row``, a window of recent ids; WOO X, whose trades have
    no id, by repeated frame), an update at or before the last applied id is dropped, not a gap.
F2b venues/base.py: the snapshot that resyncs a book after a gap or a reconnect was written again
    when its update id was the last one already written (the market stood still). Fixed: a
    snapshot at the last written id is that same book, no second row.
F3  venues/hyperliquid.py: an l2Book push older than the last written one (reordered frames) was
    written after it. Fixed: a push whose block time is not newer than the last written is dropped.
F4  feed/venue_feed.py + outbox.py: the reader's backpressure gate counted the rows buffered since
    the last flush once, when it started waiting; after a stall those rows moved into the outbox
    and were counted twice for ever: the reader never read again. Fixed: counted afresh each check.
F5  feed/connection.py: a writer slower than the feed for more than ~40 s dropped the connection
    (websockets' keepalive pong waited unread behind the queued data). Fixed: a missing pong does
    not close the connection; the idle watchdog (which does not count backpressure) finds dead
    ones. Checked by ``python tests/faults/fault_suite.py --only slow`` (60 s of stall).
"""
from __future__ import annotations

from collections import Counter

import pytest

from actors.venues import get_venue
from faultlib import IDLE_TIMEOUT_S, VENUES
from truth_check import from_sink, judge
from venue_harness import Harness, events, synced_after_last_connect

pytestmark = pytest.mark.faults


def harness(name: str, symbols: list[str], settings: dict | None = None) -> Harness:
    venue = get_venue(name)
    server = venue.make_sim_server(symbols, {"messages_per_s": 200, "record_truth": True}, 10)
    return Harness(venue, server, symbols, settings=venue.settings(settings or {}), depth=10,
                   idle_timeout_s=IDLE_TIMEOUT_S)


def test_f1_silence_after_the_ack_is_noticed_while_pings_are_answered():
    h = harness("bybit", ["BTCUSDT"], {"heartbeat_interval": 0.3})       # pings well inside the idle timeout
    sink = h.sink
    h.run(until=lambda: synced_after_last_connect(sink, ["BTCUSDT"]), timeout_s=8, steps=[
        (None, lambda: synced_after_last_connect(sink, ["BTCUSDT"], rows=5)),
        (lambda: h.server.inject("ack_then_silence"), lambda: events(sink, "disconnect", text="stalled")),
    ])


def test_f2_a_trade_frame_sent_twice_is_archived_once():
    h = harness("binance", ["BTCUSDT"])
    sink, client = h.sink, h.conns[0].client
    h.run(until=lambda: synced_after_last_connect(sink, ["BTCUSDT"], rows=20), steps=[
        (None, lambda: synced_after_last_connect(sink, ["BTCUSDT"], rows=5)),
        (lambda: h.server.inject("duplicate_frames", count=40),
         lambda: h.server.frames_doubled >= 40 and client.duplicate_trades > 0),     # the fault reached trade frames
    ])
    doubled = [tid for tid, n in Counter(t[3] for t in sink.trades).items() if n > 1]
    assert not doubled, f"{len(doubled)} trades archived twice, e.g. {doubled[:3]}"


def test_f2b_a_resync_snapshot_at_the_last_written_id_is_not_written_again():
    h = harness("bybit", ["BTCUSDT"])
    sink = h.sink
    reconnected = lambda: len(events(sink, "connect")) >= 2 and synced_after_last_connect(sink, ["BTCUSDT"])  # noqa: E731
    h.run(until=reconnected, steps=[
        (None, lambda: synced_after_last_connect(sink, ["BTCUSDT"], rows=5)),
        (lambda: h.server.inject("stall", seconds=3.0), reconnected),      # the market stands still meanwhile
    ])
    seqs = [b[3] for b in sink.books]
    doubled = [u for u, n in Counter(seqs).items() if n > 1]
    assert not doubled, f"book rows written twice at u={doubled}"


def test_f3_an_older_hyperliquid_book_is_never_written_after_a_newer_one():
    h = harness("hyperliquid", ["BTC"])
    sink = h.sink
    h.run(until=lambda: synced_after_last_connect(sink, ["BTC"], rows=20), steps=[
        (None, lambda: synced_after_last_connect(sink, ["BTC"], rows=5)),
        (lambda: h.server.inject("reorder_frames", count=20),
         lambda: h.server.frames_swapped >= 20 and events(sink, "gap", text="arrived after")),   # ... and books
    ])
    case = VENUES["hyperliquid"]
    verdict = judge(from_sink(sink, "BTC", case.book_key, case.trade_keys), h.server.truth("BTC"),
                    case.trade_keys, case.has_ids)
    assert verdict.books_wrong == 0, verdict.examples[:3]


def test_f4_the_reader_resumes_after_a_stalled_writer_catches_up():
    """A writer that stops acknowledging for a while (the transport the socket actor hands the
    outbox, stalled) then catches up: the feed must read on."""
    import asyncio
    import time

    from actors.feed.connection import FeedOptions
    from actors.feed.venue_feed import VenueFeed
    from actors.venues.base import Endpoints
    from actors.venues.sim.server import ServerThread

    venue = get_venue("binance")
    server = venue.make_sim_server(["BTCUSDT"], {"messages_per_s": 100}, 10)
    thread = ServerThread(server).start()
    settings = venue.settings({})
    plans = venue.plan_connections(settings, Endpoints(server.ws_base, server.rest_base), ["BTCUSDT"],
                                   ["l2book", "trades"], 10)
    writer_up = asyncio.Event()

    async def send(writer, producer, seq, batches):
        await writer_up.wait()

    async def until(condition, what: str, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"not within {timeout_s:.0f} s: {what}"
            await asyncio.sleep(0.02)

    async def main() -> dict[str, int]:
        writer_up.set()
        feed = VenueFeed("binance", plans, lambda plan, sink: venue.make_client(plan, settings, sink, 10),
                         {"BTCUSDT": "w"}, send, "p", FeedOptions(idle_timeout_s=IDLE_TIMEOUT_S), flush_s=0.1,
                         max_pending_rows=200)
        conn = feed.connections[0]
        feed.start()
        try:
            await until(lambda: feed.outbox.sent_rows > 0, "the writer acknowledged rows")
            writer_up.clear()                   # the writer stalls: the gate must hold the reader
            await until(lambda: conn.stats.gated, "the backpressure gate closed")
            held = {"pending": feed.stats().pending_rows, "frames": feed.frames}
            await until(lambda: feed.outbox.pending_rows >= 200 and not feed.buffers.rows,
                        "the buffered rows moved into the outbox")
            assert conn.stats.gated and feed.frames == held["frames"], "the reader read on past the gate"
            writer_up.set()                     # ... and catches up: the reader must read on
            await until(lambda: not conn.stats.gated and feed.frames > held["frames"] + 50,
                        "the reader read 50 frames after the writer caught up")
            return held
        finally:
            feed.stop_event.set()               # (a stuck reader is cancelled when the loop closes)

    try:
        held = asyncio.run(main())
    finally:
        thread.stop()
    assert held["pending"] >= 200, f"the gate closed with only {held['pending']} rows pending (bound 200)"
