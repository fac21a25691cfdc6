"""Backup passes: the pass after a seal costs what is new; the audit checks the whole bucket.

Plain logic (no Ray); the ``backup`` actor (on its schedule, :mod:`actors.backup.schedule`),
``mode=backup`` and quantpylib's ``backup_folder`` call these. The catalog is the record of what
is sealed and what is verified in the bucket (``backed_up_at``, ``backup_sha256``,
``backup_etag``); nothing else is kept, and nothing is rewritten whole.

* :func:`backup_pending` — the pass after each sealed file, and on the interval: the catalog says
  which local files are not verified in the bucket yet (:meth:`~actors.storage.catalog.Catalog.pending_backup`);
  they are uploaded (:class:`~actors.backup.upload.Uploader`: unread under their seal SHA-256 to a
  server that checks it, else hashed here; a file that contradicts its seal record is never
  uploaded) and marked. No listing of the bucket, no walk of the local tree: its cost is the new
  files, not the archive.
* :func:`reconcile` — the audit (``mode=backup``, and every ``backup.audit_interval``): one paged
  listing of the bucket against every catalog row of the node, and one walk of the local tree. It
  finds objects deleted or changed in the bucket (listing size and ETag against what was
  verified; a ``HEAD`` settles a changed ETag) and uploads them again, records local files the
  catalog does not know (a folder written by another tool, a catalog rebuilt), adopts objects
  already in the bucket that hold the same bytes (verified once, quantpylib's included), then
  uploads what is missing. A catalog record of verified objects from before this design
  (``.backup/verified.json``) is read once to seed the ETags, then set aside.
* :func:`apply_retention` (``backup.retention.local_days``) deletes local files whose period
  ended more than N days ago and whose copy is verified, from a catalog query, keeping their rows
  as remote-only.
"""
from __future__ import annotations

import os
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable

import orjson

from actors.backup.bucket import Bucket, RemoteObject
from actors.backup.retry import with_retries
from actors.backup.target import BackupError, Target
from actors.backup.upload import LocalDamage, PassSummary, Todo, Uploader, Verified
from actors.backup.verify import etag_matches_file, head_verifies, is_foreign
from actors.logs import get_logger
from actors.storage.integrity import is_damaged, sha256_file
from actors.storage.layout import sealed_files

__all__ = ["AUDIT_STATE", "LocalDamage", "PassSummary", "apply_retention", "audit", "audit_due", "backup_pending",
           "reconcile"]

log = get_logger("backup")

STATE_DIR = ".backup"
AUDIT_STATE = "audit.json"             # when the last audit of this root against which bucket ended
LEGACY_STATE = "verified.json"         # the whole-archive record of earlier versions (read once)


def _open_bucket(target: Target, client: Any) -> Bucket:
    bucket = Bucket(target, client)
    bucket.check()
    return bucket


def backup_pending(root: str, target: Target, catalog: Any, node: str | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   on_total: Callable[[int, int], None] | None = None, client: Any = None,
                   retention_days: float | None = None, summary: PassSummary | None = None) -> PassSummary:
    """Upload the files the catalog lists as not yet verified in the bucket (of ``node``), verified,
    and mark them (see module docstring). Raises :class:`BackupError` for endpoint/bucket problems."""
    started = time.monotonic()
    summary = summary if summary is not None else PassSummary()
    rows = catalog.pending_backup(node)
    todo: list[Todo] = []
    for row in rows:
        path = Path(root) / row["key"]
        try:
            st = path.stat()
        except FileNotFoundError:       # another node's file, or deleted behind the catalog's back
            continue
        todo.append((row["key"], st, None))
    if on_total is not None:
        on_total(len(todo), sum(st.st_size for _, st, _ in todo))
    if todo:
        bucket = _open_bucket(target, client)
        verified = Uploader(root, bucket, summary, {row["key"]: row for row in rows}).upload_all(todo, progress)
        _mark(catalog, verified)
    if retention_days:
        summary.deleted_local = apply_retention(root, catalog, retention_days, node)
    summary.damaged.sort()
    summary.seconds += time.monotonic() - started
    return summary


