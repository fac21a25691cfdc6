"""Restore and query: which files cover a range, fetch them verified, load exactly the range.

Plain logic (no Ray); the ``restore`` actor and ``mode=restore|status|reindex`` wrap it.

* :meth:`Restorer.paths` finds the files of one stream that overlap a range: from the
  catalog, or — for a range the catalog does not know (a fresh workstation) — from the local
  tree and the bucket listing of the range's month prefixes (one paged listing per month).
* :meth:`Restorer.restore` downloads what is missing locally, concurrently, verifying size
  and SHA-256 against the catalog or the checksum stored with the object; files are written
  to a hidden temp file and renamed into place, so a reader never sees a partial file. A
  mismatch is an error naming the key; a file already present and valid is skipped.
* :meth:`Restorer.load` returns the rows with ``start <= ts_local < end`` as Arrow, reading
  only the row groups the range needs.
* :meth:`Restorer.coverage` reports rows, bytes and where each stream-hour lives, plus the
  gap events in the range.
* :func:`reindex` rebuilds the catalog from the Parquet footers of the local tree and of
  the bucket (ranged reads of the footer only).

The bucket is backup's :class:`actors.backup.Bucket` (listing, verified downloads, ranged
reads). Bucket keys are ``{prefix}/{path relative to the archive root}``. A key that would
escape the root (``..``, absolute, backslashes, hidden or odd parts) is refused.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa

from actors.backup.bucket import Bucket, open_bucket
from actors.backup.verify import MismatchError
from actors.errors import TickarchiveError
from actors.storage.catalog import Catalog, CatalogError, as_ns_ints, sql_str
from actors.storage.layout import (HOUR_NS, MARKETS, LayoutError, StreamKey, file_in_range, month_of, parse_relpath,
                                   sealed_files, split_market, stream_files)
from actors.restore.coverage import FileFacts, HourCoverage, hour_coverage, read_marks, uncovered_hours
from actors.restore.loading import DEFAULT_MARKET, read_range
from actors.logs import get_logger
from actors.feed.records import SCHEMAS
from actors.restore.timerange import TimeLike, hours_between, parse_range
from actors.storage.integrity import DamagedFileError, cached_sha256, damage_message, is_damaged, sha256_file

log = get_logger("restore")

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")


class RestoreError(TickarchiveError, ValueError):
    """A request that cannot be served (bad venue/symbol/range, unsafe key, checksum mismatch)."""


@dataclass
class FileRef:
    """One archive file of a query: where it is and what it must hash to."""

    rel: str
    period_start: int
    period_end: int
    size: int | None = None
    sha256: str | None = None
    local: bool = False
    remote: bool = False
    rows: int | None = None
    sealed_at: int | None = None


def safe_relpath(rel: str, root: str | Path) -> Path:
    """The local path of a relative archive path, refusing anything that could escape ``root``."""
    problem = None
    if not isinstance(rel, str) or not rel:
        problem = "empty key"
    elif rel.startswith("/") or "\\" in rel or not _SAFE_KEY.match(rel):
        problem = "absolute path or characters outside [A-Za-z0-9._-/]"
    elif any(part in ("", ".", "..") or part.startswith(".") for part in rel.split("/")):
        problem = "'..', '.', empty or hidden path component"
    if problem is None:
        try:
            parse_relpath(rel)
        except LayoutError as exc:
            problem = str(exc)
    if problem is None:
        root_path = Path(root).resolve()
        target = (root_path / rel).resolve()
        if root_path not in target.parents:
            problem = "resolves outside the archive root"
    if problem:
        raise RestoreError(f"refusing bucket key {rel!r}: {problem}")
    return Path(root) / rel


class Restorer:
    """Queries over one archive root, its catalog and (optionally) its bucket."""

    def __init__(self, root: str | Path, catalog: Catalog | None = None, bucket: Bucket | None = None,
                 workers: int = 8, venues: Iterable[str] | None = None) -> None:
        self.root = str(root)
        self.catalog = catalog if catalog is not None else Catalog(self.root)
        self.bucket = bucket
        self.workers = workers
        self.venues = set(venues) if venues is not None else None
        self._catalog_warned = False

    # -- requests ------------------------------------------------------------------------
    def stream_key(self, exchange: str, symbol: str, channel: str, depth: int | None,
                   market: str) -> StreamKey:
        """The stream a request names (an unknown venue or channel is a :class:`RestoreError`)."""
        if self.venues is not None and exchange not in self.venues:
            raise RestoreError(f"unknown venue {exchange!r} (supported: {', '.join(sorted(self.venues))})")
        if channel not in SCHEMAS:
            raise RestoreError(f"unknown channel {channel!r} (allowed: {', '.join(SCHEMAS)})")
        market, symbol = split_market(symbol, market)
        if market not in MARKETS:
            raise RestoreError(f"restore.market: {market!r} is not a market of the archive (allowed: {', '.join(MARKETS)})")
        if channel == "l2book" and not depth:
            depth = self._default_depth(exchange, symbol, market)
        return StreamKey.of(exchange, market, channel, symbol, depth)

    def _default_depth(self, exchange: str, symbol: str, market: str) -> int:
        try:
            rows = self.catalog.query(f"exchange = {sql_str(exchange)} AND symbol = {sql_str(symbol)} "
                                      f"AND market = {sql_str(market)} AND channel = 'l2book'", columns=["depth"])
            depths = sorted(set(rows.column("depth").to_pylist()) - {None})
        except CatalogError:
            depths = []
        if len(depths) == 1:
            return depths[0]
        if not depths:
            return 20
        raise RestoreError(f"{exchange} {symbol} has l2book at several depths {depths}: pass depth=")

    def paths(self, exchange: str, symbol: str, channel: str, start: TimeLike, end: TimeLike,
              depth: int | None = None, market: str = DEFAULT_MARKET) -> list[FileRef]:
        """Files of one stream overlapping the range, in time order.

        The catalog answers; the local tree and the bucket listing are consulted only for the
        months holding hours of the range the catalog has no file for (a catalog being rebuilt
        or damaged, files copied in by hand, a range never archived), and add what it misses.
        So a query costs what its range holds, however old the archive.
        """
        start_ns, end_ns = parse_range(start, end)
        stream = self.stream_key(exchange, symbol, channel, depth, market)
        found: dict[str, FileRef] = {}
        known = self._from_catalog(stream, start_ns, end_ns)
        months = {month_of(h) for h in uncovered(known, start_ns, end_ns)}
        listed = self._from_listings(stream, start_ns, end_ns, months) if months else []
        for ref in known + listed:
            known = found.get(ref.rel)
            if known is None:
                found[ref.rel] = ref
                continue
            known.local = known.local or ref.local
            known.remote = known.remote or ref.remote
            for name in ("size", "sha256", "rows", "sealed_at"):
                if getattr(known, name) is None:
                    setattr(known, name, getattr(ref, name))
        refs = sorted(found.values(), key=lambda r: (r.period_start, r.rel))
        if not refs:
            self._check_known(stream)
        return refs

    def missing_hours(self, exchange: str, symbol: str, channel: str, start: TimeLike, end: TimeLike,
                      depth: int | None = None, market: str = DEFAULT_MARKET) -> list[int]:
        """Start (ns) of every hour of the range that no file covers, locally or in the bucket (the
        coverage rule of :mod:`actors.restore.coverage`)."""
        start_ns, end_ns = parse_range(start, end)
        try:
            cells = self.hour_cells(exchange, symbol, start_ns, end_ns, [channel], depth, market)
        except RestoreError:
            cells = {}
        stream = self.stream_key(exchange, symbol, channel, depth, market).id
        return uncovered_hours(cells, stream, hours_between(start_ns, end_ns))

    def _from_catalog(self, stream: StreamKey, start_ns: int, end_ns: int) -> list[FileRef]:
        try:
            table = as_ns_ints(self.catalog.lookup(stream.exchange, stream.symbol, stream.channel, start_ns,
                                                   end_ns, depth=stream.depth, market=stream.market))
        except CatalogError as exc:     # serve from the files; say once what to run
            if not self._catalog_warned:
                log.error(f"{exc}; answering from the local tree and the bucket meanwhile")
                self._catalog_warned = True
            return []
        refs = []
        for row in table.to_pylist():
            local = (Path(self.root) / row["key"]).is_file()
            refs.append(FileRef(row["key"], row["period_start"], row["period_end"], row["bytes"],
                                row["sha256"], local=local, remote=row["backed_up_at"] is not None,
                                rows=row["rows"], sealed_at=row["sealed_at"]))
        return refs

    def _from_listings(self, stream: StreamKey, start_ns: int, end_ns: int,
                       months: set[tuple[int, int]]) -> list[FileRef]:
        """The stream's files of the range in the local tree and the bucket, in these months only."""
        found: dict[str, FileRef] = {}
        for path in stream_files(self.root, stream, start_ns, end_ns, months):
            rel = Path(path).relative_to(self.root).as_posix()
            parsed = parse_relpath(rel)
            found[rel] = FileRef(rel, parsed.period_start_ns, parsed.period_end_ns or parsed.period_start_ns + HOUR_NS,
                                 os.path.getsize(path), None, local=True, rows=_footer_rows(path))
        if self.bucket is not None:
            for month in self._bucket_months(stream, start_ns, end_ns, months):
                for rel, obj in self.bucket.list(f"{month}/{stream.name}_").items():
                    parsed = file_in_range(rel, stream, start_ns, end_ns)
                    if parsed is None:
                        continue
                    ref = found.get(rel) or FileRef(rel, parsed.period_start_ns,
                                                    parsed.period_end_ns or parsed.period_start_ns + HOUR_NS)
                    ref.remote = True
                    ref.size = obj.size if not ref.local else ref.size
                    found[rel] = ref
        return sorted(found.values(), key=lambda r: (r.period_start, r.rel))

    def _bucket_months(self, stream: StreamKey, start_ns: int, end_ns: int,
                       wanted: set[tuple[int, int]]) -> list[str]:
        """The stream's month folders in the bucket that overlap the range (``exchange/market/channel/YYYY/MM``).

        A range of up to two years is listed month by month; a wider one asks the bucket which
        year and month folders exist first, so decades cost what is stored, not a request per month.
        """
        first, last = month_of(start_ns), month_of(end_ns - 1)
        base = f"{stream.exchange}/{stream.market}/{stream.channel}"
        if (last[0] - first[0]) * 12 + last[1] - first[1] < 24:
            months = [(y, m) for y in range(first[0], last[0] + 1) for m in range(1, 13)]
            return [f"{base}/{y:04d}/{m:02d}" for y, m in months if first <= (y, m) <= last and (y, m) in wanted]
        found = []
        for year in self.bucket.folders(f"{base}/"):
            for month in self.bucket.folders(f"{base}/{year}/"):
                if year.isdigit() and month.isdigit() and first <= (int(year), int(month)) <= last and \
                        (int(year), int(month)) in wanted:
                    found.append(f"{base}/{year}/{month}")
        return found

    def _check_known(self, stream: StreamKey) -> None:
        """No file for the range: say so clearly when the symbol itself is unknown."""
        try:
            known = self.catalog.query(f"exchange = {sql_str(stream.exchange)} AND channel = "
                                       f"{sql_str(stream.channel)}", columns=["symbol"]).column("symbol").to_pylist()
        except CatalogError:
            known = []
        folder = Path(self.root) / stream.exchange / stream.market / stream.channel
        if not known and not folder.is_dir() and self.bucket is None:
            raise RestoreError(f"no {stream.channel} data for {stream.exchange} at all in {self.root}")
        if known and stream.symbol not in known:
            raise RestoreError(f"unknown symbol {stream.symbol!r} for {stream.exchange} {stream.channel} "
                               f"(archived: {', '.join(sorted(set(known))[:20])})")

    # -- restore -------------------------------------------------------------------------
    def restore(self, exchange: str, symbol: str, channel: str, start: TimeLike, end: TimeLike,
                depth: int | None = None, market: str = DEFAULT_MARKET,
                progress: Callable[[int], None] | None = None) -> list[str]:
        """Make every file of the range local (downloaded and verified); returns local paths."""
        refs = self.paths(exchange, symbol, channel, start, end, depth, market)
        return self.restore_refs(refs, progress)

    def restore_refs(self, refs: list[FileRef], progress: Callable[[int], None] | None = None) -> list[str]:
        todo = [ref for ref in refs if not self._valid_local(ref)]
        damaged = [ref.rel for ref in todo if (Path(self.root) / ref.rel).is_file()]
        if damaged and self.bucket is None:
            raise DamagedFileError("; ".join(damage_message(rel) for rel in damaged[:5]))
        if todo and self.bucket is None:
            raise RestoreError(f"{len(todo)} file(s) are not local and no bucket is configured "
                               f"(first: {todo[0].rel}); use backup=s3|b2|local")
        errors: list[str] = []
        restored: list[dict] = []
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = {pool.submit(self._download, ref): ref for ref in todo}
            for future in as_completed(futures):
                ref = futures[future]
                try:
                    restored.append(future.result())
                    if progress is not None:
                        progress(ref.size or 0)
                except (RestoreError, MismatchError) as exc:
                    errors.append(str(exc))
                except Exception as exc:  # network/S3 errors: name the key, keep the others going
                    errors.append(f"{ref.rel}: download failed: {str(exc)[:200]}")
        self._catalog_restored(restored)
        if errors:
            raise RestoreError(f"{len(errors)} file(s) failed: " + "; ".join(errors[:5]))
        return [str(Path(self.root) / ref.rel) for ref in refs]

    def _valid_local(self, ref: FileRef) -> bool:
        path = safe_relpath(ref.rel, self.root)
        if not path.is_file():
            return False
        if ref.size is not None and path.stat().st_size != ref.size and not (ref.local and ref.sha256 is None):
            return False
        if ref.sha256 is not None and sha256_file(path) != ref.sha256:
            log.warning(f"local copy of {ref.rel} does not match its checksum; fetching it again")
            return False
        return True

    def _damaged(self, ref: FileRef) -> bool:
        """The local copy contradicts the SHA-256 recorded at seal."""
        path = Path(self.root) / ref.rel
        return bool(ref.sha256) and is_damaged(path, cached_sha256(path), {"sha256": ref.sha256,
                                                                          "sealed_at": ref.sealed_at})

    def _download(self, ref: FileRef) -> dict:
        path = safe_relpath(ref.rel, self.root)
        sha, size = self.bucket.download(ref.rel, path, sha256=ref.sha256, size=ref.size)
        log.info(f"RESTORE {self.bucket.key_of(ref.rel)} size: {max(1, round(size / 1024))} KB")
        return {"rel": ref.rel, "sha256": sha, "size": size}

    def _catalog_restored(self, restored: list[dict]) -> None:
        if not restored:
            return
        from actors.storage.footer import describe_file
        try:
            known = set(self.catalog.get_many(r["rel"] for r in restored))
            self.catalog.mark_local([r["rel"] for r in restored if r["rel"] in known])
            fresh = [describe_file(self.root, r["rel"], size=r["size"], sha256=r["sha256"])
                     for r in restored if r["rel"] not in known]
            for rec in fresh:
                rec["backed_up_at"] = rec["sealed_at"]
                rec["backup_sha256"] = rec["sha256"]
            self.catalog.upsert(fresh)
        except Exception as exc:  # the files are restored; the catalog can be rebuilt (mode=reindex)
            log.warning(f"catalog not updated after restore: {exc}")

    # -- load ----------------------------------------------------------------------------
    def load(self, exchange: str, symbol: str, channel: str, start: TimeLike, end: TimeLike,
             depth: int | None = None, market: str = DEFAULT_MARKET,
             columns: list[str] | None = None) -> pa.Table:
        """Rows with ``start <= ts_local < end`` (restoring missing files first)."""
        start_ns, end_ns = parse_range(start, end)
        files = self.restore(exchange, symbol, channel, start_ns, end_ns, depth, market)
        return read_range(files, channel, start_ns, end_ns, columns)

    # -- export --------------------------------------------------------------------------
    def export(self, format: str, exchange: str, symbol: str, start: TimeLike, end: TimeLike, out: str | Path,
               depth: int | None = None, market: str = DEFAULT_MARKET, allow_gaps: bool = False,
               progress: bool = True):
        """Export one symbol's books and trades in a range to ``format`` (hftbacktest, nautilus, tardis) at
        ``out``, hour by hour, restoring missing files first (:func:`actors.export.export`)."""
        from actors.export import export

        return export(self.root, format, exchange, symbol, start, end, out, depth, market, allow_gaps,
                      restorer=self, progress=progress)

    # -- coverage ------------------------------------------------------------------------
    def dataset(self, channel: str, *, start: TimeLike | None = None, end: TimeLike | None = None,
                exchange: str | None = None, market: str | None = None, symbol: str | None = None):
        """Every local file of ``channel`` as one ``pyarrow.dataset.Dataset``
        (:func:`actors.restore.dataset.dataset` on this root)."""
        from actors.restore.dataset import dataset

        return dataset(self.root, channel, start=start, end=end, exchange=exchange, market=market, symbol=symbol)

    def hour_cells(self, exchange: str, symbol: str, start: TimeLike, end: TimeLike,
                   channels: Iterable[str] = ("l2book", "trades", "events"), depth: int | None = None,
                   market: str = DEFAULT_MARKET) -> dict[tuple[str, int], HourCoverage]:
        """The covered stream-hours of the range (:func:`actors.restore.coverage.hour_coverage`), by
        ``(stream id, hour)``; raises :class:`RestoreError` when no channel has any file and one was refused."""
        start_ns, end_ns = parse_range(start, end)
        facts: list[FileFacts] = []
        events: list[str] = []
        refused: list[RestoreError] = []
        for channel in channels:
            try:
                refs = self.paths(exchange, symbol, channel, start_ns, end_ns, depth, market)
            except RestoreError as exc:       # e.g. unknown symbol: said unless other channels have data
                refused.append(exc)
                continue
            stream = self.stream_key(exchange, symbol, channel, depth, market).id
            for ref in refs:
                facts.append(FileFacts(stream, exchange, symbol, channel, ref.period_start, ref.rows or 0,
                                       ref.size or 0, ref.local, ref.remote, ref.local and self._damaged(ref)))
                if channel == "events" and ref.local:
                    events.append(str(Path(self.root) / ref.rel))
        if not facts and refused:
            raise refused[0]
        return hour_coverage(facts, {(exchange, symbol): read_marks(events, start_ns, end_ns)})

    def coverage(self, exchange: str, symbol: str, start: TimeLike, end: TimeLike,
                 channels: Iterable[str] = ("l2book", "trades", "events"), depth: int | None = None,
                 market: str = DEFAULT_MARKET) -> pa.Table:
        """Per stream and hour: rows, bytes, where (local/remote/both/partial/damaged), holes (gap and lost
        events) and disconnects, files."""
        cells = self.hour_cells(exchange, symbol, start, end, channels, depth, market)
        rows = [{"stream": c.stream, "hour": c.hour, "rows": c.rows, "bytes": c.bytes, "where": c.where,
                 "gaps": c.gaps, "disconnects": c.disconnects, "files": c.files}
                for c in sorted(cells.values(), key=lambda c: (c.hour, c.stream))]
        return pa.Table.from_pylist(rows, schema=COVERAGE_SCHEMA)


