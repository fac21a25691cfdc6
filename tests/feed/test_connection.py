"""The websocket loop says loudly what a quiet feed hides: a venue that refuses every connection
(HTTP 4xx at the handshake) and a venue that acknowledges but never sends market data."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from http import HTTPStatus

from actors.cli.console import venue_state
from actors.feed.connection import FeedConnection, FeedOptions
from actors.feed.records import ListSink
from actors.feed.venue_feed import VenueFeedStats
from actors.venues import get_venue
from actors.venues.base import Endpoints
from actors.venues.binance import BinanceSimServer
from actors.venues.sim.server import ServerThread
from venue_harness import CHANNELS

binance = get_venue("binance")


class RefusingBinance(BinanceSimServer):
    """Binance's simulator answering HTTP 400 to every websocket handshake while ``refusing``
    (as Paradex does for a client that does not ask for its binary protocol)."""

    refusing = True
    attempts = 0

    async def _process_request(self, connection, request):
        if request.headers.get("Upgrade", "").lower() == "websocket":
            self.attempts += 1
            if self.refusing:
                return connection.respond(HTTPStatus.BAD_REQUEST, "unsupported protocol\n")
        return await super()._process_request(connection, request)


def connection(server, plan_path=None, **options):
    settings = binance.settings({})
    plan, = binance.plan_connections(settings, Endpoints(server.ws_base, server.rest_base), ["BTCUSDT"],
                                     ["trades"], 10)
    if plan_path:          # the same subscriptions on another routed path
        plan = replace(plan, url=plan.url.replace("/public/", plan_path))
    sink = ListSink()
    client = binance.make_client(plan, settings, sink, 10)
    opts = FeedOptions(backoff_min_s=0.05, backoff_max_s=0.2, tags={"exchange": "binance"}, **options)
    return FeedConnection(plan, client, opts), sink


def run_until(conn, condition, timeout_s=30.0):
    async def main():
        stop = asyncio.Event()
        task = asyncio.ensure_future(conn.run(stop))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while not condition():
                assert loop.time() < deadline, "condition not reached"
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.wait([task], timeout=10)
    asyncio.run(main())


def test_a_refused_connection_is_an_error_once_a_minute_with_capped_backoff(caplog):
    server = RefusingBinance(["BTCUSDT"], {"messages_per_s": 200}, 10)
    thread = ServerThread(server).start()
    try:
        conn, sink = connection(server)
        with caplog.at_level(logging.WARNING, logger="tickarchive"):
            run_until(conn, lambda: server.attempts >= 8)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]             # at most once a minute
        text = errors[0].getMessage()
        assert "binance public-0" in text and conn.plan.url in text and "HTTP 400" in text
        assert not [r for r in caplog.records if r.levelno == logging.WARNING and "reconnecting" in r.getMessage()]
        assert conn.stats.refused == "HTTP 400" and conn.stats.connects == 0
        assert venue_state(VenueFeedStats(connected=[False], refused=[conn.stats.refused])) == "refused (HTTP 400)"
        server.refusing = False                      # the venue accepts again: the state clears
        run_until(conn, lambda: sink.trades)
        assert conn.stats.refused == "" and conn.stats.connects == 1
    finally:
        thread.stop()


def test_a_venue_that_acknowledges_but_never_sends_data_is_an_error(caplog):
    """Trades subscribed on Binance's /market route (they live on /public since 2026-04): acknowledged,
    never delivered. The idle watchdog reconnects; after three silent connections in a row it says so."""
    server = BinanceSimServer(["BTCUSDT"], {"messages_per_s": 200}, 10)
    thread = ServerThread(server).start()
    try:
        conn, sink = connection(server, plan_path="/market/", idle_timeout_s=0.3)
        with caplog.at_level(logging.WARNING, logger="tickarchive"):
            run_until(conn, lambda: conn.stats.connects >= 5)
        assert not sink.trades and conn.stats.silent_reconnects >= 3
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "3 connections in a row" in errors[0] and "no market data" in errors[0], errors
        assert venue_state(VenueFeedStats(connected=[True], silent_reconnects=conn.stats.silent_reconnects)) == "1/1 silent"
    finally:
        thread.stop()
