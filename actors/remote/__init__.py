"""Every Ray actor of tickarchive, and the one place that names them.

All actors live in the namespace :data:`NAMESPACE`. Names (what the Ray dashboard shows and
``ray.get_actor(name, namespace=NAMESPACE)`` finds):

* ``socket:<group>:<n>``                :class:`actors.remote.socket.ExchangeSocket` (one or more venues each)
* ``writer:<group>:<n>``                :class:`actors.remote.writer.WriterProcess` (many symbols each; the
  group is the placement requirement of its venues, ``any`` without one)
* ``backup`` / ``backup:<node id>``     :class:`actors.remote.backup.BackupActor` (one per node holding files)
* ``restore``                           :class:`actors.remote.restore.RestoreActor` (also owns the catalog)

Only this package imports Ray; the actors hold plain objects (``actors.feed``, ``actors.storage``,
``actors.backup``, ``actors.restore``) and add naming, placement, restarts and metrics.
"""
from __future__ import annotations

NAMESPACE = "tickarchive"
BACKUP = "backup"
RESTORE = "restore"


def socket_name(group: str, index: int) -> str:
    """``socket:any:0``: the first socket process of the venues placed anywhere."""
    return f"socket:{group}:{index}"


def writer_name(group: str, index: int) -> str:
    """``writer:any:0``: the first writer process of the venues placed anywhere."""
    return f"writer:{group}:{index}"


def core_id(venue: str, market: str, symbol: str) -> str:
    """The folder of one symbol's spool and watermarks under ``{root}/.spool/``."""
    return f"writer_{venue}_{market}_{symbol}".replace("/", "_").replace(":", "_")


def backup_name(node_id: str | None = None, driver_node: bool = True) -> str:
    """``backup`` on the driver's node, ``backup:<node id>`` on the others."""
    return BACKUP if driver_node or not node_id else f"{BACKUP}:{node_id}"