COVERAGE_SCHEMA = pa.schema([
    ("stream", pa.string()), ("hour", pa.timestamp("ns", tz="UTC")), ("rows", pa.int64()), ("bytes", pa.int64()),
    ("where", pa.string()), ("gaps", pa.int64()), ("disconnects", pa.int64()), ("files", pa.int64())])


def uncovered(refs: list[FileRef], start_ns: int, end_ns: int) -> list[int]:
    """The hours of ``[start_ns, end_ns)`` whose part in the range these files do not tile whole
    (files of shorter periods than an hour must cover all of it; a file of a quiet period never
    written leaves its hour to be looked up in the listings)."""
    covered: dict[int, int] = {}
    for ref in refs:
        lo, hi = max(ref.period_start, start_ns), min(ref.period_end, end_ns)
        while lo < hi:
            hour = lo - lo % HOUR_NS
            part = min(hi, hour + HOUR_NS) - lo
            covered[hour] = covered.get(hour, 0) + part
            lo += part
    return [h for h in hours_between(start_ns, end_ns)
            if covered.get(h, 0) < min(end_ns, h + HOUR_NS) - max(start_ns, h)]


def reindex(root: str | Path, catalog: Catalog, bucket: Bucket | None = None,
            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Rebuild the catalog from the local tree's and the bucket's Parquet footers.

    Local files are described from their footers and hashed. Objects only in the bucket are
    described from a ranged read of their footer and the SHA-256 stored with the object.
    ``backed_up_at`` is set for files whose bucket copy carries the same SHA-256 (the
    object's LastModified time, since the original verification time is not stored).
    Unreadable files and objects are named in ``unreadable`` and left out.
    """
    records, unreadable = _index_local(Path(root), progress)
    remote = _index_bucket(Path(root), bucket, records, unreadable, progress) if bucket is not None else 0
    catalog.replace_all(list(records.values()))
    return {"files": len(records), "remote_only": remote, "unreadable": unreadable}


_UNREADABLE = (OSError, ValueError, KeyError, pa.ArrowException)     # truncated, not Parquet, ...


def _index_local(root: Path, progress: Callable[[int], None] | None) -> tuple[dict[str, dict], list[str]]:
    from actors.storage.footer import describe_file

    records: dict[str, dict] = {}
    unreadable: list[str] = []
    for rel in sorted(sealed_files(root)):
        try:
            records[rel] = describe_file(str(root), rel)
        except _UNREADABLE as exc:
            log.error(f"reindex: {rel} is unreadable, not indexed: {' '.join(str(exc).split())[:200]}")
            unreadable.append(rel)
        if progress:
            progress(1)
    return records, unreadable


def _index_bucket(root: Path, bucket: Bucket, records: dict[str, dict], unreadable: list[str],
                  progress: Callable[[int], None] | None) -> int:
    """Add the bucket's objects to ``records`` (and mark the local ones backed up); returns how
    many are only in the bucket."""
    from actors.storage.footer import describe_file

    remote = 0
    for rel, obj in bucket.list().items():
        try:
            safe_relpath(rel, root)
        except RestoreError as exc:
            log.warning(str(exc))
            continue
        head = bucket.head(rel)
        if head is None:                           # deleted since the listing
            continue
        sha = (head.get("Metadata") or {}).get("sha256")
        rec = records.get(rel)
        if rec is None:
            try:
                with bucket.open_input_file(rel) as source:
                    rec = describe_file(str(root), rel, source=source, size=obj.size, sha256=sha)
            except _UNREADABLE as exc:             # not a readable Parquet file
                log.error(f"reindex: bucket object {bucket.key_of(rel)} is unreadable, not indexed: {exc}")
                unreadable.append(bucket.key_of(rel))
                continue
            rec["local"] = False
            records[rel] = rec
            remote += 1
        if sha is not None and sha == rec["sha256"] and obj.size == rec["bytes"]:
            rec["backed_up_at"] = obj.modified_ns
            rec["backup_sha256"] = sha
            rec["backup_etag"] = (head.get("ETag") or obj.etag or "").strip('"')
        if progress:
            progress(1)
    return remote


def prepare_catalog(root: str | Path) -> dict[str, Any]:
    """Before archiving: rebuild a damaged catalog from the local files (else nothing to do)."""
    catalog = Catalog(str(root))
    if catalog.healthy():
        return {"rebuilt": False}
    log.error(f"catalog {catalog.uri} is unreadable; rebuilding it from the local files (kept aside as "
              ".catalog.corrupt-*)")
    result = reindex(root, catalog)
    return {"rebuilt": True, **result}


def _footer_rows(path: str | Path) -> int | None:
    """Row count from a Parquet footer, None when unreadable."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:
        return None


def bucket_from_section(section: dict, root: str | Path) -> Bucket | None:
    """The configured bucket (``backup=s3|b2|local``), checked (one clear ``BackupError`` line for a wrong
    endpoint, key or bucket), or None for ``backup=none``."""
    bucket = open_bucket(section, str(root))
    if bucket is not None:
        bucket.check()
    return bucket
