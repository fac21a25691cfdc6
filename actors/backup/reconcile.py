"""Backup: one pass reconciling the sealed local tree with the bucket, verified and resumable.

Plain logic (no Ray); the ``backup`` actor and ``mode=backup`` call :func:`reconcile`.

One pass:

1. lists the sealed local files (:func:`~actors.backup.state.sealed_files`: spools, temp
   files and the catalog are never uploaded) and the bucket (one paged listing under the
   prefix);
2. a file is *in the bucket* when the object has the same size and carries the file's
   SHA-256 (:mod:`actors.backup.verify`). What was verified before is remembered
   (:class:`~actors.backup.state.VerifiedState`), so a no-op pass costs one listing and no
   request per object; an object whose size or ETag changed is checked again with ``HEAD``;
3. uploads what is missing or differs, concurrently (multipart from ``multipart_mb`` up), and
   verifies every upload before it counts (the server's answer echoing the SHA-256 it checked
   against the bytes it stored, else a ``HEAD``). Only then is the object recorded
   as verified, and ``backed_up_at`` plus the checksum set in the catalog (rows are optional:
   a file without one is backed up all the same; a row left unmarked by an earlier pass is
   marked from the local record). A local file that contradicts the SHA-256 recorded at seal
   is never uploaded: it is reported as damaged and the bucket copy is kept. A file new to
   the bucket whose SHA-256 the catalog recorded at seal is sent unread (``sendfile``) under
   that SHA-256 to an endpoint that refuses contradicting bytes (probed once an hour): the
   server's check is then the check that the file is intact, and only a file the server
   refuses is hashed here (and reported damaged if it contradicts its seal). Transient errors
   are retried (:mod:`actors.backup.retry`); when the endpoint stays down the rest of the pass
   is skipped; a pass interrupted at any point resumes next time;
4. optionally (``backup.retention.local_days``) deletes local files whose period ended more
   than N days ago and whose copy was verified, keeping their catalog rows as remote-only.
"""
from __future__ import annotations

import os
import threading
from fnmatch import fnmatch
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from actors.backup.bucket import Bucket, RemoteObject
from actors.backup.retry import EndpointDown, with_retries
from actors.backup.state import VerifiedState, sealed_files
from actors.backup.target import BackupError, Target
from actors.backup.verify import etag_matches_file, head_verifies, is_foreign
from actors.logs import get_logger
from actors.storage.integrity import damage_message, is_damaged, sha256_file
from actors.storage.layout import NS, parse_relpath

SAVE_EVERY_S = 5.0               # how often a long upload saves what it verified so far
log = get_logger("backup")

Todo = tuple[str, os.stat_result, str | None]     # (key, stat, SHA-256 when already known)


class LocalDamage(BackupError):
    """The local file no longer hashes to what was recorded at seal: never uploaded."""


@dataclass
class PassSummary:
    """What one reconcile pass did."""

    uploaded: int = 0
    uploaded_bytes: int = 0
    skipped: int = 0
    verified_existing: int = 0
    adopted: int = 0              # objects another tool uploaded, verified once and recorded (not re-uploaded)
    failed: int = 0
    deleted_local: int = 0
    errors: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)     # local files that contradict their seal hash
    seconds: float = 0.0

    def line(self) -> str:
        parts = [f"uploaded {self.uploaded} files, {self.uploaded_bytes / 1e6:.1f} MB, skipped {self.skipped}, "
                 f"failed {self.failed}",
                 self.adopted and f"adopted {self.adopted} existing objects (verified, SHA-256 recorded)",
                 self.damaged and f"damaged {len(self.damaged)} (not uploaded; the bucket copies are kept)",
                 self.deleted_local and f"freed {self.deleted_local} local files (retention)"]
        return ", ".join(part for part in parts if part)


