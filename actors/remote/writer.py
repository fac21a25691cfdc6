"""``WriterProcess``: the Ray actor that makes many symbols' rows durable in one process.

It holds a :class:`~actors.storage.sealing.StoreGroup`: one logical writer per (venue, symbol),
each with its own spool folder, watermarks and files (:class:`~actors.storage.writer.SymbolStore`),
and one sealing timer. It writes under its node's archive root
(:func:`actors.remote.placement.node_root`) and records sealed files in the cluster's catalog
(:class:`~actors.remote.catalog.RemoteCatalog`). Ray restarts it after a crash
(``max_restarts=-1``) and retries the call in flight (``max_task_retries=-1``); the new process
recovers every symbol's spool and drops re-sent calls already durable. It counts rows, files
and bytes as metrics and pokes this node's backup actor after each seal.
"""
from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
import ray
from ray.util.metrics import Counter, Gauge

from actors.logs import setup_actor_logging
from actors.remote import NAMESPACE, core_id
from actors.remote.options import POLICIES
from actors.remote.backup import poke_backup
from actors.remote.catalog import RemoteCatalog
from actors.remote.placement import node_name, node_root
from actors.storage.recovery import discard_spools, sealed_in_spools, unsealed_calls
from actors.storage.sealing import CatalogBuffer, StoreGroup
from actors.storage.writer import SymbolStore, WriterStats

TAGS = ("exchange", "channel")


@ray.remote(**POLICIES["writer"])
class WriterProcess:
    """Durable writers of many (venue, market, symbol) streams (see module docstring)."""

    def __init__(self, root: str, streams: list[tuple[str, str, str]], depth: int, rollover_ns: int,
                 seal_grace_ns: int, name: str, clock: str = "wall", log_level: str = "INFO") -> None:
        self.root, self.name = node_root(root), name
        setup_actor_logging(log_level, self.root, name.replace(":", "_"))
        self.rows = Counter("tickarchive_rows_written", "rows made durable", tag_keys=TAGS)
        self.files = Counter("tickarchive_files_sealed", "Parquet files sealed", tag_keys=TAGS)
        self.bytes = Counter("tickarchive_bytes_sealed", "Parquet bytes sealed", tag_keys=TAGS)
        self.spool = Gauge("tickarchive_spool_bytes", "bytes in open spools", tag_keys=("writer",))
        market = {(venue, symbol): mkt for venue, mkt, symbol in streams}
        catalog, node = CatalogBuffer(RemoteCatalog()), node_name()

        def make_core(venue: str, symbol: str) -> SymbolStore:
            mkt = market[(venue, symbol)]
            return SymbolStore(self.root, venue, mkt, [symbol], depth, rollover_ns,
                                    core_id(venue, mkt, symbol), catalog, node=node)

        self.group = StoreGroup(make_core, list(market), seal_grace_ns, clock, on_sealed=self._sealed,
                                 catalog=catalog)
        self.group.commit_recovered()

    def _sealed(self, records: list[dict]) -> None:
        poke_backup()
        for rec in records:
            tags = {"exchange": rec["exchange"], "channel": rec["channel"]}
            self.files.inc(1.0, tags=tags)
            self.bytes.inc(float(rec["bytes"]), tags=tags)

    def write(self, venue: str, producer: str, seq: int, batches: dict[tuple[str, str], pa.RecordBatch]) -> bool:
        """Make a venue's batches durable, then acknowledge; False for an already-durable re-send."""
        fresh = self.group.write(venue, producer, seq, batches)
        for (_, channel), rows in fresh.items():
            self.rows.inc(float(rows), tags={"exchange": venue, "channel": channel})
        self.spool.set(float(self.group.spool_bytes), tags={"writer": self.name})
        return bool(fresh)

    def recent_trade_ids(self, venue: str, symbols: list[str]) -> dict[str, list[str]]:
        """The newest durable trade ids per symbol (a restarted socket process seeds its filter)."""
        return self.group.recent_trade_ids(venue, symbols)

    def seal_all(self) -> list[dict]:
        """Seal every open period (end of a finite run)."""
        return self.group.seal_all()

    def seal_due(self, now_ns: int | None = None) -> list[dict]:
        """Seal the periods that are over by ``now_ns`` (default: each writer's own clock)."""
        return self.group.seal_due(now_ns)

    def stats(self) -> WriterStats:
        """The group's stats with this process's pid and node."""
        stats = self.group.stats()
        stats.pid, stats.node = os.getpid(), ray.get_runtime_context().get_node_id()
        return stats


@ray.remote(**POLICIES["hand_over"])
def hand_over_spools(root: str, streams: list[tuple[str, str, str, str]], depth: int, rollover_ns: int) -> dict:
    """On a node that came back: hand its unsealed spools to the streams' current writers.

    ``streams``: (venue, market, symbol, writer name) of the streams now written elsewhere.
    Files this node sealed whose catalog commit its loss cut short (named in the seal journal, or
    sealed for a period whose spool is still here) are recorded in the catalog first. Then each
    acknowledged call left in this node's spools is written again through the stream's writer with
    its original producer and sequence number (exactly once, also if this task is retried), and
    the spool folder is deleted. Returns the files recorded, the calls and rows handed over.
    """
    from actors.storage.footer import describe_file
    from actors.storage.writer import SPOOL_DIR

    root, node = node_root(root), node_name()
    done = {"streams": 0, "calls": 0, "rows": 0, "recorded": 0}
    catalog = CatalogBuffer(RemoteCatalog())
    for venue, market, symbol, writer in streams:
        ident = core_id(venue, market, symbol)
        folder = os.path.join(root, SPOOL_DIR, ident)
        if not os.path.isdir(folder):
            continue
        core = SymbolStore(root, venue, market, [symbol], depth, rollover_ns, ident, catalog, node=node)
        core.recover()
        leftovers = [rel for rel in sealed_in_spools(core) if rel not in {r["key"] for r in core.pending_records}]
        known = catalog.catalog.get_many(leftovers) if leftovers else {}
        core.pending_records += [describe_file(root, rel) for rel in leftovers if rel not in known]
        recorded = len(core.pending_records)
        core.commit_catalog()
        if catalog.flush() < recorded:       # the catalog did not take them: keep the folder for next time
            raise RuntimeError(f"{ident}: the catalog did not record {recorded} sealed file(s); spools kept")
        done["recorded"] += recorded
        handle = ray.get_actor(writer, namespace=NAMESPACE)
        for producer, seq, batches in unsealed_calls(core):
            ray.get(handle.write.remote(venue, producer, seq, batches))
            done["calls"] += 1
            done["rows"] += sum(b.num_rows for b in batches.values())
        discard_spools(core)
        done["streams"] += 1
    return done
