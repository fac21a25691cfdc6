"""Drive a venue's real client code (FeedConnection + VenueClient) against its loopback server."""
from __future__ import annotations

import asyncio

from actors.feed.connection import FeedConnection, FeedOptions
from actors.feed.records import ListSink
from actors.venues.base import Endpoints
from actors.venues.sim.server import ServerThread

CHANNELS = ["l2book", "trades"]


class Harness:
    """Run FeedConnections (asyncio, this thread) against a loopback server (its own thread)."""

    def __init__(self, module, server, symbols, cfg=None, depth=10, replay_clock=False, idle_timeout_s=60.0):
        self.server = server
        self.thread = ServerThread(server).start()
        self.cfg = cfg if cfg is not None else {}
        endpoints = Endpoints(server.ws_base, server.rest_base)
        self.sink = ListSink()
        self.conns = [FeedConnection(plan, module.make_client(plan, self.cfg, self.sink, depth),
                                     FeedOptions(replay_clock=replay_clock, backoff_min_s=0.1, backoff_max_s=0.3,
                                                 idle_timeout_s=idle_timeout_s))
                      for plan in module.plan_connections(self.cfg, endpoints, symbols, CHANNELS, depth)]

    def run(self, seconds, actions=(), until=None):
        async def main():
            stop = asyncio.Event()
            tasks = [asyncio.ensure_future(c.run(stop)) for c in self.conns]
            t0 = asyncio.get_running_loop().time()
            pending = sorted(actions, key=lambda a: a[0])
            while asyncio.get_running_loop().time() - t0 < seconds:
                if until is not None and until():
                    break
                now = asyncio.get_running_loop().time() - t0
                while pending and pending[0][0] <= now:
                    _, fn = pending.pop(0)
                    await asyncio.to_thread(fn)
                await asyncio.sleep(0.05)
            if hasattr(self.server, "pause"):
                self.server.call(self.server.pause)
                await asyncio.sleep(0.3)      # a step under way finishes its sends
            # everything the server sent is read before we stop
            for _ in range(200):
                if sum(c.stats.frames for c in self.conns) >= self.server.frames_sent:
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait(tasks, timeout=10)
        try:
            asyncio.run(main())
        finally:
            self.thread.stop()
        return self.sink


def check_sim_truth(sink, server, symbols, id_of=lambda t: str(t.trade_id)):
    """Trades equal what the simulator sent (none missing, none doubled); every book row is true."""
    for sym in symbols:
        truth = server.truth(sym)
        ids = [t[3] for t in sink.trades if t[0] == sym]
        assert len(ids) == len(set(ids)), f"{sym}: doubled trades"
        want = {id_of(t): (t.price, t.size, t.side) for t in truth.trades}
        got = {t[3]: (t[4], t[5], t[6]) for t in sink.trades if t[0] == sym}
        assert got == want and want, f"{sym}: {len(set(want) - set(got))} missing, {len(set(got) - set(want))} extra"
        books = [b for b in sink.books if b[0] == sym]
        assert books
        for b in books:
            assert tuple(b[4:8]) == tuple(list(x) for x in truth.books[b[3]]), f"{sym}: wrong book at u={b[3]}"


