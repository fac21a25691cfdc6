"""Backup: the sealed archive mirrored to an S3-compatible bucket, verified and resumable.

Modules: ``target`` (the ``backup`` config group and where backups go), ``bucket`` (the S3
calls of backup and restore: listing, HEAD, upload, verified download, ranged reads),
``verify`` (SHA-256, S3 checksums, MD5 ETags), ``retry`` (the one retry policy), ``upload``
(verified uploads), ``reconcile`` (the pass after each seal, the audit, retention), ``schedule``
(when passes run) and ``embedded`` (the SeaweedFS server of ``backup=local``). What is verified
in the bucket is recorded in the catalog. Plain logic, no Ray.
"""
from actors.backup.bucket import Bucket, RemoteObject, open_bucket
from actors.backup.embedded import embedded_dir, ensure_embedded, stop_embedded
from actors.backup.reconcile import apply_retention, audit, audit_due, backup_pending, reconcile
from actors.backup.target import BackupError, Target, resolve_target, validate_section
from actors.backup.upload import LocalDamage, PassSummary
from actors.backup.verify import MismatchError

__all__ = ["BackupError", "Bucket", "LocalDamage", "MismatchError", "PassSummary", "RemoteObject", "Target",
           "apply_retention", "audit", "audit_due", "backup_pending", "embedded_dir", "ensure_embedded", "open_bucket",
           "reconcile", "resolve_target", "stop_embedded", "validate_section"]