def audit(root: str, target: Target, catalog: Any = None, node: str | None = None, client: Any = None,
          ignore: tuple[str, ...] = ()) -> PassSummary:
    """The audit (see module docstring), without the uploads it makes due (those are
    :func:`backup_pending`'s): every recorded copy checked against the bucket listing, local files
    the catalog does not list recorded, objects already holding a file's bytes adopted. Raises
    :class:`BackupError` for endpoint/bucket problems."""
    from actors.storage.catalog import Catalog

    started = time.monotonic()
    catalog = catalog if catalog is not None else Catalog(root)
    bucket = _open_bucket(target, client)
    try:
        remote = bucket.list()
    except Exception as exc:
        raise BackupError(bucket.describe(exc)) from None
    local = {rel: st for rel, st in sealed_files(root).items()
             if not any(fnmatch(part, pattern) for part in rel.split("/") for pattern in ignore)}
    run = _Audit(root, bucket, catalog, remote, local, node)
    foreign = run.run()
    uploaded = Uploader(root, bucket, run.summary, run.rows).upload_all(foreign)
    _mark(catalog, {**run.verified, **uploaded})
    run.finish()
    run.summary.seconds = time.monotonic() - started
    return run.summary


def reconcile(root: str, target: Target, catalog: Any = None, progress: Callable[[int, int], None] | None = None,
              on_total: Callable[[int, int], None] | None = None, client: Any = None,
              retention_days: float | None = None, ignore: tuple[str, ...] = (),
              node: str | None = None) -> PassSummary:
    """A whole reconcile (``mode=backup``, quantpylib's ``backup_folder``): the :func:`audit`, then
    every upload it made due and retention (:func:`backup_pending`); one summary.

    ``catalog``: the archive's catalog (default: the one under ``root``, created if there is none).
    ``node``: only the files this node sealed (each node of a cluster backs up its own).
    ``ignore``: file-name patterns (``fnmatch``, matched against every part of a file's relative
    path) not to back up (quantpylib's ``backup_folder(ignore=...)``); files ignored are neither
    recorded nor uploaded by this call.
    ``on_total(files, bytes)`` is called once the uploads are known, ``progress(1, bytes)`` after each.
    """
    from actors.storage.catalog import Catalog

    catalog = catalog if catalog is not None else Catalog(root)
    summary = audit(root, target, catalog, node, client, ignore)
    skip = _Ignored(catalog, ignore) if ignore else catalog
    return backup_pending(root, target, skip, node, progress, on_total, client, retention_days, summary)


class _Ignored:
    """A catalog whose pending files leave out those matching ``ignore`` patterns."""

    def __init__(self, catalog: Any, ignore: tuple[str, ...]) -> None:
        self.catalog, self.ignore = catalog, ignore

    def pending_backup(self, node: str | None = None) -> list[dict[str, Any]]:
        return [row for row in self.catalog.pending_backup(node)
                if not any(fnmatch(part, p) for part in row["key"].split("/") for p in self.ignore)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.catalog, name)


