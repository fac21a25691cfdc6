"""Drive a venue's real client code (FeedConnection + VenueClient) against its loopback server."""
from __future__ import annotations

import asyncio

from actors.feed.connection import FeedConnection, FeedOptions
from actors.feed.records import ListSink
from actors.venues.base import Endpoints
from actors.venues.sim.server import ServerThread, SimulatedVenue

CHANNELS = ["l2book", "trades"]
MS = 1_000_000


class Harness:
    """Run FeedConnections (asyncio, this thread) against a loopback server (its own thread)."""

    def __init__(self, venue, server, symbols, settings=None, depth=10, replay_clock=False, idle_timeout_s=60.0,
                 sink=None, channels=CHANNELS):
        self.server = server
        self.thread = ServerThread(server).start()
        self.settings = settings if settings is not None else venue.settings({})
        endpoints = Endpoints(server.ws_base, server.rest_base)
        self.sink = sink if sink is not None else ListSink()
        self.conns = [FeedConnection(plan, venue.make_client(plan, self.settings, self.sink, depth),
                                     FeedOptions(replay_clock=replay_clock, backoff_min_s=0.1, backoff_max_s=0.3,
                                                 idle_timeout_s=idle_timeout_s))
                      for plan in venue.plan_connections(self.settings, endpoints, symbols, list(channels), depth)]

    def run(self, until, steps=(), timeout_s=90.0):
        """Run the steps in order (an action from a worker thread, then wait for its condition),
        then until ``until()`` holds; stop the server's market and read all it sent; the sink.

        A condition not met within ``timeout_s`` fails the test naming it.
        """
        async def wait_for(condition, what):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while not condition():
                assert loop.time() < deadline, f"not reached within {timeout_s:.0f}s: {what}"
                await asyncio.sleep(0.02)

        async def main():
            stop = asyncio.Event()
            tasks = [asyncio.ensure_future(c.run(stop)) for c in self.conns]
            try:
                for n, (action, condition) in enumerate(steps):
                    if action is not None:
                        await asyncio.to_thread(action)
                    await wait_for(condition, f"step {n + 1}")
                await wait_for(until, "the run's end condition")
                if isinstance(self.server, SimulatedVenue):
                    await asyncio.to_thread(self.server.halt)
                # everything the server sent on the open connections is read before we stop
                await wait_for(lambda: sum(c.stats.frames_this_connection for c in self.conns)
                               >= self.server.call(self.server.sent_on_open_sessions), "all frames read")
            finally:
                stop.set()
                await asyncio.wait(tasks, timeout=10)
        try:
            asyncio.run(main())
        finally:
            self.thread.stop()
        return self.sink


def events(sink, kind, symbol=None, text=""):
    """Indexes into ``sink.events`` of the events of ``kind`` (of ``symbol``, detail containing ``text``)."""
    return [i for i, e in enumerate(sink.events)
            if e[3] == kind and (symbol is None or e[0] == symbol) and text in e[4]]


def synced_after_last_connect(sink, symbols, rows=1):
    """Every symbol's book synced since its latest ``connect`` and ``rows`` book rows written since."""
    for sym in symbols:
        connects = events(sink, "connect", sym)
        if not connects:
            return False
        since = sink.events[connects[-1]][1]
        if not [i for i in events(sink, "snapshot", sym) + events(sink, "resync", sym) if i > connects[-1]]:
            return False
        if sum(1 for b in sink.books if b[0] == sym and b[1] >= since) < rows:
            return False
    return True


def check_sim_truth(sink, server, symbols, id_of=lambda t: str(t.trade_id), book_key=lambda b: b[3]):
    """Trades equal what the simulator sent, in order (none missing, none doubled); every book row is true."""
    for sym in symbols:
        truth = server.truth(sym)
        ids = [t[3] for t in sink.trades if t[0] == sym]
        assert len(ids) == len(set(ids)), f"{sym}: doubled trades"
        got = [(t[4], t[5], t[6]) for t in sink.trades if t[0] == sym]
        assert got == [(t.price, t.size, t.side) for t in truth.trades] and got, f"{sym}: trades differ from truth"
        if id_of is not None:
            want = {id_of(t): (t.price, t.size, t.side) for t in truth.trades}
            assert {t[3]: (t[4], t[5], t[6]) for t in sink.trades if t[0] == sym} == want, f"{sym}: trade ids"
        books = [b for b in sink.books if b[0] == sym]
        assert books
        for b in books:
            assert tuple(b[4:8]) == tuple(list(x) for x in truth.books[book_key(b)]), f"{sym}: wrong book {b[1:4]}"
