"""``BackupActor``: reconciles one node's sealed files with the bucket, on a schedule.

One actor per node that writes files (each node backs up its own archive root,
:func:`actors.remote.placement.node_root`, and marks the cluster's catalog): named ``backup``
on the driver's node and ``backup:<node id>`` elsewhere (:func:`actors.remote.backup_name`).
:func:`poke_backup`, called by a writer after it sealed files, pokes the actor of the writer's
own node (falling back to ``backup``). The schedule (interval, coalesced pokes, backoff after
errors) is :class:`actors.backup.schedule.BackupService`; one pass is
:func:`actors.backup.schedule.backup_once` (what the catalog lists as not yet verified: the cost
of the new files), and the audit of the whole bucket (:func:`actors.backup.schedule.audit_once`,
this node's rows) runs in its own thread when ``backup.audit_interval`` says it is due.

Metrics (tag ``node``): ``tickarchive_backup_backlog_files`` (sealed files not yet verified in
the bucket, current during a pass), ``tickarchive_backup_uploaded_files``,
``tickarchive_backup_uploaded_bytes``, ``tickarchive_backup_failed_files``.
"""
from __future__ import annotations

from typing import Any

import ray
from ray.util.metrics import Counter, Gauge

from actors.backup import validate_section
from actors.backup.schedule import BackupSchedule, BackupService, audit_is_due, audit_once, backup_once
from actors.logs import setup_actor_logging
from actors.remote import BACKUP, NAMESPACE, backup_name
from actors.remote.catalog import RemoteCatalog
from actors.remote.options import POLICIES, on_node
from actors.remote.placement import node_name, node_root
from actors.storage.layout import parse_duration


@ray.remote(**POLICIES["backup"])
class BackupActor:
    """Backs up this node's archive root (see module docstring)."""

    def __init__(self, root: str, section: dict, log_level: str = "INFO", start_loop: bool = True,
                 catalog_owner: Any = None) -> None:
        root = node_root(root)
        setup_actor_logging(log_level, root, "backup")
        self.root, self.section = root, validate_section(section)     # never holds a secret
        self.tags = {"node": node_name()}
        catalog = RemoteCatalog(catalog_owner)         # default: the ``restore`` actor's catalog
        self.backlog = Gauge("tickarchive_backup_backlog_files", "sealed files not yet verified in the bucket",
                             tag_keys=("node",))
        self.uploaded = Counter("tickarchive_backup_uploaded_files", "files uploaded and verified", tag_keys=("node",))
        self.uploaded_bytes = Counter("tickarchive_backup_uploaded_bytes", "bytes uploaded and verified",
                                      tag_keys=("node",))
        self.failed = Counter("tickarchive_backup_failed_files", "file uploads that failed or were refused",
                              tag_keys=("node",))
        self.backlog_files = 0
        schedule = BackupSchedule(parse_duration(self.section.get("interval") or "10m", "backup.interval"),
                                  float(self.section.get("settle_s", 1.0)))
        node = node_name()
        self.service = BackupService(lambda: backup_once(root, self.section, self._set_backlog, catalog), schedule,
                                     on_result=self._count, start=start_loop,
                                     run_audit=lambda: audit_once(root, self.section, catalog, node),
                                     audit_due=lambda: audit_is_due(root, self.section))

    def _set_backlog(self, files: int) -> None:
        self.backlog_files = files
        self.backlog.set(float(files), tags=self.tags)

    def _count(self, result: dict[str, Any]) -> None:
        for metric, value in ((self.uploaded, result.get("uploaded", 0)),
                              (self.uploaded_bytes, result.get("uploaded_bytes", 0)),
                              (self.failed, result.get("failed", 0) + len(result.get("damaged", [])))):
            if value:
                metric.inc(float(value), tags=self.tags)

    def poke(self) -> None:
        """Files were sealed: reconcile soon (coalesced)."""
        self.service.poke()

    def run_once(self) -> dict[str, Any]:
        """One backup pass now (after a pass in progress); returns its result."""
        return self.service.run_once()

    def audit(self) -> dict[str, Any]:
        """One audit now (the uploads it makes due follow in a pass); returns its result."""
        return self.service.audit_now()

    def stats(self) -> dict[str, Any]:
        """Passes, pokes, backlog, the last result and the target (never a secret)."""
        return {**self.service.stats(), **self.tags, "backlog": self.backlog_files,
                "target": {k: self.section.get(k) for k in ("name", "endpoint", "bucket", "prefix")}}


def start_backup_actor(root: str, section: dict, log_level: str = "INFO", node_id: str | None = None,
                       driver_node: bool = True):
    """The backup actor of one node (``node_id``: pinned there), reused if it exists."""
    options: dict[str, Any] = {"name": backup_name(node_id, driver_node), "namespace": NAMESPACE,
                               "get_if_exists": True}
    options.update(on_node(node_id))
    return BackupActor.options(**options).remote(root, section, log_level)


_handles: dict[str, Any] = {}


def poke_backup() -> bool:
    """Poke the backup actor of this process's node (else ``backup``); False if there is none."""
    try:
        node_id = ray.get_runtime_context().get_node_id()
    except Exception:
        node_id = None
    for name in ([backup_name(node_id, driver_node=False)] if node_id else []) + [BACKUP]:
        handle = _handles.get(name)
        if handle is None:
            try:
                handle = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                continue
            _handles[name] = handle
        try:
            handle.poke.remote()
            return True
        except Exception:        # the actor died: look it up again next time
            _handles.pop(name, None)
    return False