class _Audit:
    """One audit at work: the catalog's rows of the node against the listing and the local tree."""

    def __init__(self, root: str, bucket: Bucket, catalog: Any, remote: dict[str, RemoteObject],
                 local: dict[str, os.stat_result], node: str | None) -> None:
        self.root, self.bucket, self.catalog, self.remote, self.local = root, bucket, catalog, remote, local
        self.node = node
        self.summary = PassSummary()
        self.rows: dict[str, dict[str, Any]] = {row["key"]: row for row in catalog.audit_rows(node)}
        self.verified: Verified = {}         # verified without an upload (HEAD, adoption, legacy record)
        self.unbacked: set[str] = set()      # recorded as in the bucket, but missing or changed there
        self.legacy = _legacy_record(root, bucket.target)

    def run(self) -> list[Todo]:
        """Record unknown local files, check the recorded copies, adopt what the bucket holds; the
        local files no catalog row can describe (unreadable), to be uploaded as they are."""
        unreadable = self._record_unknown()
        for rel, row in self.rows.items():
            if row["backed_up_at"] is not None:
                self._check_copy(rel, row)
        self.summary.repaired = len(self.unbacked)
        if self.unbacked:
            self.catalog.mark_unbacked(sorted(self.unbacked))
            lost = sorted(rel for rel in self.unbacked if rel not in self.local)
            for rel in lost[:20]:
                log.error(f"audit: {self.bucket.key_of(rel)} is missing or changed in the bucket and no longer local: "
                          "that data is gone unless another copy exists")
        foreign: list[Todo] = []
        touched: Verified = {}
        for rel, st in sorted(self.local.items()):
            row = self.rows.get(rel)
            if row is not None and row["backed_up_at"] is not None and not self._local_intact(rel, st, row, touched):
                continue
            if row is not None and row["backed_up_at"] is not None and rel not in self.unbacked:
                continue
            if not self._already_there(rel, st, row) and rel in unreadable:
                foreign.append((rel, st, None))
        self.verified.update(touched)
        return foreign

    def _local_intact(self, rel: str, st: os.stat_result, row: dict[str, Any], touched: Verified) -> bool:
        """A local file whose copy is verified still holds its sealed bytes. Only a file written
        after its copy was verified (mtime) or of another size is hashed; one that contradicts its
        seal record is reported damaged and never uploaded over the good copy."""
        if st.st_size == row["bytes"] and st.st_mtime_ns <= row["backed_up_at"]:
            return True
        path = Path(self.root) / rel
        sha = sha256_file(path)
        if is_damaged(path, sha, row):
            self.summary.damaged_file(rel)
            return False
        if sha == (row.get("backup_sha256") or row["sha256"]) and rel not in self.unbacked:
            touched[rel] = (sha, row.get("backup_etag") or "")     # written again with the same bytes (a restore)
        return True

    def _record_unknown(self) -> set[str]:
        """Local files the catalog does not list get their rows (rebuilt from their footers); the
        ones that cannot be described (not readable Parquet) are returned."""
        from actors.storage.footer import describe_file

        fresh, unreadable = [], set()
        unknown = set(self.local) - set(self.rows)
        if unknown and self.node is not None:      # rows recorded under another node name, held here
            self.rows.update(self.catalog.get_many(sorted(unknown)))
            unknown -= set(self.rows)
        for rel in sorted(unknown):
            try:
                rec = describe_file(self.root, rel)
            except Exception as exc:        # not a readable Parquet file: backed up as it is, hashed here
                log.warning(f"audit: {rel} is not a readable archive file ({type(exc).__name__}); backed up as is")
                unreadable.add(rel)
                continue
            if self.node is not None:
                rec["node"] = self.node
            fresh.append(rec)
        if fresh:
            self.catalog.upsert(fresh)
            log.info(f"audit: recorded {len(fresh)} local file(s) the catalog did not list")
            self.rows.update((rec["key"], rec) for rec in fresh)
        return unreadable

    def _check_copy(self, rel: str, row: dict[str, Any]) -> None:
        """A file recorded as verified in the bucket: still there, unchanged (size and ETag), else repaired."""
        self.summary.audited += 1
        obj = self.remote.get(rel)
        if obj is None:
            self.unbacked.add(rel)
            return
        etag = row.get("backup_etag")
        if etag is None and self.legacy.get(rel, (None,))[0] == row["sha256"]:
            etag = self.legacy[rel][1]          # known from the record of an earlier version
            self.verified[rel] = (row["sha256"], etag)
        if obj.size == row["bytes"] and etag == obj.etag:
            self.summary.skipped += 1
            return
        try:
            head = with_retries(lambda: self.bucket.head(rel))
        except Exception as exc:
            self.summary.failed_file(rel, self.bucket.describe(exc))
            return
        sha = row.get("backup_sha256") or row["sha256"]
        if head_verifies(head, row["bytes"], sha):
            self.verified[rel] = (sha, head.get("ETag", "").strip('"'))
            self.summary.skipped += 1
        else:
            log.warning(f"audit: {self.bucket.key_of(rel)} changed in the bucket (size or ETag); uploading it again")
            self.unbacked.add(rel)

    def _already_there(self, rel: str, st: os.stat_result, row: dict[str, Any] | None) -> bool:
        """The bucket already holds this file's bytes (an earlier pass whose mark was lost, another
        tool): verified and recorded without an upload. A damaged local file is never trusted."""
        obj = self.remote.get(rel)
        if obj is None or obj.size != st.st_size or rel in self.unbacked:
            return False
        path = Path(self.root) / rel
        sha = row["sha256"] if row is not None else sha256_file(path)
        legacy = self.legacy.get(rel)
        if legacy is not None and legacy == (sha, obj.etag):
            self.verified[rel] = (sha, obj.etag)
            self.summary.skipped += 1
            return True
        try:
            head = with_retries(lambda: self.bucket.head(rel))
            if head_verifies(head, st.st_size, sha):
                self.verified[rel] = (sha, head.get("ETag", "").strip('"'))
                self.summary.skipped += 1
                self.summary.verified_existing += 1
                return True
            if is_foreign(head):
                if is_damaged(path, sha256_file(path), row):
                    self.summary.damaged_file(rel)
                    return True
                etag = with_retries(lambda: self._adopt(rel, st, sha, head))
                if etag is not None:
                    self.verified[rel] = (sha, etag)
                    self.summary.skipped += 1
                    return True
        except Exception as exc:
            self.summary.failed_file(rel, self.bucket.describe(exc))
            return True
        return False

    def _adopt(self, rel: str, st: os.stat_result, sha: str, head: dict) -> str | None:
        """Verify an object without our metadata once (its MD5 ETag, else its bytes) and record our
        SHA-256 on it; its new ETag, or None when it holds other bytes (then it is uploaded)."""
        path = Path(self.root) / rel
        same = etag_matches_file(head, path, st.st_size)
        if same is None:
            same = self.bucket.sha256_of_object(rel) == sha
        if not same:
            return None
        etag = self.bucket.record_sha256(rel, sha)
        self.summary.adopted += 1
        log.info(f"adopted {self.bucket.key_of(rel)}: same bytes as the local file, SHA-256 recorded")
        return etag

    def finish(self) -> None:
        """Remember when this root was audited against which bucket; set an earlier version's record aside."""
        state = Path(self.root) / STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        tmp = state / (AUDIT_STATE + ".tmp")
        tmp.write_bytes(orjson.dumps({"scope": self.bucket.target.scope, "at": time.time_ns(), "node": self.node,
                                      "failed": self.summary.failed}))
        os.replace(tmp, state / AUDIT_STATE)
        if self.legacy and not self.summary.failed:
            os.replace(state / LEGACY_STATE, state / (LEGACY_STATE + ".imported"))


