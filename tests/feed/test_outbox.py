"""Outbox: ordered, acknowledged, exactly-once delivery to writers (plain asyncio, no Ray).

The receiving side is the real SymbolStore; the transport is a coroutine that can fail
the way a Ray call to a restarting writer does (after or before the rows became durable).
"""
from __future__ import annotations

import asyncio

from actors.feed.outbox import Outbox
from actors.feed.records import StreamBuffers
from actors.storage.layout import NS
from writer_fixtures import SYM, T0, make_core, trade_ids


def trades(first: int, n: int, t0: int = T0) -> dict:
    sink = StreamBuffers()
    for k in range(n):
        sink.trade(SYM, t0 + (first + k) * 1_000_000, None, str(first + k), 1.0, 1.0, 1)
    return sink.take()


class Transport:
    """Delivers to a real writer core; ``fail_after_durable`` / ``fail_before`` inject failures."""

    def __init__(self, core) -> None:
        self.core = core
        self.calls: list[tuple[str, int, int]] = []
        self.fail_after_durable = 0
        self.fail_before = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, writer, producer, seq, batches):
        if self.gate is not None:
            await self.gate.wait()
        rows = sum(b.num_rows for b in batches.values())
        self.calls.append((producer, seq, rows))
        if self.fail_before:
            self.fail_before -= 1
            raise ConnectionError("writer unavailable (restarting)")
        fresh = self.core.write(producer, seq, batches)
        if self.fail_after_durable:
            self.fail_after_durable -= 1
            raise ConnectionError("writer died after the rows were durable, before the ack")
        return fresh


def run(coro):
    return asyncio.run(coro)


def test_calls_are_ordered_merged_and_numbered(tmp_path):
    transport = Transport(make_core(tmp_path))

    async def main():
        transport.gate = asyncio.Event()
        outbox = Outbox("p1", ["w"], transport, retry_min_s=0.01)
        outbox.put("w", trades(0, 10))          # first call: in flight (held at the gate)
        await asyncio.sleep(0.01)
        for i in range(1, 5):                   # queued meanwhile: merged into the second call
            outbox.put("w", trades(i * 10, 10))
        transport.gate.set()
        assert await outbox.drain(5)
        return outbox

    outbox = run(main())
    assert [(seq, rows) for _, seq, rows in transport.calls] == [(1, 10), (2, 40)]
    assert outbox.sent_rows == 50 and outbox.pending_rows == 0
    transport.core.seal_all()
    assert list(map(int, trade_ids(tmp_path))) == list(range(50))


def test_resend_after_a_writer_restart_lands_once(tmp_path):
    transport = Transport(make_core(tmp_path))
    transport.fail_after_durable = 2            # durable, but the ack is lost twice
    transport.fail_before = 1                   # then the writer is down once

    async def main():
        outbox = Outbox("p1", ["w"], transport, retry_min_s=0.01)
        outbox.put("w", trades(0, 10))
        assert await outbox.drain(5)
        outbox.put("w", trades(10, 10))
        assert await outbox.drain(5)
        return outbox

    outbox = run(main())
    assert [seq for _, seq, _ in transport.calls] == [1, 1, 1, 1, 2], "a retry must keep its sequence number"
    assert outbox.failures == 3
    transport.core.seal_all()
    assert sorted(map(int, trade_ids(tmp_path))) == list(range(20))


def test_bound_reached_blocks_the_reader_until_the_writer_catches_up(tmp_path):
    transport = Transport(make_core(tmp_path))

    async def main():
        transport.gate = asyncio.Event()
        outbox = Outbox("p1", ["w"], transport, max_pending_rows=25)
        outbox.put("w", trades(0, 20))
        outbox.put("w", trades(20, 10))
        waiter = asyncio.ensure_future(outbox.wait_for_room())
        await asyncio.sleep(0.1)
        blocked = not waiter.done()
        transport.gate.set()                    # the writer answers again
        await asyncio.wait_for(waiter, 5)
        return blocked, outbox

    blocked, outbox = run(main())
    assert blocked and outbox.pending_rows <= 25


def test_drain_times_out_on_a_stuck_writer_and_keeps_the_rows(tmp_path):
    transport = Transport(make_core(tmp_path))

    async def main():
        transport.gate = asyncio.Event()
        outbox = Outbox("p1", ["a", "b"], transport)
        outbox.put("a", trades(0, 5))
        drained = await outbox.drain(0.2)
        pending = outbox.pending_rows
        transport.gate.set()
        return drained, pending, await outbox.drain(5)

    drained, pending, later = run(main())
    assert (drained, pending, later) == (False, 5, True)


def test_writers_are_independent(tmp_path):
    """One slow writer does not hold back the others."""
    writers = ["a", "b", "c"]
    cores = {w: make_core(tmp_path / w, writer_id=w) for w in writers}
    seen: dict[str, int] = {w: 0 for w in writers}

    async def main():
        gate = asyncio.Event()

        async def send(writer, producer, seq, batches):
            if writer == "a":
                await gate.wait()
            cores[writer].write(producer, seq, batches)
            seen[writer] += sum(b.num_rows for b in batches.values())

        outbox = Outbox("p1", writers, send)
        for w in writers:
            outbox.put(w, trades(0, 7, T0 + NS))
        await asyncio.sleep(0.1)
        before = dict(seen)
        gate.set()
        assert await outbox.drain(5)
        return before

    before = run(main())
    assert before == {"a": 0, "b": 7, "c": 7} and seen == {"a": 7, "b": 7, "c": 7}
