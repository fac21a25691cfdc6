"""quantpylib-compatible API: a quantpylib script runs against tickarchive by changing its imports.

    from actors.quantpylib import get_boto_client, backup_folder, restore_folder, \\
        load_lob_archives, load_trade_archives

    s3 = await get_boto_client(os.getenv("BACKBLAZE_ENDPOINT"), os.getenv("BACKBLAZE_ID"), os.getenv("BACKBLAZE_KEY"))
    await backup_folder(s3=s3, local="archives", bucket="my-bucket")
    search_files = load_lob_archives("binance", "BTCUSDT", 20, "2025-01-05:22", "2025-01-06:02", path="archives",
                                     only_paths=True)
    await restore_folder(s3=s3, local="archives", bucket="my-bucket", match_files=search_files)
    lobs = load_lob_archives("binance", "BTCUSDT", 20, "2025-01-05:22", "2025-01-06:02", path="archives")

The parameters and defaults are quantpylib's own (``local``; ``ignore=['.*', '*.parquet.*']`` on backup;
``remote_subpaths=['']`` and ``match_files=[]`` on restore), so the tutorial's keyword calls run unchanged.

These are thin wrappers over tickarchive's own verified code, not a second implementation:
``backup_folder`` is one reconcile pass (checksummed uploads verified with a ``HEAD``; objects
quantpylib uploaded before are verified once and adopted, not uploaded again), ``restore_folder``
downloads each matching object verified against the SHA-256 stored with it (temp file + rename),
and the loaders are :mod:`actors.restore.loading` (quantpylib's shapes; ``only_paths=True`` lists the
hourly paths a range needs, existing or not). Blocking work runs in a worker thread, so the
coroutines can be awaited from an asyncio program as quantpylib's are.
"""
from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from actors.backup import Bucket, PassSummary, Target, reconcile
from actors.restore.loading import load_lob_archives, load_trade_archives
from actors.restore.restorer import safe_relpath
from actors.storage.layout import LayoutError, parse_relpath
from actors.storage.catalog import CATALOG_DIR, Catalog

__all__ = ["S3Client", "get_boto_client", "backup_folder", "restore_folder", "load_lob_archives",
           "load_trade_archives"]


@dataclass(frozen=True)
class S3Client:
    """What :func:`get_boto_client` returns: an endpoint and its keys (the secret is never printed)."""

    endpoint_url: str | None
    access_key: str | None
    secret_key: str | None = field(default=None, repr=False)

    def bucket(self, name: str, workers: int = 8) -> Bucket:
        """Our verified bucket access for ``name`` (Backblaze B2 endpoints without S3 checksum headers)."""
        endpoint = self.endpoint_url
        if endpoint and not endpoint.startswith(("http://", "https://")):
            endpoint = "https://" + endpoint
        b2 = re.match(r"^https?://s3\.([a-z0-9-]+)\.backblazeb2\.com", endpoint or "")
        target = Target("b2" if b2 else "s3", endpoint, name, region=b2.group(1) if b2 else None,
                        access_key=self.access_key, secret_key=self.secret_key, workers=workers,
                        checksums=not b2)
        return Bucket(target)


async def get_boto_client(endpoint_url: str | None, aws_access_key_id: str | None,
                          aws_secret_access_key: str | None) -> S3Client:
    """quantpylib's ``get_boto_client``: the handle the other calls take."""
    return S3Client(endpoint_url, aws_access_key_id, aws_secret_access_key)


QUANTPYLIB_IGNORE = (".*", "*.parquet.*")       # hidden files and folders, temp files


async def backup_folder(s3: S3Client, local: str | Path, bucket: str,
                        ignore: Iterable[str] = QUANTPYLIB_IGNORE) -> PassSummary:
    """Mirror the archive under ``local`` to ``bucket`` (one verified reconcile pass).

    ``ignore``: file-name patterns (``fnmatch``, matched against every part of a file's path) that
    are not backed up. Hidden folders and temp files are never backed up, whatever ``ignore`` says.
    """
    root = str(local)
    catalog = Catalog(root) if (Path(root) / CATALOG_DIR).is_dir() else None
    return await asyncio.to_thread(reconcile, root, s3.bucket(bucket).target, catalog, ignore=tuple(ignore))


async def restore_folder(s3: S3Client, local: str | Path, bucket: str, remote_subpaths: Iterable[str] = ("",),
                         match_files: Iterable[str | Path] = ()) -> list[str]:
    """Download the archive objects under ``remote_subpaths`` (folders relative to the archive root;
    ``''`` is all of it) into ``local``, each verified; returns the local paths restored.

    ``match_files`` (paths under ``local``, e.g. from ``only_paths=True``) narrows it to those files;
    the ones the bucket does not hold are skipped, as quantpylib does. Unsafe names are refused.
    """
    root = Path(local)
    rels = [Path(p).relative_to(root).as_posix() if Path(p).is_absolute() or str(p).startswith(str(root))
            else Path(p).as_posix() for p in match_files]
    subpaths = [str(s).strip("/") for s in remote_subpaths]
    return await asyncio.to_thread(_restore, s3.bucket(bucket), root, rels, subpaths)


def _under(rel: str, subpaths: list[str]) -> bool:
    return any(not sub or rel == sub or rel.startswith(sub + "/") for sub in subpaths)


def _restore(bucket: Bucket, root: Path, rels: list[str], subpaths: list[str]) -> list[str]:
    held: set[str] = set()
    if rels:
        for folder in sorted({rel.rsplit("/", 1)[0] + "/" for rel in rels}):     # one listing per month folder
            held.update(bucket.list(folder))
        wanted = [rel for rel in rels if rel in held and _under(rel, subpaths)]
    else:                                      # everything under the subpaths that is an archive file
        for sub in subpaths:
            held.update(rel for rel in bucket.list(f"{sub}/" if sub else "") if _is_archive_file(rel))
        wanted = sorted(held)
    for rel in wanted:
        safe_relpath(rel, root)
    with ThreadPoolExecutor(max_workers=bucket.target.workers) as pool:
        list(pool.map(lambda rel: bucket.download(rel, root / rel), wanted))
    return [str(root / rel) for rel in wanted]


def _is_archive_file(rel: str) -> bool:
    try:
        parse_relpath(rel)
    except LayoutError:
        return False
    return not any(part.startswith(".") for part in rel.split("/"))
