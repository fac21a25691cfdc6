"""Modes other than ``archive``: backup, restore, status, reindex, migrate, export (plain processes, no Ray)."""
from __future__ import annotations

import sys

from actors.cli.config import Settings


def run(settings: Settings) -> int:
    """Run one non-archive mode; returns the exit status.

    Whatever the mode, an embedded S3 server it started (``backup=local``) is stopped when
    it ends; one started by a running archiver is left to that archiver.
    """
    from actors.cli import restore_modes
    from actors.backup import stop_embedded
    from actors.backup.embedded import SeaweedError

    modes = {"backup": run_backup, "restore": restore_modes.run_restore, "status": restore_modes.run_status,
             "reindex": restore_modes.run_reindex, "migrate": run_migrate, "export": restore_modes.run_export}
    try:
        return modes[settings.mode](settings)
    except SeaweedError as exc:
        print(f"error: embedded S3 server: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_embedded()


def run_backup(settings: Settings) -> int:
    """The audit of the whole bucket, then every upload it made due, with a progress bar and a
    one-line summary (exit 1 if anything failed)."""
    from tqdm import tqdm

    from actors.backup import BackupError, reconcile, resolve_target, stop_embedded
    from actors.storage.catalog import Catalog
    from actors.storage.integrity import damage_message

    section = settings.backup_section()
    try:
        target = resolve_target(section, settings.root)
        if target is None:
            print("error: backup=none: choose a target (backup=local, backup=s3 backup.endpoint=... "
                  "backup.bucket=..., or backup=b2 backup.bucket=...)", file=sys.stderr)
            return 2
        bars: list = []                  # created once the bucket answered and the work is known
        files = {"done": 0, "total": 0}

        def on_total(n: int, nbytes: int) -> None:
            files["total"] = n
            bars.append(tqdm(unit="B", unit_scale=True, desc="backup", file=sys.stderr, total=nbytes,
                             disable=True if n == 0 else None))   # None: no bar when stderr is not a terminal

        def progress(n: int, nbytes: int) -> None:
            files["done"] += n
            bars[0].set_postfix_str(f"{files['done']}/{files['total']} files")
            bars[0].update(nbytes)

        retention = (section.get("retention") or {}).get("local_days")
        try:
            import logging

            from tqdm.contrib.logging import logging_redirect_tqdm

            # JSON log lines (one per upload) print above the bar instead of through it
            with logging_redirect_tqdm(loggers=[logging.getLogger("tickarchive")]):
                if sys.stderr.isatty():
                    print("backup: auditing the bucket against the catalog ...", file=sys.stderr)
                summary = reconcile(settings.root, target, Catalog(settings.root), progress=progress,
                                    on_total=on_total, retention_days=float(retention) if retention else None)
        finally:
            for bar in bars:
                bar.close()
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_embedded()
    for err in summary.errors[:10]:
        print(f"failed: {err}", file=sys.stderr)
    for rel in summary.damaged[:20]:
        print(f"damaged: {damage_message(rel)}", file=sys.stderr)
    print(summary.line())
    return 1 if summary.failed or summary.damaged else 0


def run_migrate(settings: Settings) -> int:
    """Rewrite every older-format file into format 3 (:mod:`actors.storage.migrate`) with a progress
    bar, then, when a backup is configured, a backup pass uploads the rewritten files. Exit 1 when a
    file failed verification (it is left as it was and named), or the backup pass failed."""
    from pathlib import Path

    from tqdm import tqdm

    from actors.storage.catalog import CATALOG_DIR, Catalog, CatalogError
    from actors.storage.migrate import migrate

    catalog = Catalog(settings.root) if (Path(settings.root) / CATALOG_DIR).is_dir() else None
    bar = tqdm(unit="file", desc="migrate", file=sys.stderr)
    try:
        result = migrate(settings.root, catalog, progress=bar.update, on_total=lambda n: bar.reset(total=n))
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    for rel, reason in list(result.failed.items())[:20]:
        print(f"failed (left as it was): {rel}: {reason}", file=sys.stderr)
    print(result.line())
    status = 1 if result.failed else 0
    if settings.backup_section().get("name", "none") != "none" and result.migrated:
        print(f"backup: uploading the {len(result.migrated)} rewritten file(s)")
        status = max(status, run_backup(settings))
    return status
