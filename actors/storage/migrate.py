"""``mode=migrate``: rewrite every sealed file of an older format into format 3, verified and atomically.

For each local sealed file whose footer declares a format below
:data:`~actors.storage.fileformat.FORMAT_VERSION` (format 1 and 2 files, and files in
quantpylib's own schema):

1. its rows are read and conformed to the record schema (:func:`actors.feed.records.conform`:
   the exact casts of the loaders);
2. they are written with :func:`~actors.storage.fileformat.write_sealed` to a hidden temp file
   beside it (fsynced), keeping its footer (the write calls it holds, node, period end) with a
   new ``sealed_at``;
3. the temp file is read back and must hold the same rows with the same values (floats compared
   bit for bit) in exactly the format-3 schema; a file that fails this, or changed on disk
   meanwhile, is left untouched and reported;
4. it is renamed over the old file (atomic) and the folder fsynced, then its catalog row is
   rebuilt from the new footer (size, SHA-256, row groups, ``sealed_at``; the backup marks are
   cleared so the next backup pass uploads the new bytes).

Migration is idempotent: a format-3 file is skipped, and a catalog row older than its file's
footer (a run stopped between the rename and the catalog commit) is refreshed. A file migrated
before its catalog row is refreshed is not taken for damage: its footer is newer than the row
(:func:`actors.storage.integrity.is_damaged`). Memory is one file at a time. Run it while no
archiver writes to the root (a late merge rewrites a sealed file too).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from actors.feed.records import SCHEMAS, SchemaMismatch, conform
from actors.logs import get_logger
from actors.storage.fileformat import FORMAT_KEY, FORMAT_VERSION, format_version, temp_path, write_sealed
from actors.storage.footer import describe_file
from actors.storage.integrity import FILE_METADATA
from actors.storage.layout import parse_relpath, sealed_files
from actors.storage.spool import fsync_dir

log = get_logger("migrate")
COMMIT_EVERY = 200          # catalog rows committed in one upsert


@dataclass
class MigrateResult:
    """What one migration pass did."""

    migrated: list[str] = field(default_factory=list)
    current: int = 0                                  # already format 3
    refreshed: int = 0                                # catalog rows brought up to their file
    failed: dict[str, str] = field(default_factory=dict)   # key -> why it was left as it was
    bytes_before: int = 0
    bytes_after: int = 0

    def line(self) -> str:
        """A one-line summary."""
        size = (f", {self.bytes_before / 1e6:.1f} MB -> {self.bytes_after / 1e6:.1f} MB"
                if self.migrated else "")
        return (f"migrated {len(self.migrated)} file(s) to format {FORMAT_VERSION}{size}; "
                f"{self.current} already format {FORMAT_VERSION}; {self.refreshed} catalog row(s) refreshed; "
                f"{len(self.failed)} failed")


class VerificationError(ValueError):
    """The rewritten file does not hold the rows of the original."""


def _bit_view(column: pa.ChunkedArray) -> pa.Array:
    """A column whose floats are compared by their bits (NaN equals NaN, -0.0 differs from 0.0)."""
    array = column.combine_chunks()
    if pa.types.is_floating(array.type):
        return array.view(pa.int64())
    if pa.types.is_list(array.type) and pa.types.is_floating(array.type.value_type):
        return array.view(pa.list_(pa.int64()))
    return array


def same_values(got: pa.Table, want: pa.Table) -> bool:
    """``got`` holds exactly ``want``'s rows: same schema, same values (floats by their bits)."""
    if not got.schema.remove_metadata().equals(want.schema.remove_metadata()) or got.num_rows != want.num_rows:
        return False
    return all(_bit_view(a).equals(_bit_view(b)) for a, b in zip(got.columns, want.columns))


def rows_of(path: str, channel: str) -> pa.Table:
    """A sealed file's rows (any format, quantpylib's too) in the record schema of ``channel``."""
    from actors.restore.loading import QUANTPYLIB_COLUMNS, from_quantpylib

    table = pq.read_table(path)
    if "ts_local" not in table.column_names and QUANTPYLIB_COLUMNS[channel] <= set(table.column_names):
        return from_quantpylib(table, channel)
    return conform(table, channel)


