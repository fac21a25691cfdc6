"""When backup passes run: a plain scheduler around one reconcile pass (the ``backup`` actor holds one).

* A pass runs every ``interval_s``, and soon after :meth:`BackupService.poke` (a writer sealed
  files). Pokes are coalesced: a burst of sealed files within ``settle_s`` is one pass.
* A pass that fails because of the endpoint, the credentials or the bucket is logged once,
  recorded, and retried after a growing delay (:data:`ERROR_BACKOFF_S`, capped by the
  interval); pokes do not hammer a dead endpoint.
* :meth:`BackupService.stats` and :meth:`BackupService.poke` answer while a pass runs.

``run_pass`` is the work of one pass (``reconcile`` against the configured bucket, returning a
result dict with ``ok``); ``on_result`` sees every result (the actor exports metrics there).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from actors.logs import get_logger

log = get_logger("backup")

ERROR_BACKOFF_S = (15.0, 30.0, 60.0, 120.0, 300.0)   # after failed passes (capped by the interval)


class BackupSchedule:
    """Decides how long to wait before the next pass (pure state, no threads)."""

    def __init__(self, interval_s: float, settle_s: float = 1.0) -> None:
        self.interval_s, self.settle_s = interval_s, settle_s
        self.errors_in_row = 0

    def backoff_s(self) -> float:
        step = ERROR_BACKOFF_S[min(self.errors_in_row, len(ERROR_BACKOFF_S)) - 1]
        return min(step, self.interval_s)

    def next_wait_s(self) -> float:
        """How long to sleep when nobody pokes."""
        return self.backoff_s() if self.errors_in_row else self.interval_s

    def after_poke_s(self) -> float:
        """How long to wait after a poke before the pass (coalescing, plus backoff after errors)."""
        return self.settle_s + (self.backoff_s() if self.errors_in_row else 0.0)

    def record(self, ok: bool) -> None:
        self.errors_in_row = 0 if ok else self.errors_in_row + 1


class BackupService:
    """Runs reconcile passes on a :class:`BackupSchedule` in a background thread."""

    def __init__(self, run_pass: Callable[[], dict[str, Any]], schedule: BackupSchedule,
                 on_result: Callable[[dict[str, Any]], None] | None = None, start: bool = True) -> None:
        self.run_pass, self.schedule = run_pass, schedule
        self.on_result = on_result or (lambda result: None)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._pass_lock, self._state_lock = threading.Lock(), threading.Lock()
        self.passes = self.pokes = 0
        self.running = False
        self.last: dict[str, Any] = {}
        if start:
            threading.Thread(target=self._loop, daemon=True, name="backup-schedule").start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            poked = self._wake.wait(self.schedule.next_wait_s())
            if self._stop.is_set():
                return
            if poked and self._stop.wait(self.schedule.after_poke_s()):
                return
            self._wake.clear()
            self.run_once()

    def poke(self) -> None:
        """Files were sealed: reconcile soon (coalesced with other pokes)."""
        with self._state_lock:
            self.pokes += 1
        self._wake.set()

    def stop(self) -> None:
        """End the schedule (a pass in progress finishes)."""
        self._stop.set()
        self._wake.set()

    def run_once(self) -> dict[str, Any]:
        """One pass now (after a pass in progress); never raises."""
        with self._pass_lock:
            self.running = True
            started = time.time()
            try:
                result = self.run_pass()
            except Exception as exc:        # never let the schedule die
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                log.error(f"backup pass failed: {result['error']}")
            finally:
                self.running = False
            self.schedule.record(bool(result.get("ok")))
            with self._state_lock:
                self.passes += 1
                self.last = {**result, "at": started}
            self.on_result(result)
            return {**result, "passes": self.passes}

    def stats(self) -> dict[str, Any]:
        with self._state_lock:
            return {"passes": self.passes, "pokes": self.pokes, "running": self.running,
                    "interval_s": self.schedule.interval_s, "errors_in_row": self.schedule.errors_in_row,
                    "last": dict(self.last)}


def reconcile_once(root: str, section: dict, on_backlog: Callable[[int], None] | None = None,
                   catalog: Any = None) -> dict[str, Any]:
    """One reconcile pass of ``root`` against the configured bucket, as a result dict.

    ``catalog``: where to record verified copies (default: the LanceDB catalog under ``root``;
    on a cluster, the cluster's catalog).

    ``ok`` is False when files failed or were found damaged; endpoint, credential and bucket
    problems give ``{"ok": False, "error": <one line>}``. ``on_backlog`` follows the number of
    files still to upload during the pass.
    """
    from actors.backup import BackupError, reconcile, resolve_target

    backlog = {"files": 0}

    def on_total(files: int, nbytes: int) -> None:
        backlog["files"] = files
        if on_backlog:
            on_backlog(files)

    def progress(files: int, nbytes: int) -> None:
        backlog["files"] = max(0, backlog["files"] - files)
        if on_backlog:
            on_backlog(backlog["files"])

    try:
        target = resolve_target(section, root)
        if target is None:
            raise BackupError("backup=none: nothing to do")
        retention = (section.get("retention") or {}).get("local_days")
        summary = reconcile(root, target, catalog if catalog is not None else _catalog(root), progress=progress, on_total=on_total,
                            retention_days=float(retention) if retention else None)
    except BackupError as exc:          # endpoint / credentials / bucket: one line, retried later
        log.error(f"backup: {exc}")
        return {"ok": False, "error": str(exc)}
    if on_backlog:
        on_backlog(summary.failed)
    if summary.failed or summary.damaged:
        log.error(f"backup pass: {summary.line()}")
    elif summary.uploaded or summary.deleted_local:
        log.info(f"backup pass: {summary.line()}")
    return {"ok": summary.failed == 0 and not summary.damaged, "summary": summary.line(),
            "uploaded": summary.uploaded, "uploaded_bytes": summary.uploaded_bytes, "skipped": summary.skipped,
            "failed": summary.failed, "damaged": summary.damaged[:20], "deleted_local": summary.deleted_local,
            "errors": summary.errors[:5], "seconds": round(summary.seconds, 3)}


def _catalog(root: str):
    from actors.storage.catalog import Catalog

    try:
        return Catalog(root)
    except Exception as exc:  # the bucket is still reconciled; mode=reindex rebuilds the catalog
        log.warning(f"backup without catalog updates: {exc}")
        return None
