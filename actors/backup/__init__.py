"""Backup: the sealed archive mirrored to an S3-compatible bucket, verified and resumable.

Modules: ``target`` (the ``backup`` config group and where backups go), ``bucket`` (the S3
calls of backup and restore: listing, HEAD, upload, verified download, ranged reads),
``verify`` (SHA-256, S3 checksums, MD5 ETags), ``retry`` (the one retry policy), ``state``
(sealed files and what is known verified), ``reconcile`` (the pass and retention) and
``embedded`` (the SeaweedFS server of ``backup=local``). Plain logic, no Ray.
"""
from actors.backup.bucket import Bucket, RemoteObject, open_bucket
from actors.backup.embedded import embedded_dir, ensure_embedded, stop_embedded
from actors.backup.reconcile import LocalDamage, PassSummary, apply_retention, reconcile
from actors.backup.state import VerifiedState, sealed_files
from actors.backup.target import BackupError, Target, resolve_target, validate_section
from actors.backup.verify import MismatchError

__all__ = ["BackupError", "Bucket", "LocalDamage", "MismatchError", "PassSummary", "RemoteObject", "Target",
           "VerifiedState", "apply_retention", "embedded_dir", "ensure_embedded", "open_bucket", "reconcile",
           "resolve_target", "sealed_files", "stop_embedded", "validate_section"]
