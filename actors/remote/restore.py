"""``restore``: the cluster's catalog owner and the named actor answering "this exchange, symbol,
channel, range" in-cluster and over Ray Client.

It runs on the head node (the catalog's LanceDB table lives under that node's archive root,
rebuilt from the files first if damaged) and holds an
:class:`~actors.storage.catalog.IndexedCatalog`: writers of every node record sealed files
through :meth:`RestoreActor.catalog` (see :mod:`actors.remote.catalog`), lookups come from the
in-memory index, and compaction runs here every ``storage.compact_every``. Queries are a thin
wrapper over :class:`actors.restore.restorer.Restorer` for the whole cluster: a file sealed on
another node is downloaded from the bucket if it is backed up, else copied from that node
(:mod:`actors.remote.fetch`), verified by SHA-256 either way; errors (unknown venue or symbol, bad
range, checksum mismatch, unsafe key, damaged file) come back as the Restorer raised them.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import ray

from actors.logs import get_logger, setup_actor_logging
from actors.remote import NAMESPACE, RESTORE
from actors.remote.catalog import METHODS
from actors.remote.fetch import fetch_missing
from actors.remote.options import POLICIES, orchestration_options
from actors.remote.placement import node_root

log = get_logger("restore")
COMPACT_AFTER_COMMITS = 200


@ray.remote(**POLICIES["restore"])
class RestoreActor:
    """The ``restore`` actor (see module docstring)."""

    def __init__(self, root: str, backup_section: dict | None, venues: list[str], log_level: str = "INFO",
                 compact_every_s: float = 600.0) -> None:
        from actors.restore.restorer import Restorer, bucket_from_section, prepare_catalog
        from actors.storage.catalog import IndexedCatalog

        self.root = node_root(root)
        setup_actor_logging(log_level, self.root, RESTORE)
        prepare_catalog(self.root)            # a damaged catalog is rebuilt before anything seals into it
        self.index = IndexedCatalog(self.root)
        try:
            bucket = bucket_from_section(backup_section or {}, self.root)
        except Exception as exc:    # serve the local archive; say once why the bucket is unavailable
            log.error(f"restore: bucket unavailable, serving local files only: {exc}")
            bucket = None
        self.restorer = Restorer(self.root, catalog=self.index, bucket=bucket, venues=venues)
        self._stop = threading.Event()
        threading.Thread(target=self._compact_every, args=(compact_every_s,), daemon=True).start()

    def _compact_every(self, seconds: float, commits: int = COMPACT_AFTER_COMMITS) -> None:
        """Compact every ``seconds``, or sooner once ``commits`` writes piled up (many symbols)."""
        last = time.monotonic()
        while not self._stop.wait(1.0):
            if self.index.commits < commits and time.monotonic() - last < seconds:
                continue
            last = time.monotonic()
            try:
                self.index.optimize()
            except Exception as exc:    # an optimisation; never stop serving for it
                log.warning(f"catalog compaction failed: {exc}")

    def catalog(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One catalog method (:data:`actors.remote.catalog.METHODS`) on the cluster's catalog."""
        if method not in METHODS:
            raise AttributeError(f"catalog has no method {method!r}")
        return getattr(self.index, method)(*args, **kwargs)

    def paths(self, exchange: str, symbol: str, channel: str, start: Any, end: Any, depth: int | None = None,
              market: str = "perp") -> list[dict]:
        """Files covering the range: key, period, size, sha256, local/remote (local: on this node)."""
        return [asdict(ref) for ref in self.restorer.paths(exchange, symbol, channel, start, end, depth, market)]

    def restore(self, exchange: str, symbol: str, channel: str, start: Any, end: Any, depth: int | None = None,
                market: str = "perp") -> list[str]:
        """Bring what is missing here (bucket, else the node that has it; verified); the range's local paths."""
        fetch_missing(self.root, self.restorer, self.index, exchange, symbol, channel, start, end, depth, market)
        return self.restorer.restore(exchange, symbol, channel, start, end, depth, market)

    def load(self, exchange: str, symbol: str, channel: str, start: Any, end: Any, depth: int | None = None,
             market: str = "perp", columns: list[str] | None = None) -> pa.Table:
        """Rows with ``start <= ts_local < end`` as an Arrow table (restoring files first)."""
        fetch_missing(self.root, self.restorer, self.index, exchange, symbol, channel, start, end, depth, market)
        return self.restorer.load(exchange, symbol, channel, start, end, depth, market, columns)

    def overview(self, **filters: Any) -> list[dict]:
        """Every stream of the cluster's catalog (``mode=status ray=cluster`` without a symbol)."""
        from actors.restore.overview import archive_overview

        return [asdict(st) for st in archive_overview(self.root, self.index, **filters)]

    def coverage(self, exchange: str, symbol: str, start: Any, end: Any, depth: int | None = None,
                 market: str = "perp", channels: tuple[str, ...] = ("l2book", "trades", "events")) -> pa.Table:
        """Per stream and hour: rows, bytes, local/remote/both/damaged, gap events."""
        return self.restorer.coverage(exchange, symbol, start, end, channels=channels, depth=depth, market=market)


def start_restore_actor(root: str, backup_section: dict | None, venues: list[str], log_level: str = "INFO",
                        compact_every_s: float = 600.0, orchestration: str | None = None):
    """The named ``restore`` actor, on the orchestration node (the head, or ``ray.orchestration``'s;
    created once; detached so it outlives the driver)."""
    options: dict[str, Any] = {"name": RESTORE, "namespace": NAMESPACE, "get_if_exists": True,
                               "lifetime": "detached", **orchestration_options(orchestration)}
    return RestoreActor.options(**options).remote(root, backup_section, venues, log_level, compact_every_s)


class RestoreClient:
    """The cluster's ``restore`` actor for ``mode=restore|status`` with ``ray=cluster`` (whole-cluster answers)."""

    def __init__(self, settings: Any) -> None:
        from actors.errors import ConfigError
        from actors.remote.starting import ensure_ray

        ensure_ray(settings)
        try:
            self.actor = ray.get_actor(RESTORE, namespace=NAMESPACE)
        except ValueError:
            raise ConfigError("ray=cluster: no 'restore' actor in this cluster (it starts with the first archive "
                              "run there); without ray=cluster the local archive is read directly") from None

    def coverage(self, *args: Any, **kwargs: Any) -> pa.Table:
        return ray.get(self.actor.coverage.remote(*args, **kwargs))

    def overview(self, **filters: Any) -> list[dict]:
        return ray.get(self.actor.overview.remote(**filters))

    def restore(self, *args: Any) -> list[str]:
        """Files of the range made local on the restore actor's node (the head); their paths there."""
        return ray.get(self.actor.restore.remote(*args))