def audit_due(root: str, target: Target, interval_s: float) -> bool:
    """An audit is due: none yet of this root against this bucket, or the last one is older than
    ``interval_s`` (or ended with failures)."""
    try:
        state = orjson.loads((Path(root) / STATE_DIR / AUDIT_STATE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return True
    if state.get("scope") != target.scope or state.get("failed"):
        return True
    return time.time_ns() - int(state.get("at", 0)) >= interval_s * 1e9


def _legacy_record(root: str, target: Target) -> dict[str, tuple[str, str]]:
    """``key -> (SHA-256, ETag)`` from an earlier version's ``.backup/verified.json`` for this bucket."""
    path = Path(root) / STATE_DIR / LEGACY_STATE
    if not path.exists():
        return {}
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if data.get("scope") != target.scope:
        return {}
    return {key: (entry[2], entry[3]) for key, entry in (data.get("verified") or {}).items() if len(entry) >= 4}


def _mark(catalog: Any, verified: Verified) -> None:
    if not verified:
        return
    try:
        catalog.mark_backed_up(verified, time.time_ns())
    except Exception as exc:  # the bucket is right; the next audit finds the copies and marks them
        log.warning(f"catalog not updated after backup: {exc}")


def apply_retention(root: str, catalog: Any, days: float, node: str | None = None) -> int:
    """Delete local files whose period ended more than ``days`` ago AND whose copy is verified
    (a catalog query: what expired, not the whole tree); their rows stay, as remote-only."""
    cutoff = time.time_ns() - int(days * 86400 * 1e9)
    try:
        rows = catalog.expired(cutoff, node)
    except Exception as exc:
        log.warning(f"retention skipped, catalog not readable: {exc}")
        return 0
    deleted = []
    for row in rows:
        path = Path(root) / row["key"]
        if not path.exists():
            continue                             # another node's file
        if path.stat().st_size != row["bytes"] or sha256_file(path) != (row.get("backup_sha256") or row["sha256"]):
            log.warning(f"retention: kept {row['key']}: it changed since its copy was verified")
            continue
        path.unlink()
        deleted.append(row["key"])
        log.info(f"retention: deleted local {row['key']} (verified copy in the bucket)")
    if deleted:
        try:
            catalog.mark_remote_only(deleted)
        except Exception as exc:
            log.warning(f"catalog not updated after retention: {exc}")
    return len(deleted)
