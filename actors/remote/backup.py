"""The ``backup`` Ray actor: a thin schedule around :func:`actors.backup.reconcile`.

One actor per node that writes files (each node backs up its own archive root):

* on the node of the driver it is named ``backup`` (namespace ``tickarchive``), so
  ``ray.get_actor("backup", namespace="tickarchive")`` finds it on a one-machine setup;
* on any other node it is named ``backup:<node id>`` (:func:`backup_actor_name`), and
  :func:`poke_backup` (called by a writer after it sealed files) pokes the actor of the
  writer's own node, falling back to ``backup``.

The actor runs one pass every ``backup.interval`` and soon after a :meth:`BackupActor.poke`
(pokes are coalesced: a burst of sealed files is one pass). A pass that fails because the
endpoint, the credentials or the bucket are wrong logs ONE error line, is recorded in
:meth:`BackupActor.stats`, and is retried with a growing delay (pokes do not hammer a dead
endpoint); nothing else in the archiver is affected. ``stats()`` and ``poke()`` answer while
a pass runs.

Metrics (``ray.util.metrics``, tag ``node``): ``tickarchive_backup_backlog_files`` (sealed
files not yet verified in the bucket, updated during a pass), ``tickarchive_backup_uploaded_files``,
``tickarchive_backup_uploaded_bytes``, ``tickarchive_backup_failed_files``.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any

import ray

from actors.logs import get_logger, setup_logging

NAMESPACE = "tickarchive"
NAME = "backup"
ERROR_BACKOFF_S = (15.0, 30.0, 60.0, 120.0, 300.0)   # after failed passes (capped by the interval)


def backup_actor_name(node_id: str | None = None, driver_node: bool = True) -> str:
    """``backup`` on the driver's node, ``backup:<node id>`` on the others."""
    return NAME if driver_node or not node_id else f"{NAME}:{node_id}"


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)
class BackupActor:
    """Reconciles the node's sealed archive files with the bucket (see module docstring)."""

    def __init__(self, root: str, section: dict, log_level: str = "INFO", start_loop: bool = True) -> None:
        from ray.util.metrics import Counter, Gauge

        from actors.backup.reconcile import validate_section
        from actors.storage.layout import parse_duration

        setup_logging(log_level)
        self.log = get_logger("backup")
        self.root = root
        self.section = validate_section(section)     # secrets are never in it (environment / .env)
        self.interval_s = parse_duration(self.section.get("interval") or "10m", "backup.interval")
        self.settle_s = float(self.section.get("settle_s", 1.0))
        retention = (self.section.get("retention") or {}).get("local_days")
        self.retention_days = float(retention) if retention else None
        self.node = socket.gethostname()
        self.tags = {"node": self.node}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pass_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.passes = 0
        self.pokes = 0
        self.running = False
        self.backlog = 0
        self.errors_in_row = 0
        self.last: dict[str, Any] = {}
        self.totals = {"uploaded": 0, "uploaded_bytes": 0, "failed": 0}
        self.backlog_gauge = Gauge("tickarchive_backup_backlog_files",
                                   "sealed files not yet verified in the bucket", tag_keys=("node",))
        self.files_counter = Counter("tickarchive_backup_uploaded_files", "files uploaded and verified",
                                     tag_keys=("node",))
        self.bytes_counter = Counter("tickarchive_backup_uploaded_bytes", "bytes uploaded and verified",
                                     tag_keys=("node",))
        self.failed_counter = Counter("tickarchive_backup_failed_files", "file uploads that failed",
                                      tag_keys=("node",))
        if start_loop:
            threading.Thread(target=self._loop, daemon=True, name="backup-schedule").start()

    # -- schedule ------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            poked = self._wake.wait(self._next_wait())
            if self._stop.is_set():
                return
            if poked:
                time.sleep(self.settle_s)        # coalesce a burst of sealed files into one pass
                if self.errors_in_row:            # endpoint trouble: wait out the backoff first
                    self._stop.wait(self._backoff_s())
            self._wake.clear()
            self.run_once()

    def _backoff_s(self) -> float:
        step = ERROR_BACKOFF_S[min(self.errors_in_row, len(ERROR_BACKOFF_S)) - 1]
        return min(step, self.interval_s)

    def _next_wait(self) -> float:
        return self._backoff_s() if self.errors_in_row else self.interval_s

    def poke(self) -> None:
        """Files were sealed: reconcile soon (coalesced with other pokes)."""
        with self._state_lock:
            self.pokes += 1
        self._wake.set()

    def stop(self) -> None:
        """Stop the schedule (a pass in progress finishes)."""
        self._stop.set()
        self._wake.set()

    # -- one pass ------------------------------------------------------------------------
    def run_once(self) -> dict[str, Any]:
        """One reconcile pass now (waits for a pass in progress first); returns its result."""
        from actors.backup.reconcile import BackupError, reconcile, resolve_target

        with self._pass_lock:
            self.running = True
            started = time.time()
            try:
                target = resolve_target(self.section, self.root)
                if target is None:
                    raise BackupError("backup=none: nothing to do")
                summary = reconcile(self.root, target, self._catalog(), progress=self._progress,
                                    on_total=self._on_total, retention_days=self.retention_days)
                result = {"ok": summary.failed == 0 and not summary.damaged, "summary": summary.line(),
                          "uploaded": summary.uploaded, "damaged": summary.damaged[:20],
                          "uploaded_bytes": summary.uploaded_bytes, "skipped": summary.skipped,
                          "failed": summary.failed, "deleted_local": summary.deleted_local,
                          "errors": summary.errors[:5], "seconds": round(summary.seconds, 3)}
                self._set_backlog(summary.failed)
                self.totals["uploaded"] += summary.uploaded
                self.totals["uploaded_bytes"] += summary.uploaded_bytes
                self.totals["failed"] += summary.failed
                if summary.uploaded:
                    self.files_counter.inc(float(summary.uploaded), tags=self.tags)
                    self.bytes_counter.inc(float(summary.uploaded_bytes), tags=self.tags)
                if summary.failed or summary.damaged:
                    self.failed_counter.inc(float(summary.failed + len(summary.damaged)), tags=self.tags)
                    self.log.error(f"backup pass: {summary.line()}")
                elif summary.uploaded or summary.deleted_local:
                    self.log.info(f"backup pass: {summary.line()}")
                self.errors_in_row = self.errors_in_row + 1 if summary.failed else 0
            except BackupError as exc:          # endpoint / credentials / bucket: one line, retried later
                result = {"ok": False, "error": str(exc)}
                self.errors_in_row += 1
                self.log.error(f"backup: {exc}")
            except Exception as exc:            # never let the schedule die
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                self.errors_in_row += 1
                self.log.error(f"backup pass failed: {type(exc).__name__}: {exc}")
            finally:
                self.running = False
            with self._state_lock:
                self.passes += 1
                self.last = {**result, "at": started}
            return {**result, "passes": self.passes}

    def _catalog(self):
        try:
            from actors.storage.catalog import Catalog
            return Catalog(self.root)
        except Exception as exc:  # the bucket is still reconciled; mode=reindex rebuilds the catalog
            self.log.warning(f"backup without catalog updates: {exc}")
            return None

    def _on_total(self, files: int, nbytes: int) -> None:
        self._set_backlog(files)

    def _progress(self, files: int, nbytes: int) -> None:
        self._set_backlog(max(0, self.backlog - files))

    def _set_backlog(self, n: int) -> None:
        self.backlog = n
        self.backlog_gauge.set(float(n), tags=self.tags)

    def stats(self) -> dict[str, Any]:
        """Passes, pokes, backlog, running, the last result and totals (never a secret)."""
        with self._state_lock:
            return {"node": self.node, "passes": self.passes, "pokes": self.pokes, "running": self.running,
                    "backlog": self.backlog, "interval_s": self.interval_s, "last": dict(self.last),
                    "totals": dict(self.totals), "target": {k: self.section.get(k) for k in
                                                            ("name", "endpoint", "bucket", "prefix")}}