def reconcile(root: str, target: Target, catalog: Any = None, progress: Callable[[int, int], None] | None = None,
              on_total: Callable[[int, int], None] | None = None, client: Any = None,
              retention_days: float | None = None, ignore: tuple[str, ...] = ()) -> PassSummary:
    """One reconcile pass (see module docstring). Raises BackupError for endpoint/bucket problems.

    ``ignore``: file-name patterns (``fnmatch``) of local files not to back up, matched against every
    part of the file's relative path (quantpylib's ``backup_folder(ignore=...)``).

    ``on_total(files, bytes)`` is called once the work is known, ``progress(1, bytes)`` after
    each upload; ``client`` replaces the boto3 client made from ``target``.
    """
    started = time.monotonic()
    bucket = Bucket(target, client)
    bucket.check()
    try:
        remote = bucket.list()
    except Exception as exc:
        raise BackupError(bucket.describe(exc)) from None
    local = sealed_files(root)
    if ignore:
        local = {rel: st for rel, st in local.items()
                 if not any(fnmatch(part, pattern) for part in rel.split("/") for pattern in ignore)}
    run = _Pass(root, bucket, VerifiedState(root, target), catalog)
    todo = run.triage(local, remote)
    if on_total is not None:
        on_total(len(todo), sum(st.st_size for _, st, _ in todo))
    run.upload_all(todo, progress)
    run.finish(local, retention_days)
    run.summary.seconds = time.monotonic() - started
    return run.summary


