"""tickarchive: crypto tick-data archive (L2 books and trades → hourly Parquet, LanceDB catalog, S3 backup).

The public Python API, importable without Ray::

    from actors import load_l2book, load_trades, load_derivatives, load_liquidations, load_events, load_lob_archives, load_trade_archives, Restorer
    from actors import dataset, duckdb_relation, polars_frame      # the whole archive as one dataset

Packages: ``feed`` (websocket loop, records, order book, delivery), ``venues`` (one module per
exchange, plus ``venues.sim`` simulators and replay servers), ``storage`` (layout, spool,
writer, catalog, integrity), ``backup`` (bucket reconcile), ``restore`` (queries, loading,
time ranges), ``remote`` (every Ray actor and the archive orchestration), ``cli`` (config
and modes).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_PUBLIC = {
    "load_l2book": "actors.restore.loading",
    "load_trades": "actors.restore.loading",
    "load_events": "actors.restore.loading",
    "load_derivatives": "actors.restore.loading",
    "load_liquidations": "actors.restore.loading",
    "load_lob_archives": "actors.restore.loading",
    "load_trade_archives": "actors.restore.loading",
    "Restorer": "actors.restore.restorer",
    "dataset": "actors.restore.dataset",
    "duckdb_relation": "actors.restore.dataset",
    "polars_frame": "actors.restore.dataset",
    "TickarchiveError": "actors.errors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    """Import the public names on first use (``import actors`` stays cheap)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'actors' has no attribute {name!r}")
    return getattr(import_module(module), name)