def start_backup_actor(root: str, section: dict, log_level: str = "INFO", node_id: str | None = None,
                       driver_node: bool = True):
    """The backup actor of one node (``node_id``: pin it there; default: wherever Ray puts it).

    Idempotent: an actor of the same name is reused.
    """
    options: dict[str, Any] = {"name": backup_actor_name(node_id, driver_node), "namespace": NAMESPACE,
                               "get_if_exists": True}
    if node_id:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    return BackupActor.options(**options).remote(root, section, log_level)


def start_backup_actors(root: str, section: dict, node_ids: list[str], log_level: str = "INFO") -> list:
    """One backup actor on each of ``node_ids`` (the nodes whose writers seal files).

    The actor on the driver's node is ``backup``; the others ``backup:<node id>``.
    """
    here = ray.get_runtime_context().get_node_id()
    return [start_backup_actor(root, section, log_level, node_id=nid, driver_node=(nid == here))
            for nid in dict.fromkeys(node_ids)]


_handles: dict[str, Any] = {}


def poke_backup() -> bool:
    """Poke the backup actor of this process's node (else ``backup``); False if there is none.

    Cheap enough to call after every seal: the handle is cached and the call is not awaited.
    """
    try:
        node_id = ray.get_runtime_context().get_node_id()
    except Exception:
        node_id = None
    for name in ([backup_actor_name(node_id, driver_node=False)] if node_id else []) + [NAME]:
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