class _Pass:
    """One pass at work: its summary, what it verified, and the ``abort`` event its workers share."""

    def __init__(self, root: str, bucket: Bucket, state: VerifiedState, catalog: Any) -> None:
        self.root, self.bucket, self.state, self.catalog = root, bucket, state, catalog
        self.summary = PassSummary()
        self.verified: dict[str, str] = {}       # key -> SHA-256 verified in this pass
        self.records: dict[str, dict] = {}       # catalog rows of the files to hash (seal SHA-256)
        self.abort = threading.Event()           # set when the endpoint stays down (see retry.py)
        self.server_checks = False               # the endpoint refuses bytes that contradict their SHA-256

    def triage(self, local: dict[str, os.stat_result], remote: dict[str, RemoteObject]) -> list[Todo]:
        """Skip what is verified in the bucket and refuse damaged files; returns what to upload."""
        self.records = _seal_records(self.catalog, [rel for rel, st in local.items()
                                                    if not self.state.hash_known(rel, st)])
        todo: list[Todo] = []
        for rel, st in sorted(local.items()):
            obj = remote.get(rel)
            if obj is None:                      # not in the bucket: hashed by the upload worker, in parallel
                self.state.forget(rel)
                todo.append((rel, st, None))
                continue
            sha = self.state.local_sha(rel, Path(self.root) / rel, st)
            if is_damaged(Path(self.root) / rel, sha, self.records.get(rel)):
                self._damaged(rel)
            elif not self._settled(rel, st, sha, obj):
                self.state.forget(rel)
                todo.append((rel, st, sha))
        return todo

    def _settled(self, rel: str, st: os.stat_result, sha: str, obj: RemoteObject) -> bool:
        """Nothing to upload now: verified before (no request) or now (``HEAD``), an object another
        tool uploaded that holds the same bytes (adopted), or the check failed (counted as failed,
        tried again next pass)."""
        entry = self.state.entries.get(rel)
        if entry and entry[0] == st.st_size and entry[2] == sha and (obj.size, obj.etag) == (entry[0], entry[3]):
            self.summary.skipped += 1
            return True
        if obj.size != st.st_size:
            return False
        try:
            head = with_retries(lambda: self.bucket.head(rel), self.abort)
            etag = head.get("ETag", "").strip('"') if head_verifies(head, st.st_size, sha) else None
            if etag is None and is_foreign(head):
                etag = with_retries(lambda: self._adopt(rel, st, sha, head), self.abort)
        except Exception as exc:
            self._failed(rel, exc)
            return True
        if etag is None:
            return False
        self._verified(rel, st, sha, etag)
        self.summary.skipped += 1
        self.summary.verified_existing += 1
        return True

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

    def upload_all(self, todo: list[Todo], progress: Callable[[int, int], None] | None) -> None:
        """Upload concurrently (``target.workers``), saving the local record every ``SAVE_EVERY_S``.

        (By time, not by file count: the record grows with the archive, and saving it every 200
        files made a first backup of 100,000 files write it 500 times.)"""
        saved_at = time.monotonic()
        self.server_checks = any(sha is None and rel in self.records for rel, _, sha in todo) and \
            self.bucket.server_checks_sha256()
        with ThreadPoolExecutor(max_workers=self.bucket.target.workers) as pool:
            futures = {pool.submit(self._upload, rel, st, sha): (rel, st) for rel, st, sha in todo}
            for future in as_completed(futures):
                rel, st = futures[future]
                self._settle_upload(rel, st, future)
                if progress is not None:
                    progress(1, st.st_size)
                if time.monotonic() - saved_at >= SAVE_EVERY_S:
                    self.state.save()
                    saved_at = time.monotonic()
        self.state.save()

    def _upload(self, rel: str, st: os.stat_result, sha: str | None) -> tuple[str, str]:
        """Upload one file and verify it; returns (ETag, SHA-256).

        ``sha`` None: a file with a catalog row goes to an endpoint that checks checksums
        unread, under its seal SHA-256 (see :meth:`_seal_sha`); otherwise, or when the server
        refuses it, the file is hashed here first and refused (:class:`LocalDamage`) when it
        contradicts the catalog row made at seal.
        """
        path = Path(self.root) / rel
        body = None
        if sha is None:
            if self.abort.is_set():
                raise EndpointDown()
            sealed = self._seal_sha(rel, st)
            if sealed is not None:
                etag = self.bucket.put_sealed(path, rel, st.st_size, sealed)
                if etag is not None:
                    self._unchanged(rel, path, st)
                    self.state.remember_hash(rel, st, sealed)      # the server just hashed its bytes
                    return etag, sealed
            if st.st_size < self.bucket.target.multipart_mb << 20:    # read once: hashed, then sent
                body = path.read_bytes()
            sha = self.state.local_sha(rel, path, st, body)
            if is_damaged(path, sha, self.records.get(rel)):
                raise LocalDamage(damage_message(rel))
        return with_retries(lambda: self._put_verified(rel, path, st, sha, body), self.abort), sha

    def _put_verified(self, rel: str, path: Path, st: os.stat_result, sha: str, body: bytes | None = None) -> str:
        """Upload and verify: the server's echo of our SHA-256 (it checked the bytes it stored), else a ``HEAD``."""
        uploaded = self.bucket.upload(path, rel, st.st_size, sha, body)
        if uploaded.checksum_verified and uploaded.etag:
            etag: str | None = uploaded.etag
        else:
            etag = self.bucket.verified_etag(rel, st.st_size, sha, uploaded.expected_etag)
        if etag is None:
            raise BackupError(f"{rel}: uploaded object does not verify (size, SHA-256 or ETag differ)")
        self._unchanged(rel, path, st)
        return etag

    def _seal_sha(self, rel: str, st: os.stat_result) -> str | None:
        """The SHA-256 recorded at seal, when the file can go to the server unread and be checked
        there alone (:meth:`~actors.backup.bucket.Bucket.put_sealed`): a catalog row, a
        single-PUT size, an endpoint that refuses bytes contradicting their checksum."""
        record = self.records.get(rel)
        sha = record.get("sha256") if record else None
        if not sha or st.st_size >= self.bucket.target.multipart_mb << 20 or not self.server_checks:
            return None
        return sha

    @staticmethod
    def _unchanged(rel: str, path: Path, st: os.stat_result) -> None:
        now = path.stat()
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            raise BackupError(f"{rel}: the local file changed during the upload; it is uploaded next pass")

    def _settle_upload(self, rel: str, st: os.stat_result, future: Future) -> None:
        key = self.bucket.key_of(rel)
        try:
            etag, sha = future.result()
        except LocalDamage:
            self._damaged(rel)
        except Exception as exc:
            self._failed(rel, exc)
            log.error(f"File exists<NO> upload<{key}> FAILED: {self.summary.errors[-1]}")
        else:
            self._verified(rel, st, sha, etag)
            self.summary.uploaded += 1
            self.summary.uploaded_bytes += st.st_size
            log.info(f"File exists<NO> upload<{key}>", extra={"bytes": st.st_size, "sha256": sha})

    def _verified(self, rel: str, st: os.stat_result, sha: str, etag: str) -> None:
        self.state.record(rel, st.st_size, st.st_mtime_ns, sha, etag)
        self.verified[rel] = sha

    def _failed(self, rel: str, exc: BaseException) -> None:
        self.summary.failed += 1
        self.summary.errors.append(f"{rel}: {exc if isinstance(exc, BackupError) else self.bucket.describe(exc)}")

    def _damaged(self, rel: str) -> None:
        self.summary.damaged.append(rel)
        self.state.forget_hash(rel)              # checked again next pass, never trusted from the cache
        log.error(f"not uploaded: {damage_message(rel)}; the bucket copy is kept")

    def finish(self, local: dict[str, os.stat_result], retention_days: float | None) -> None:
        """Mark the catalog (this pass's verifications and rows an earlier pass left unmarked), then retention."""
        self.summary.damaged.sort()
        _mark_catalog(self.catalog, {**_unmarked_verified(self.catalog, self.state, local), **self.verified})
        if retention_days:
            self.summary.deleted_local = apply_retention(self.root, self.state, local, self.catalog, retention_days)
            self.state.save()


