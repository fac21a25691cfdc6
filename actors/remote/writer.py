"""``SymbolWriter``: the Ray actor around one :class:`~actors.storage.sealing.SealingWriter`.

Ray restarts it after a crash (``max_restarts=-1``) and retries the call in flight
(``max_task_retries=-1``); the new process recovers its spools and drops re-sent calls it
already made durable. It counts rows, files and bytes as metrics and pokes this node's backup
actor after each seal.
"""
from __future__ import annotations

import os
import socket as socketlib
from typing import Any

import pyarrow as pa
import ray
from ray.util.metrics import Counter, Gauge

from actors.logs import setup_actor_logging
from actors.remote.backup import poke_backup
from actors.storage.catalog import Catalog
from actors.storage.sealing import SealingWriter
from actors.storage.writer import SymbolWriterCore

TAGS = ("exchange", "channel")


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class SymbolWriter:
    """Durable writer of one symbol group (see module docstring)."""

    def __init__(self, root: str, exchange: str, market: str, symbols: list[str], depth: int,
                 rollover_ns: int, seal_grace_ns: int, writer_id: str, clock: str = "wall",
                 log_level: str = "INFO") -> None:
        setup_actor_logging(log_level, root, writer_id)
        self.exchange, self.writer_id = exchange, writer_id
        self.rows = Counter("tickarchive_rows_written", "rows made durable", tag_keys=TAGS)
        self.files = Counter("tickarchive_files_sealed", "Parquet files sealed", tag_keys=TAGS)
        self.bytes = Counter("tickarchive_bytes_sealed", "Parquet bytes sealed", tag_keys=TAGS)
        self.spool = Gauge("tickarchive_spool_bytes", "bytes in open spools", tag_keys=("writer",))
        core = SymbolWriterCore(root, exchange, market, list(symbols), depth, rollover_ns, writer_id,
                                Catalog(root), node=socketlib.gethostname())
        self.writer = SealingWriter(core, seal_grace_ns, clock, on_sealed=self._sealed)

    def _sealed(self, records: list[dict]) -> None:
        poke_backup()
        for rec in records:
            tags = {"exchange": rec["exchange"], "channel": rec["channel"]}
            self.files.inc(1.0, tags=tags)
            self.bytes.inc(float(rec["bytes"]), tags=tags)

    def write(self, producer: str, seq: int, batches: dict[tuple[str, str], pa.RecordBatch]) -> bool:
        """Make the batches durable, then acknowledge; False for an already-durable re-send."""
        fresh = self.writer.write(producer, seq, batches)
        if fresh:
            for (_, channel), batch in batches.items():
                self.rows.inc(float(batch.num_rows), tags={"exchange": self.exchange, "channel": channel})
        self.spool.set(float(self.writer.core.spool_bytes), tags={"writer": self.writer_id})
        return fresh

    def seal_all(self) -> list[dict]:
        """Seal every open period (end of a finite run)."""
        return self.writer.seal_all()

    def seal_due(self, now_ns: int | None = None) -> list[dict]:
        """Seal the periods that are over by ``now_ns`` (default: the writer's own clock)."""
        return self.writer.seal_due(now_ns)

    def stats(self) -> dict[str, Any]:
        return {**self.writer.stats(), "pid": os.getpid()}
