"""``restore``: the named actor answering "this exchange, symbol, channel, range" in-cluster and over Ray Client.

A thin wrapper over :class:`actors.restore.restorer.Restorer`; errors (unknown venue or symbol,
bad range, checksum mismatch, unsafe key, damaged file) come back as the Restorer raised them.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pyarrow as pa
import ray

from actors.logs import get_logger, setup_actor_logging
from actors.remote import NAMESPACE, RESTORE


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class RestoreActor:
    """The ``restore`` actor (see module docstring)."""

    def __init__(self, root: str, backup_section: dict | None, venues: list[str], log_level: str = "INFO") -> None:
        from actors.restore.restorer import Restorer, bucket_from_section

        setup_actor_logging(log_level, root, RESTORE)
        try:
            bucket = bucket_from_section(backup_section or {}, root)
        except Exception as exc:    # serve the local archive; say once why the bucket is unavailable
            get_logger("restore").error(f"restore: bucket unavailable, serving local files only: {exc}")
            bucket = None
        self.restorer = Restorer(root, bucket=bucket, venues=venues)

    def paths(self, exchange: str, symbol: str, channel: str, start: Any, end: Any, depth: int | None = None,
              market: str = "perp") -> list[dict]:
        """Files covering the range: key, period, size, sha256, local/remote."""
        return [asdict(ref) for ref in self.restorer.paths(exchange, symbol, channel, start, end, depth, market)]

    def restore(self, exchange: str, symbol: str, channel: str, start: Any, end: Any, depth: int | None = None,
                market: str = "perp") -> list[str]:
        """Download (verified) what is missing locally; the local paths of the range's files."""
        return self.restorer.restore(exchange, symbol, channel, start, end, depth, market)

    def load(self, exchange: str, symbol: str, channel: str, start: Any, end: Any, depth: int | None = None,
             market: str = "perp", columns: list[str] | None = None) -> pa.Table:
        """Rows with ``start <= ts_local < end`` as an Arrow table (restoring files first)."""
        return self.restorer.load(exchange, symbol, channel, start, end, depth, market, columns)

    def coverage(self, exchange: str, symbol: str, start: Any, end: Any, depth: int | None = None,
                 market: str = "perp") -> pa.Table:
        """Per stream and hour: rows, bytes, local/remote/both/damaged, gap events."""
        return self.restorer.coverage(exchange, symbol, start, end, depth=depth, market=market)


def start_restore_actor(root: str, backup_section: dict | None, venues: list[str], log_level: str = "INFO"):
    """The named ``restore`` actor (created once; detached so it outlives the driver on a cluster)."""
    return RestoreActor.options(name=RESTORE, namespace=NAMESPACE, get_if_exists=True,
                                lifetime="detached").remote(root, backup_section, venues, log_level)
