"""Modes other than ``archive``: backup, restore, status, reindex, export (plain processes, no Ray)."""
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
             "reindex": restore_modes.run_reindex, "export": restore_modes.run_export}
    try:
        return modes[settings.mode](settings)
    except SeaweedError as exc:
        print(f"error: embedded S3 server: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_embedded()


def run_backup(settings: Settings) -> int:
    """One reconcile pass with a progress bar and a one-line summary (exit 1 if anything failed)."""
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
