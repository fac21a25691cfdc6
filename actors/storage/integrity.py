"""Is a sealed file still the file that was sealed? SHA-256 against the catalog's record.

A file's SHA-256 is recorded in the catalog when it is sealed. A local file whose bytes no
longer hash to it was damaged on disk (bit rot, a stray write, a bad copy): backup must not
upload it over the good bucket copy, loads must refuse it, status must flag it, and restore
replaces it with the verified bucket copy. The one legitimate change of a sealed file is a
late merge, which writes a new version with a newer ``sealed_at`` in its footer; a catalog
row that missed that update (it is retried) is recognised by that footer, not called damage.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Iterable

import orjson

from actors.errors import TickarchiveError

FILE_METADATA = b"tickarchive.file"     # footer: {"node", "sealed_at", "period_end"}


class DamagedFileError(TickarchiveError, ValueError):
    """A local file no longer matches the SHA-256 recorded when it was sealed."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_cache: dict[tuple[str, int, int, int], str] = {}
_cache_lock = threading.Lock()


def cached_sha256(path: str | Path) -> str:
    """SHA-256 of a file, remembered in this process while its inode, size and mtime stay."""
    st = os.stat(path)
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _cache_lock:
        known = _cache.get(key)
    if known is not None:
        return known
    sha = sha256_file(path)
    with _cache_lock:
        if len(_cache) > 100_000:
            _cache.clear()
        _cache[key] = sha
    return sha


def footer_sealed_at(path: str | Path) -> int | None:
    """``sealed_at`` from a file's footer, None when the footer is unreadable or has none."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).schema_arrow.metadata or {}
        return int(orjson.loads(meta[FILE_METADATA]).get("sealed_at") or 0) or None
    except Exception:       # damaged footer, not Parquet, foreign file
        return None


def is_damaged(path: str | Path, sha: str, record: dict[str, Any] | None) -> bool:
    """True when ``sha`` (the file's hash now) contradicts the catalog ``record`` of the file."""
    if not record or not record.get("sha256") or record["sha256"] == sha:
        return False
    recorded_at = record.get("sealed_at") or 0
    sealed_at = footer_sealed_at(path)
    return sealed_at is None or sealed_at <= recorded_at


def damage_message(rel: str) -> str:
    return (f"{rel}: the local file does not match the SHA-256 recorded when it was sealed (damaged "
            "on disk); restore it from the bucket (mode=restore) or re-run mode=reindex if it was "
            "replaced on purpose")


def check_files(root: str | Path, rels: Iterable[str], records: dict[str, dict[str, Any]]) -> None:
    """Raise :class:`DamagedFileError` naming every local file that contradicts its record."""
    bad = []
    for rel in rels:
        record = records.get(rel)
        if not record:
            continue
        path = Path(root) / rel
        if is_damaged(path, cached_sha256(path), record):
            bad.append(rel)
    if bad:
        raise DamagedFileError("; ".join(damage_message(rel) for rel in bad[:5])
                               + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""))
