"""Exactly-once hand-over of row batches to the writers: the delivery half of a venue socket.

Rows are queued per writer. For each writer at most one call is in flight, so calls arrive in
order; everything queued meanwhile is merged into the next call. Every call carries
``(producer, seq)``; a call that fails (writer error, writer process restarting) is sent again
with the SAME sequence number until it is acknowledged, so a writer that already made it
durable drops the re-send and every row lands exactly once. Rows waiting for a slow writer are
bounded: :meth:`Outbox.wait_for_room` blocks the reader once ``max_pending_rows`` are queued
or in flight (backpressure instead of unbounded memory).

No Ray here: the transport is the ``send`` coroutine given to the constructor
(``send(writer, producer, seq, batches)``; the socket actor passes a Ray actor call).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import pyarrow as pa

from actors.logs import get_logger

log = get_logger("outbox")

Batches = dict[tuple[str, str], pa.RecordBatch]          # (symbol, channel) -> rows
Transport = Callable[[str, str, int, Batches], Awaitable[Any]]


def describe_failure(exc: BaseException) -> str:
    """``Type: message`` of the error behind a failed call (a wrapped remote error's cause)."""
    cause = getattr(exc, "cause", None)
    inner = cause if isinstance(cause, BaseException) else exc
    text = " ".join(str(inner).split()) or type(inner).__name__
    return f"{type(inner).__name__}: {text}"[:1000]


@dataclass
class _Queue:
    parts: list[Batches] = field(default_factory=list)
    rows: int = 0              # queued + in flight
    seq: int = 0               # last sequence number used
    sending: asyncio.Task | None = None


class Outbox:
    """Per-writer queues with ordered, acknowledged, exactly-once delivery (see module docstring)."""

    def __init__(self, producer: str, writers: list[str], send: Transport, max_pending_rows: int = 200_000,
                 retry_min_s: float = 0.2, retry_max_s: float = 10.0, tags: dict | None = None) -> None:
        self.producer = producer
        self.send = send
        self.max_pending_rows = max_pending_rows
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.tags = tags or {}
        self.queues = {name: _Queue() for name in writers}
        self.sent_rows = 0
        self.failures = 0
        self.pending_rows = 0      # rows queued or in flight, over all writers

    def has_room(self, extra_rows: int = 0) -> bool:
        """True while at most ``max_pending_rows`` (plus ``extra_rows`` buffered elsewhere) wait."""
        return self.pending_rows + extra_rows <= self.max_pending_rows

    def put(self, writer: str, batches: Batches) -> None:
        """Queue rows for ``writer`` and make sure a sender is running for it."""
        queue = self.queues[writer]
        queue.parts.append(batches)
        rows = sum(b.num_rows for b in batches.values())
        queue.rows += rows
        self.pending_rows += rows
        if queue.sending is None:
            queue.sending = asyncio.ensure_future(self._deliver(writer, queue))

    async def wait_for_room(self, buffered_elsewhere: Callable[[], int] = lambda: 0) -> None:
        """Block while more than ``max_pending_rows`` rows (plus those ``buffered_elsewhere()``
        reports, asked again at every check) wait."""
        while not self.has_room(buffered_elsewhere()):
            await asyncio.sleep(0.02)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return all(not q.parts and q.sending is None for q in self.queues.values())

    async def drain(self, timeout_s: float = 120.0) -> bool:
        """Wait until every queued row was acknowledged; False at the timeout."""
        deadline = time.monotonic() + timeout_s
        while not self.idle:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _deliver(self, writer: str, queue: _Queue) -> None:
        """Send everything queued for one writer, one call at a time, each until acknowledged."""
        try:
            while queue.parts:
                parts, queue.parts = queue.parts, []
                batches = merge(parts)
                rows = sum(b.num_rows for b in batches.values())
                queue.seq += 1
                await self._call_until_acknowledged(writer, queue.seq, batches)
                queue.rows -= rows
                self.pending_rows -= rows
                self.sent_rows += rows
        finally:
            queue.sending = None

    async def _call_until_acknowledged(self, writer: str, seq: int, batches: Batches) -> None:
        delay = self.retry_min_s
        while True:
            try:
                await self.send(writer, self.producer, seq, batches)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # writer error or unavailable: keep the rows, same seq again
                self.failures += 1
                log.error(f"write to {writer} failed (will retry): {describe_failure(exc)}", extra=self.tags)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)


def merge(parts: list[Batches]) -> Batches:
    """Several queued parts as one call: batches of the same stream concatenated in order."""
    merged: dict[tuple[str, str], list[pa.RecordBatch]] = {}
    for part in parts:
        for key, batch in part.items():
            merged.setdefault(key, []).append(batch)
    return {key: batches[0] if len(batches) == 1 else pa.concat_batches(batches)
            for key, batches in merged.items()}
