"""The cluster's one catalog, reached from any process: :class:`RemoteCatalog`.

The ``restore`` actor owns the catalog (an :class:`~actors.storage.catalog.IndexedCatalog` on
the head node's archive root: LanceDB as the durable table, an interval index in memory).
Writers on every node record their sealed files there, backup actors mark them backed up, and
restore answers lookups from the index. One owner means no concurrent LanceDB committers
(no insert races, no stale readers) and one place for compaction.

:class:`RemoteCatalog` has the catalog's methods (``upsert``, ``get``, ``get_many``, ``query``,
``lookup``, ``mark_*``, ``count``, ``all``), each one Ray call to the owner, so plain code that
takes a catalog (the writer core, the backup pass) works unchanged.
"""
from __future__ import annotations

from typing import Any

import ray

from actors.remote import NAMESPACE, RESTORE

METHODS = frozenset({"upsert", "get", "get_many", "query", "lookup", "rows", "all", "count", "mark_backed_up",
                     "mark_unbacked", "mark_remote_only", "mark_local", "optimize", "healthy", "pending_backup",
                     "backed_up_rows", "audit_rows", "expired"})


class RemoteCatalog:
    """The catalog's methods as calls to its owner (see module docstring)."""

    def __init__(self, owner: Any = None, timeout_s: float = 120.0) -> None:
        self._owner = owner
        self.timeout_s = timeout_s

    def _handle(self) -> Any:
        if self._owner is None:
            self._owner = ray.get_actor(RESTORE, namespace=NAMESPACE)
        return self._owner

    def __getattr__(self, method: str):
        if method not in METHODS:
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return ray.get(self._handle().catalog.remote(method, *args, **kwargs), timeout=self.timeout_s)
        return call
