"""When a writer seals: the clock and the schedule around :class:`~actors.storage.writer.SymbolStore`.

A :class:`ScheduledStore` owns one core behind a lock (writes and seals never interleave) and
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

import os
import threading
import time
from typing import Any, Callable

import pyarrow as pa

from actors.logs import get_logger
from actors.storage.writer import SymbolStore, WriterStats

log = get_logger("writer")


class ScheduledStore:
    """One :class:`~actors.storage.writer.SymbolStore` behind a lock, with its sealing schedule (see module docstring)."""

    def __init__(self, core: SymbolStore, grace_ns: int, clock: str = "wall",
                 on_sealed: Callable[[list[dict]], None] | None = None, tick_s: float = 1.0,
                 timer: bool = True) -> None:
        if clock not in ("wall", "data"):
            raise ValueError(f"clock must be 'wall' or 'data', not {clock!r}")
        self.core, self.grace_ns, self.clock = core, grace_ns, clock
        self.on_sealed = on_sealed or (lambda records: None)
        self.lock = threading.Lock()
        self.recovered = core.recover()
        self._stop = threading.Event()
        if clock == "wall":
            if timer:      # a StoreGroup runs one timer for all its writers instead
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

    def stats(self) -> WriterStats:
        """The store's stats, with its recovered spools (read under the lock)."""
        with self.lock:
            stats = self.core.stats()
        stats.recovered_spools = self.recovered.get("spools", 0)
        return stats

    def stop(self) -> None:
        self._stop.set()


class CatalogBuffer:
    """The catalog as the writers of a :class:`StoreGroup` see it: sealed-file rows are collected
    and committed in one ``upsert`` per sealing round (:meth:`flush`), not one per symbol.

    A failed commit keeps the rows and retries at the next round (files are sealed and safe
    either way). Each core's seal journal forgets its rows once they are committed; rows of a
    round cut short by a crash are in the journal and committed when the folder is recovered.
    """

    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog
        self.pending: list[tuple[dict, Callable[[list[dict]], None] | None]] = []
        self.lock = threading.Lock()

    def upsert(self, records: list[dict], on_committed: Callable[[list[dict]], None] | None = None) -> None:
        with self.lock:
            self.pending.extend((rec, on_committed) for rec in records)

    def get(self, key: str) -> dict | None:
        with self.lock:
            for rec, _ in self.pending:
                if rec["key"] == key:
                    return rec
        return self.catalog.get(key)

    def flush(self) -> int:
        """Commit the collected rows (one call); the number committed (0 on failure, kept for later)."""
        with self.lock:
            pending, self.pending = self.pending, []
        if not pending:
            return 0
        try:
            self.catalog.upsert([rec for rec, _ in pending])
        except Exception as exc:
            log.error(f"catalog update failed for {len(pending)} file(s), will retry: {exc}")
            with self.lock:
                self.pending[:0] = pending
            return 0
        by_callback: dict[Any, list[dict]] = {}
        for rec, callback in pending:
            if callback is not None:
                by_callback.setdefault(callback, []).append(rec)
        for callback, records in by_callback.items():
            callback(records)
        return len(pending)


class StoreGroup:
    """Many logical writers in one process: one :class:`ScheduledStore` per (venue, symbol).

    Each symbol keeps its own core (spool folder, watermarks, files); the group only routes a
    call's batches to the symbols' writers (each sees the call's ``(producer, seq)``, so a
    re-send after a crash in the middle of a call is dropped by the symbols that made it
    durable and written by the others) and runs one sealing timer for all of them. Cores built
    with ``catalog`` (a :class:`CatalogBuffer`) have their files recorded once per round.
    """

    def __init__(self, make_core: Callable[[str, str], SymbolStore], streams: list[tuple[str, str]],
                 grace_ns: int, clock: str = "wall", on_sealed: Callable[[list[dict]], None] | None = None,
                 tick_s: float = 1.0, catalog: CatalogBuffer | None = None) -> None:
        self.catalog = catalog
        self.writers = {(venue, symbol): ScheduledStore(make_core(venue, symbol), grace_ns, clock, on_sealed,
                                                       timer=False)
                        for venue, symbol in streams}
        self._stop = threading.Event()
        if clock == "wall":
            threading.Thread(target=self._tick, args=(tick_s,), daemon=True, name="seal-timer").start()

    def _tick(self, tick_s: float) -> None:
        while not self._stop.wait(tick_s):
            self.seal_due()

    def write(self, venue: str, producer: str, seq: int,
              batches: dict[tuple[str, str], pa.RecordBatch]) -> dict[tuple[str, str], int]:
        """Make a venue's batches durable per symbol; rows newly written per (symbol, channel)."""
        by_symbol: dict[str, dict[tuple[str, str], pa.RecordBatch]] = {}
        for key, batch in batches.items():
            by_symbol.setdefault(key[0], {})[key] = batch
        fresh: dict[tuple[str, str], int] = {}
        for symbol, part in by_symbol.items():
            writer = self.writers.get((venue, symbol))
            if writer is None:
                log.error(f"rejected {sum(b.num_rows for b in part.values())} rows: {venue} {symbol} is not "
                          "served by this writer process")
                continue
            if writer.write(producer, seq, part):
                fresh.update({key: batch.num_rows for key, batch in part.items()})
        if self.catalog is not None and self.writers and next(iter(self.writers.values())).clock == "data":
            self.catalog.flush()            # replays seal while writing
        return fresh

    def recent_trade_ids(self, venue: str, symbols: list[str]) -> dict[str, list[str]]:
        """The newest durable trade ids of each of ``symbols`` this group writes (see the core's)."""
        return {symbol: self.writers[(venue, symbol)].core.recent_trade_ids(symbol)
                for symbol in symbols if (venue, symbol) in self.writers}

    def seal_due(self, now_ns: int | None = None) -> list[dict]:
        """Seal the periods that are over, in every writer."""
        return self._flushed([rec for writer in self.writers.values() for rec in writer.seal_due(now_ns)])

    def seal_all(self) -> list[dict]:
        """Seal every open period of every writer (end of a finite run)."""
        return self._flushed([rec for writer in self.writers.values() for rec in writer.seal_all()])

    def _flushed(self, records: list[dict]) -> list[dict]:
        if self.catalog is not None:
            self.catalog.flush()
        return records

    def commit_recovered(self) -> int:
        """Commit what the writers' journals still name (a round cut short by a crash); how many."""
        count = 0
        for writer in self.writers.values():
            count += len(writer.core.pending_records)
            writer.core.commit_catalog()
        if self.catalog is not None:
            self.catalog.flush()
        if count:
            log.warning(f"recorded {count} sealed file(s) the catalog did not have yet (seal journal)")
        return count

    @property
    def spool_bytes(self) -> int:
        return sum(writer.core.spool_bytes for writer in self.writers.values())

    def stats(self) -> WriterStats:
        """Counters summed over the writers, recovered spools, ``symbols`` served and the worst
        symbol's receive-to-durable lag (``durable_lag_ms``: largest p50 / p99 / max)."""
        return WriterStats.summed([writer.stats() for writer in self.writers.values()], symbols=len(self.writers))

    def stop(self) -> None:
        self._stop.set()
