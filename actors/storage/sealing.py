"""When a writer seals: the clock and the schedule around :class:`~actors.storage.writer.SymbolWriterCore`.

A :class:`SealingWriter` owns one core behind a lock (writes and seals never interleave) and
decides when periods are over:

* ``clock="wall"`` (live and simulated feeds): a timer thread seals, once a second, every
  period that ended ``grace_ns`` ago by the wall clock;
* ``clock="data"`` (replays): time is the newest ``ts_local`` written, so a recording from
  2024 seals its hours as the replay passes them, not two years late.

A seal that fails (disk full, a damaged file in the way) is logged and retried at the next
tick; the spool keeps the rows meanwhile. ``on_sealed`` is told about every sealed file (the
actor counts them and pokes the backup).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pyarrow as pa

from actors.logs import get_logger
from actors.storage.writer import SymbolWriterCore

log = get_logger("writer")


class SealingWriter:
    """A writer core with its sealing schedule (see module docstring)."""

    def __init__(self, core: SymbolWriterCore, grace_ns: int, clock: str = "wall",
                 on_sealed: Callable[[list[dict]], None] | None = None, tick_s: float = 1.0) -> None:
        if clock not in ("wall", "data"):
            raise ValueError(f"clock must be 'wall' or 'data', not {clock!r}")
        self.core, self.grace_ns, self.clock = core, grace_ns, clock
        self.on_sealed = on_sealed or (lambda records: None)
        self.lock = threading.Lock()
        self.recovered = core.recover()
        self._stop = threading.Event()
        if clock == "wall":
            threading.Thread(target=self._tick, args=(tick_s,), daemon=True, name="seal-timer").start()
        else:
            self.seal_due()

    def _now(self) -> int | None:
        return time.time_ns() if self.clock == "wall" else self.core.max_ts_local

    def _tick(self, tick_s: float) -> None:
        while not self._stop.wait(tick_s):
            self.seal_due()

    def write(self, producer: str, seq: int, batches: dict[tuple[str, str], pa.RecordBatch]) -> bool:
        """Make the rows durable (then acknowledge); False for an already-durable re-send."""
        with self.lock:
            try:
                fresh = self.core.write(producer, seq, batches)
            except OSError as exc:    # disk full, I/O error: the socket keeps the rows and re-sends
                log.error(f"write failed, rows kept by the socket and re-sent: {exc}",
                          extra={"writer": self.core.writer_id})
                raise
            if self.clock == "data":
                self._seal_locked(self._now())
        return fresh

    def seal_due(self, now_ns: int | None = None) -> list[dict]:
        """Seal the periods over by ``now_ns`` (default: this writer's clock)."""
        with self.lock:
            return self._seal_locked(now_ns if now_ns is not None else self._now())

    def seal_all(self) -> list[dict]:
        """Seal every open period (end of a finite run); errors propagate."""
        with self.lock:
            return self._announce(self.core.seal_all())

    def _seal_locked(self, now_ns: int | None) -> list[dict]:
        if now_ns is None:
            return []
        try:
            return self._announce(self.core.seal_due(now_ns, self.grace_ns))
        except Exception as exc:  # keep serving; the spool stays and sealing is retried
            log.error(f"seal failed (retried): {exc}", extra={"writer": self.core.writer_id})
            return []

    def _announce(self, records: list[dict]) -> list[dict]:
        if records:
            self.on_sealed(records)
        return records

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {**self.core.stats(), "recovered": self.recovered}

    def stop(self) -> None:
        self._stop.set()