def _seal_records(catalog: Any, keys: list[str]) -> dict[str, dict]:
    """Catalog rows (SHA-256 and sealed_at recorded at seal) of the files about to be hashed."""
    if catalog is None or not keys or not hasattr(catalog, "get_many"):
        return {}
    try:
        return catalog.get_many(keys)
    except Exception as exc:    # no reference to check against: files are uploaded as they are
        log.warning(f"catalog not readable, local files not checked against their seal hashes: {exc}")
        return {}


def _unmarked_verified(catalog: Any, state: VerifiedState, local: dict[str, os.stat_result]) -> dict[str, str]:
    """Catalog rows not (or differently) marked although their file is verified in the bucket.

    Heals a catalog update that failed after an earlier pass, and rows added later (reindex),
    without any request to the bucket: the local record says what was verified.
    """
    if catalog is None or not state.entries:
        return {}
    try:
        if hasattr(catalog, "query"):
            table = catalog.query("backed_up_at IS NULL OR backup_sha256 IS NULL", columns=["key", "backup_sha256"])
        else:
            table = catalog.all().select(["key", "backup_sha256"])
    except Exception as exc:
        log.warning(f"catalog not readable for backup bookkeeping: {exc}")
        return {}
    out = {}
    for key, marked in zip(table.column("key").to_pylist(), table.column("backup_sha256").to_pylist()):
        entry = state.entries.get(key)
        st = local.get(key)
        if entry and st is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns and marked != entry[2]:
            out[key] = entry[2]
    return out


def _mark_catalog(catalog: Any, verified: dict[str, str]) -> None:
    if catalog is None or not verified:
        return
    try:
        catalog.mark_backed_up(verified, time.time_ns())
    except Exception as exc:  # the bucket is right; the catalog is rebuilt by mode=reindex if need be
        log.warning(f"catalog not updated after backup: {exc}")


def apply_retention(root: str, state: VerifiedState, local: dict[str, os.stat_result], catalog: Any,
                    days: float) -> int:
    """Delete local files whose period ended more than ``days`` ago AND whose copy is verified."""
    cutoff = time.time_ns() - int(days * 86400 * NS)
    deleted = []
    for rel, st in local.items():
        parsed = parse_relpath(rel)
        end = parsed.period_end_ns or parsed.period_start_ns
        entry = state.entries.get(rel)
        if end > cutoff or not entry:
            continue
        path = Path(root) / rel
        if entry[0] != st.st_size or entry[2] != sha256_file(path):
            continue                         # changed since it was verified: keep it
        path.unlink()
        deleted.append(rel)
        log.info(f"retention: deleted local {rel} (verified copy in the bucket)")
    if deleted and catalog is not None:
        try:
            catalog.mark_remote_only(deleted)
        except Exception as exc:
            log.warning(f"catalog not updated after retention: {exc}")
    return len(deleted)