def migrate_file(root: str, rel: str) -> tuple[int, int]:
    """Rewrite one file into format 3 (see module docstring, steps 1-4 without the catalog).

    Returns (bytes before, bytes after); raises :class:`VerificationError`, ``SchemaMismatch`` or
    ``OSError`` leaving the file as it was.
    """
    final = os.path.join(root, rel)
    channel = parse_relpath(rel).stream.channel
    if channel not in SCHEMAS:
        raise SchemaMismatch(f"unknown channel {channel!r}")
    before = os.stat(final)
    old = pq.ParquetFile(final)
    metadata = dict(old.schema_arrow.metadata or {})
    want = rows_of(final, channel)
    info = orjson.loads(metadata[FILE_METADATA]) if FILE_METADATA in metadata else {}
    info.update(sealed_at=time.time_ns(), migrated_from=format_version(metadata))
    metadata = {k: v for k, v in metadata.items() if k not in (FORMAT_KEY, b"ARROW:schema")}
    metadata[FILE_METADATA] = orjson.dumps(info)
    tmp = temp_path(final)
    try:
        write_sealed(tmp, want, channel, metadata)
        stored = pq.read_table(tmp)
        if not stored.schema.remove_metadata().equals(SCHEMAS[channel]):
            raise VerificationError(f"the rewritten file's schema is not format {FORMAT_VERSION}'s")
        if not same_values(stored, want):
            raise VerificationError("the rewritten file does not hold the same rows and values")
        now = os.stat(final)
        if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise VerificationError("the file changed while it was migrated (an archiver writing?); run again")
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(final))
    return before.st_size, os.path.getsize(final)


def _footer_sealed_at(path: str) -> tuple[int, int | None]:
    """(format version, footer ``sealed_at``) of a file, from its footer alone."""
    metadata = pq.read_schema(path).metadata or {}
    info = orjson.loads(metadata[FILE_METADATA]) if FILE_METADATA in metadata else {}
    return format_version(metadata), info.get("sealed_at")


def migrate(root: str | Path, catalog: Any | None = None, progress: Callable[[int], None] | None = None,
            on_total: Callable[[int], None] | None = None) -> MigrateResult:
    """Bring every local sealed file under ``root`` to format 3 (module docstring); ``catalog``
    (a :class:`~actors.storage.catalog.Catalog`, optional) gets their rows. ``progress(n)`` is
    called per file looked at, ``on_total(n)`` once with the number of files."""
    root = str(root)
    result = MigrateResult()
    files = sorted(sealed_files(root))
    if on_total is not None:
        on_total(len(files))
    records = catalog.get_many(files) if catalog is not None and files else {}
    pending: list[dict] = []

    def commit(force: bool = False) -> None:
        if catalog is not None and pending and (force or len(pending) >= COMMIT_EVERY):
            catalog.upsert(list(pending))
            pending.clear()

    for rel in files:
        path = os.path.join(root, rel)
        try:
            version, sealed_at = _footer_sealed_at(path)
            if version >= FORMAT_VERSION:
                result.current += 1
                row = records.get(rel)
                if row is not None and sealed_at and sealed_at > (row.get("sealed_at") or 0):
                    pending.append(_refreshed(root, rel, row))
                    result.refreshed += 1
            else:
                size_before, size_after = migrate_file(root, rel)
                result.migrated.append(rel)
                result.bytes_before += size_before
                result.bytes_after += size_after
                if catalog is not None:
                    pending.append(_refreshed(root, rel, records.get(rel)))
                log.info(f"MIGRATE {rel} format {version} -> {FORMAT_VERSION}: {size_before} -> {size_after} bytes")
        except (VerificationError, SchemaMismatch, OSError, pa.ArrowException, ValueError) as exc:
            reason = " ".join(str(exc).split())[:300]
            result.failed[rel] = reason
            log.error(f"migrate: {rel} left as it was: {reason}")
        commit()
        if progress is not None:
            progress(1)
    commit(force=True)
    return result


def _refreshed(root: str, rel: str, old: dict | None) -> dict:
    """The catalog row of a rewritten file: rebuilt from its footer, its backup marks cleared
    (the bucket holds the old bytes until the next backup pass), still local."""
    rec = describe_file(root, rel)
    if old is not None and old.get("node") and not rec.get("node"):
        rec["node"] = old["node"]
    return rec

