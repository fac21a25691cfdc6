"""When backup passes run: a plain scheduler around two kinds of pass (the ``backup`` actor holds one).

* A pass (:func:`backup_once`: what the catalog lists as not yet verified in the bucket, so its
  cost is the new files) runs every ``interval_s``, and soon after :meth:`BackupService.poke` (a
  writer sealed files). Pokes are coalesced: a burst of sealed files within ``settle_s`` is one pass.
* The audit (:func:`audit_once`: the whole bucket listing against the catalog) runs when it is due
  (``backup.audit_interval``, default daily, and on a root never audited against this bucket), in
  its own thread, so a long audit never delays the upload of a newly sealed file. What it finds
  missing or changed in the bucket is uploaded by the pass it pokes when it ends.
* A pass that fails because of the endpoint, the credentials or the bucket is logged once,
  recorded, and retried after a growing delay (:data:`ERROR_BACKOFF_S`, capped by the
  interval); pokes do not hammer a dead endpoint.
* :meth:`BackupService.stats` and :meth:`BackupService.poke` answer while a pass runs.

``run_pass`` is the work of one pass and ``run_audit`` of one audit (each returning a result dict
with ``ok``; ``audit_due()`` says when the next audit is due); ``on_result`` sees every pass's
result (the actor exports metrics there).
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
                 on_result: Callable[[dict[str, Any]], None] | None = None, start: bool = True,
                 run_audit: Callable[[], dict[str, Any]] | None = None,
                 audit_due: Callable[[], bool] | None = None) -> None:
        self.run_pass, self.schedule = run_pass, schedule
        self.on_result = on_result or (lambda result: None)
        self.run_audit, self.audit_due = run_audit, audit_due or (lambda: False)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._pass_lock, self._state_lock = threading.Lock(), threading.Lock()
        self.passes = self.pokes = self.audits = 0
        self.running = False
        self.auditing: threading.Thread | None = None
        self.last: dict[str, Any] = {}
        self.last_audit: dict[str, Any] = {}
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
            self.maybe_audit()

    def maybe_audit(self) -> bool:
        """Start an audit in its own thread when one is due and none runs; True if one started."""
        if self.run_audit is None or (self.auditing is not None and self.auditing.is_alive()):
            return False
        try:
            due = self.audit_due()
        except Exception as exc:
            log.warning(f"backup: cannot tell whether an audit is due: {exc}")
            return False
        if not due:
            return False
        self.auditing = threading.Thread(target=self.audit_now, daemon=True, name="backup-audit")
        self.auditing.start()
        return True

    def audit_now(self) -> dict[str, Any]:
        """One audit now (never raises); the pass it makes due follows at once."""
        started = time.time()
        try:
            result = self.run_audit() if self.run_audit else {"ok": True}
        except Exception as exc:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            log.error(f"backup audit failed: {result['error']}")
        with self._state_lock:
            self.audits += 1
            self.last_audit = {**result, "at": started}
        self.poke()
        return result

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
                    "last": dict(self.last), "audits": self.audits,
                    "auditing": self.auditing is not None and self.auditing.is_alive(),
                    "last_audit": dict(self.last_audit)}


def backup_once(root: str, section: dict, on_backlog: Callable[[int], None] | None = None,
                catalog: Any = None, node: str | None = None) -> dict[str, Any]:
    """One pass: upload what the catalog lists as not yet verified in the bucket, as a result dict.

    ``catalog``: the archive's catalog (default: the LanceDB catalog under ``root``; on a cluster,
    the cluster's catalog). ``node``: only this node's files.

    ``ok`` is False when files failed or were found damaged; endpoint, credential and bucket
    problems give ``{"ok": False, "error": <one line>}``. ``on_backlog`` follows the number of
    files still to upload during the pass.
    """
    from actors.backup import backup_pending

    backlog = {"files": 0}

    def on_total(files: int, nbytes: int) -> None:
        backlog["files"] = files
        if on_backlog:
            on_backlog(files)

    def progress(files: int, nbytes: int) -> None:
        backlog["files"] = max(0, backlog["files"] - files)
        if on_backlog:
            on_backlog(backlog["files"])

    def work(target, catalog, retention):
        return backup_pending(root, target, catalog, node, progress=progress, on_total=on_total,
                              retention_days=retention)

    result = _run(root, section, catalog, work)
    if on_backlog and "summary" in result:
        on_backlog(result["failed"])
    return result


def audit_once(root: str, section: dict, catalog: Any = None, node: str | None = None) -> dict[str, Any]:
    """One audit of ``root`` against the configured bucket (see :func:`actors.backup.audit`), as a result dict."""
    from actors.backup import audit

    return _run(root, section, catalog, lambda target, catalog, retention: audit(root, target, catalog, node),
                what="backup audit")


def reconcile_once(root: str, section: dict, on_backlog: Callable[[int], None] | None = None,
                   catalog: Any = None, node: str | None = None) -> dict[str, Any]:
    """The audit and the pass together, as ``mode=backup`` does (see :func:`actors.backup.reconcile`)."""
    from actors.backup import reconcile

    def work(target, catalog, retention):
        return reconcile(root, target, catalog, retention_days=retention, node=node)

    return _run(root, section, catalog, work)


def audit_interval_s(section: dict) -> float:
    """``backup.audit_interval`` in seconds (default one day)."""
    from actors.storage.layout import parse_duration

    return parse_duration(section.get("audit_interval") or "1d", "backup.audit_interval")


def audit_is_due(root: str, section: dict) -> bool:
    """An audit of ``root`` against the configured bucket is due (never audited, or longer ago
    than ``backup.audit_interval``); False when the target cannot be resolved (the pass reports that)."""
    from actors.backup import BackupError, audit_due, resolve_target

    try:
        target = resolve_target(section, root)
    except BackupError:
        return False
    return target is not None and audit_due(root, target, audit_interval_s(section))


def _run(root: str, section: dict, catalog: Any, work: Callable[..., Any], what: str = "backup pass") -> dict[str, Any]:
    from actors.backup import BackupError, resolve_target

    try:
        target = resolve_target(section, root)
        if target is None:
            raise BackupError("backup=none: nothing to do")
        retention = (section.get("retention") or {}).get("local_days")
        summary = work(target, catalog if catalog is not None else _catalog(root),
                       float(retention) if retention else None)
    except BackupError as exc:          # endpoint / credentials / bucket: one line, retried later
        log.error(f"backup: {exc}")
        return {"ok": False, "error": str(exc)}
    if summary.failed or summary.damaged:
        log.error(f"{what}: {summary.line()}")
    elif summary.uploaded or summary.deleted_local or summary.repaired or what != "backup pass":
        log.info(f"{what}: {summary.line()}")
    return {"ok": summary.failed == 0 and not summary.damaged, "summary": summary.line(),
            "uploaded": summary.uploaded, "uploaded_bytes": summary.uploaded_bytes, "skipped": summary.skipped,
            "failed": summary.failed, "damaged": summary.damaged[:20], "deleted_local": summary.deleted_local,
            "audited": summary.audited, "repaired": summary.repaired,
            "errors": summary.errors[:5], "seconds": round(summary.seconds, 3)}


def _catalog(root: str):
    from actors.backup import BackupError
    from actors.storage.catalog import Catalog

    try:
        return Catalog(root)
    except Exception as exc:  # the catalog is the record of what to upload: nothing to go by without it
        raise BackupError(f"the catalog under {root} is not readable ({exc}); mode=reindex rebuilds it") from None
