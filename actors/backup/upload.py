"""Uploading sealed files, each verified before it counts (used by every backup pass).

:class:`Uploader` sends files concurrently (``target.workers``) and returns what the bucket
verifiably holds, ``key -> (SHA-256, ETag)``:

* a file whose SHA-256 the catalog recorded at seal goes unread (``sendfile``) under that SHA-256
  to an endpoint that refuses contradicting bytes (:meth:`~actors.backup.bucket.Bucket.server_checks_sha256`,
  probed once an hour): the server's check is then the check that the file is intact;
* otherwise, or when the server refuses it, the file is hashed here first, and refused
  (:class:`LocalDamage`, never uploaded) when it contradicts its seal record;
* every upload is verified (the server's echo of the SHA-256 it checked, else a ``HEAD``).

Transient errors are retried (:mod:`actors.backup.retry`); when the endpoint stays down the rest is
skipped (``EndpointDown``) and tried again by the next pass.
"""
from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from actors.backup.bucket import Bucket
from actors.backup.retry import EndpointDown, with_retries
from actors.backup.target import BackupError
from actors.logs import get_logger
from actors.storage.integrity import damage_message, is_damaged, sha256_file

log = get_logger("backup")

Todo = tuple[str, os.stat_result, "str | None"]     # (key, stat, SHA-256 when already known)
Verified = dict[str, tuple[str, str]]               # key -> (SHA-256, ETag) verified in the bucket


class LocalDamage(BackupError):
    """The local file no longer hashes to what was recorded at seal: never uploaded."""


@dataclass
class PassSummary:
    """What one backup pass did."""

    uploaded: int = 0
    uploaded_bytes: int = 0
    skipped: int = 0
    verified_existing: int = 0
    adopted: int = 0              # objects another tool uploaded, verified once and recorded (not re-uploaded)
    failed: int = 0
    deleted_local: int = 0
    repaired: int = 0             # audit: objects found missing or changed in the bucket (uploaded again)
    audited: int = 0              # audit: objects checked against the listing
    errors: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)     # local files that contradict their seal hash
    seconds: float = 0.0

    def line(self) -> str:
        parts = [f"uploaded {self.uploaded} files, {self.uploaded_bytes / 1e6:.1f} MB, skipped {self.skipped}, "
                 f"failed {self.failed}",
                 self.audited and f"audited {self.audited} objects",
                 self.repaired and f"{self.repaired} missing or changed in the bucket (uploaded again)",
                 self.adopted and f"adopted {self.adopted} existing objects (verified, SHA-256 recorded)",
                 self.damaged and f"damaged {len(self.damaged)} (not uploaded; the bucket copies are kept)",
                 self.deleted_local and f"freed {self.deleted_local} local files (retention)"]
        return ", ".join(part for part in parts if part)

    def failed_file(self, rel: str, message: str) -> None:
        self.failed += 1
        self.errors.append(f"{rel}: {message}")

    def damaged_file(self, rel: str) -> None:
        self.damaged.append(rel)
        log.error(f"not uploaded: {damage_message(rel)}; the bucket copy is kept")


class Uploader:
    """Concurrent verified uploads into one bucket (see module docstring)."""

    def __init__(self, root: str, bucket: Bucket, summary: PassSummary,
                 seal_records: dict[str, dict[str, Any]] | None = None) -> None:
        self.root, self.bucket, self.summary = root, bucket, summary
        self.records = seal_records or {}          # key -> catalog row (the SHA-256 recorded at seal)
        self.abort = threading.Event()             # set when the endpoint stays down (see retry.py)
        self.server_checks = False

    def upload_all(self, todo: list[Todo], progress: Callable[[int, int], None] | None = None) -> Verified:
        """Upload ``todo`` concurrently; what verified (failures and damage are in the summary)."""
        verified: Verified = {}
        if not todo:
            return verified
        self.server_checks = any(sha is None and rel in self.records for rel, _, sha in todo) and \
            self.bucket.server_checks_sha256()
        with ThreadPoolExecutor(max_workers=self.bucket.target.workers) as pool:
            futures = {pool.submit(self._upload, rel, st, sha): (rel, st) for rel, st, sha in todo}
            for future in as_completed(futures):
                rel, st = futures[future]
                result = self._settle(rel, st, future)
                if result is not None:
                    verified[rel] = result
                if progress is not None:
                    progress(1, st.st_size)
        return verified

    def _settle(self, rel: str, st: os.stat_result, future: Future) -> tuple[str, str] | None:
        key = self.bucket.key_of(rel)
        try:
            etag, sha = future.result()
        except LocalDamage:
            self.summary.damaged_file(rel)
            return None
        except Exception as exc:
            self.summary.failed_file(rel, str(exc) if isinstance(exc, BackupError) else self.bucket.describe(exc))
            log.error(f"File exists<NO> upload<{key}> FAILED: {self.summary.errors[-1]}")
            return None
        self.summary.uploaded += 1
        self.summary.uploaded_bytes += st.st_size
        log.info(f"File exists<NO> upload<{key}>", extra={"bytes": st.st_size, "sha256": sha})
        return sha, etag

    def _upload(self, rel: str, st: os.stat_result, sha: str | None) -> tuple[str, str]:
        """Upload one file and verify it; returns (ETag, SHA-256)."""
        path = Path(self.root) / rel
        body = None
        if self.abort.is_set():
            raise EndpointDown()
        if sha is None:
            sealed = self._seal_sha(rel, st)
            if sealed is not None:
                etag = self.bucket.put_sealed(path, rel, st.st_size, sealed)
                if etag is not None:
                    unchanged(rel, path, st)
                    return etag, sealed
            if st.st_size < self.bucket.target.multipart_mb << 20:    # read once: hashed, then sent
                body = path.read_bytes()
            sha = hashlib.sha256(body).hexdigest() if body is not None else sha256_file(path)
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
        unchanged(rel, path, st)
        return etag

    def _seal_sha(self, rel: str, st: os.stat_result) -> str | None:
        """The SHA-256 recorded at seal, when the file can go to the server unread and be checked
        there alone: a catalog row of this size, a single-PUT size, an endpoint that refuses bytes
        contradicting their checksum."""
        record = self.records.get(rel)
        sha = record.get("sha256") if record else None
        if not sha or record.get("bytes") not in (None, st.st_size) or \
                st.st_size >= self.bucket.target.multipart_mb << 20 or not self.server_checks:
            return None
        return sha


def unchanged(rel: str, path: Path, st: os.stat_result) -> None:
    """Raise when the file changed while it was being uploaded (it is uploaded next pass)."""
    now = path.stat()
    if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise BackupError(f"{rel}: the local file changed during the upload; it is uploaded next pass")
