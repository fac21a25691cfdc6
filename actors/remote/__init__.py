"""Every Ray actor of tickarchive, and the one place that names them.

All actors live in the namespace :data:`NAMESPACE`. Names (what the Ray dashboard shows and
``ray.get_actor(name, namespace=NAMESPACE)`` finds):

* ``socket:<venue>``                    :class:`actors.remote.socket.ExchangeSocket`
* ``writer:<venue>:<market>:<symbol>``  :class:`actors.remote.writer.SymbolWriter` (``+N`` when it packs N more)
* ``backup`` / ``backup:<node id>``     :class:`actors.remote.backup.BackupActor` (one per node holding files)
* ``restore``                           :class:`actors.remote.restore.RestoreActor`

Only this package imports Ray; the actors hold plain objects (``actors.feed``, ``actors.storage``,
``actors.backup``, ``actors.restore``) and add naming, placement, restarts and metrics.
"""
from __future__ import annotations

NAMESPACE = "tickarchive"
BACKUP = "backup"
RESTORE = "restore"


def socket_name(venue: str) -> str:
    return f"socket:{venue}"


def writer_name(venue: str, market: str, symbols: list[str]) -> str:
    """``writer:binance:perp:BTCUSDT``, or ``...:BTCUSDT+3`` for a writer packing four symbols."""
    extra = f"+{len(symbols) - 1}" if len(symbols) > 1 else ""
    return f"writer:{venue}:{market}:{symbols[0]}{extra}"


def backup_name(node_id: str | None = None, driver_node: bool = True) -> str:
    """``backup`` on the driver's node, ``backup:<node id>`` on the others."""
    return BACKUP if driver_node or not node_id else f"{BACKUP}:{node_id}"
