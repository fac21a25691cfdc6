"""Files that live only on another node (sealed there, not in the bucket yet), streamed to this one.

The catalog says which node sealed a file (``node``: :func:`actors.remote.placement.node_name`).
:func:`fetch_from_nodes` finds that node among the alive Ray nodes (a tiny task on each asks
its name), reads the file there in chunks with :func:`read_chunk` (a Ray task pinned to the
node, no process of its own), writes it under this node's root through a temp file and keeps
it only if its size and SHA-256 match the catalog, like any download.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import ray

from actors.logs import get_logger
from actors.remote.options import POLICIES, on_node
from actors.remote.placement import node_name, node_root

log = get_logger("restore")
CHUNK = 8 << 20


@ray.remote(**POLICIES["fetch"])
def _name_of_node() -> str:
    return node_name()


@ray.remote(**POLICIES["fetch"])
def read_chunk(root: str, rel: str, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of ``{this node's root}/{rel}``."""
    from actors.restore.restorer import safe_relpath

    with open(safe_relpath(rel, node_root(root)), "rb") as f:
        f.seek(offset)
        return f.read(size)


def node_ids_by_name() -> dict[str, str]:
    """Alive Ray nodes by their tickarchive node name."""
    alive = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    names = ray.get([_name_of_node.options(**on_node(n)).remote() for n in alive], timeout=60)
    return dict(zip(names, alive))


def fetch_from_nodes(root: str, rows: list[dict[str, Any]]) -> list[str]:
    """Copy these catalog rows' files from the nodes holding them into ``root``; the keys copied.

    A file whose node is gone, or whose copy does not hash to the catalog's SHA-256, is skipped
    (logged); the restore then reports it missing.
    """
    from actors.restore.restorer import safe_relpath
    from actors.storage.integrity import sha256_file
    from actors.storage.spool import fsync_dir

    if not rows:
        return []
    nodes, copied = node_ids_by_name(), []
    for row in rows:
        node = nodes.get(row["node"])
        if node is None:
            log.error(f"{row['key']}: only on node {row['node']!r}, which is not in the cluster now")
            continue
        final = safe_relpath(row["key"], root)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "wb") as out:
            for offset in range(0, int(row["bytes"]), CHUNK):
                out.write(ray.get(read_chunk.options(**on_node(node)).remote(root, row["key"], offset, CHUNK)))
            out.flush()
            os.fsync(out.fileno())
        if os.path.getsize(tmp) != row["bytes"] or sha256_file(tmp) != row["sha256"]:
            Path(tmp).unlink()
            log.error(f"{row['key']}: the copy from node {row['node']!r} does not match the catalog's size/SHA-256")
            continue
        os.replace(tmp, final)
        fsync_dir(str(final.parent))
        copied.append(row["key"])
    return copied


def fetch_missing(root: str, restorer: Any, catalog: Any, *query: Any) -> list[str]:
    """Copy into ``root`` the files of a ``restorer.paths(*query)`` range that are neither local nor
    in the bucket, from the nodes that sealed them; the keys copied."""
    refs = restorer.paths(*query)
    missing = [ref.rel for ref in refs if not ref.local and not ref.remote]
    return fetch_from_nodes(root, list(catalog.get_many(missing).values())) if missing else []
