"""The LanceDB catalog: one row per sealed file, for fast (exchange, symbol, channel, range) lookup.

The table ``files`` lives in ``{root}/.catalog`` (hidden, so it is never backed up as data).
Its key column ``key`` is the file's path relative to the archive root, declared as
LanceDB's unenforced primary key: every write is a ``merge_insert`` on it, which stays
correct when several writer processes commit at once (measured on LanceDB 0.40: an insert/insert
race on a compound key duplicates rows; on a single declared key it does not).

Scalar indexes (Bitmap on exchange/market/channel/symbol, BTree on the period bounds and
key) keep lookups fast at a million rows; :meth:`Catalog.optimize` compacts the many small
commits and folds new rows into the indexes (the archiver calls it every
``storage.compact_every``).

:class:`IndexedCatalog` is the catalog as its one owner holds it (the ``restore`` actor in a
run): LanceDB stays the durable store, and a compact per-stream interval index in memory
(:class:`CatalogIndex`: each stream's rows sorted by period, found by binary search) answers
:meth:`~Catalog.lookup` in well under a millisecond at a million files.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from actors.errors import TickarchiveError

from actors.storage.layout import HOUR_NS, ParsedPath
from actors.feed.records import TS_TYPE

TABLE = "files"
CATALOG_DIR = ".catalog"

CATALOG_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),   # path relative to the archive root
    pa.field("exchange", pa.string()),
    pa.field("market", pa.string()),
    pa.field("channel", pa.string()),
    pa.field("symbol", pa.string()),
    pa.field("depth", pa.int32()),
    pa.field("period_start", TS_TYPE),
    pa.field("period_end", TS_TYPE),
    pa.field("ts_local_min", TS_TYPE),
    pa.field("ts_local_max", TS_TYPE),
    pa.field("ts_exchange_min", TS_TYPE),
    pa.field("ts_exchange_max", TS_TYPE),
    pa.field("rows", pa.int64()),
    pa.field("row_groups", pa.int32()),
    pa.field("bytes", pa.int64()),
    pa.field("sha256", pa.string()),
    pa.field("node", pa.string()),
    pa.field("sealed_at", TS_TYPE),
    pa.field("backed_up_at", TS_TYPE),    # null until a verified copy is in the bucket
    pa.field("backup_sha256", pa.string()),
    pa.field("local", pa.bool_()),        # False: deleted locally by retention (remote only)
    pa.field("backup_etag", pa.string()),  # the bucket object's ETag when it was verified (the audit's check)
    pa.field("marks", pa.string()),       # events files: holes/disconnects per channel (storage/marks.py)
])
ADDED_COLUMNS = {"backup_etag": "STRING", "marks": "STRING"}     # columns newer than the first catalogs
COLUMNS = [f.name for f in CATALOG_SCHEMA]
BITMAP_COLUMNS = ("exchange", "market", "channel", "symbol")
PENDING_COLUMNS = ["key", "bytes", "sha256", "sealed_at", "node"]
BTREE_COLUMNS = ("key", "period_start", "period_end")


class CatalogError(TickarchiveError, RuntimeError):
    """The catalog could not be read or written (message names the catalog folder)."""


def ts_literal(ns: int) -> str:
    """A SQL literal comparable with the catalog's ``timestamp[ns, UTC]`` columns."""
    return f"arrow_cast({int(ns)}, 'Timestamp(Nanosecond, Some(\"UTC\"))')"


def sql_str(value: str) -> str:
    """A quoted SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def file_record(relpath: str, parsed: ParsedPath, period_end_ns: int, stats: dict[str, Any],
                size: int, sha256: str, node: str) -> dict[str, Any]:
    """A catalog row for one sealed file (``stats``: rows, row_groups, ts_* min/max in ns)."""
    stream = parsed.stream
    return {
        "key": relpath, "exchange": stream.exchange, "market": stream.market,
        "channel": stream.channel, "symbol": stream.symbol, "depth": stream.depth,
        "period_start": parsed.period_start_ns, "period_end": period_end_ns,
        "ts_local_min": stats.get("ts_local_min"), "ts_local_max": stats.get("ts_local_max"),
        "ts_exchange_min": stats.get("ts_exchange_min"), "ts_exchange_max": stats.get("ts_exchange_max"),
        "rows": stats["rows"], "row_groups": stats.get("row_groups"), "bytes": size, "sha256": sha256,
        "node": node, "sealed_at": time.time_ns(), "backed_up_at": None, "backup_sha256": None,
        "local": True, "backup_etag": None, "marks": stats.get("marks"),
    }


def records_table(records: Iterable[dict[str, Any]]) -> pa.Table:
    """Catalog rows (dicts with ns ints for times) as an Arrow table of the catalog schema."""
    records = list(records)
    columns = {}
    for field in CATALOG_SCHEMA:
        values = [rec.get(field.name) for rec in records]
        columns[field.name] = pa.array(values, type=field.type)
    return pa.Table.from_pydict(columns, schema=CATALOG_SCHEMA)


class Catalog:
    """Handle on ``{root}/.catalog``; cheap to create, safe to use from several processes."""

    def __init__(self, root: str | Path, uri: str | None = None) -> None:
        import lancedb

        self.root = str(root)
        self.uri = uri or str(Path(root) / CATALOG_DIR)
        self._db = lancedb.connect(self.uri, read_consistency_interval=timedelta(0))
        self._table = None
        self._broken: CatalogError | None = None

    # -- table handling ------------------------------------------------------------------
    def _open(self, create: bool = True):
        """The table handle; created when missing (``create``), else None.

        Another process may be creating the table right now (listed, not yet openable), so a
        failure is retried briefly before the catalog is called damaged.
        """
        if self._table is not None:
            return self._table
        if self._broken is not None:          # found unreadable already: say so at once
            raise self._broken
        last: Exception | None = None
        for attempt in range(6):
            try:
                self._table = self._with_added_columns(self._db.open_table(TABLE))
                return self._table
            except Exception as exc:
                last = exc
            if not self._listed():
                if not create:
                    return None
                try:
                    table = self._db.create_table(TABLE, schema=CATALOG_SCHEMA, exist_ok=True)
                    try:
                        table.set_unenforced_primary_key("key")
                    except Exception:  # already declared by a concurrent creator
                        pass
                    self._table = table
                    return table
                except Exception as exc:  # concurrent creation: open what the other process made
                    last = exc
            time.sleep(0.05 * (attempt + 1))
        reason = " ".join(str(last).split())[:300]
        if self._listed():
            self._broken = CatalogError(f"catalog {self.uri} is unreadable ({reason}); "
                                        "python launch.py mode=reindex rebuilds it from the files")
            raise self._broken
        raise CatalogError(f"cannot create catalog table in {self.uri}: {reason}")

    @staticmethod
    def _with_added_columns(table):
        """A catalog written before some columns existed gets them (null), once."""
        missing = {name: sql for name, sql in ADDED_COLUMNS.items() if name not in table.schema.names}
        if missing:
            try:
                table.add_columns({name: f"CAST(NULL AS {sql})" for name, sql in missing.items()})
            except Exception:            # another process added them first
                table.checkout_latest()
        return table

    def _table_names(self) -> list[str]:
        return list(self._db.list_tables().tables)

    def _listed(self) -> bool:
        """The table exists on disk (whether or not it can be opened)."""
        try:
            return TABLE in self._table_names()
        except Exception:
            return Path(self.uri).exists()

    def healthy(self) -> bool:
        """False when the catalog folder exists but cannot be read (damaged on disk)."""
        if not Path(self.uri).exists():
            return True
        try:
            if TABLE not in self._table_names():
                return True
            table = self._db.open_table(TABLE)
            table.count_rows()
            table.search().limit(1).to_arrow()
            return True
        except Exception:
            return False

    # -- writes --------------------------------------------------------------------------
    def upsert(self, records: list[dict[str, Any]], on_committed: Callable[[list[dict]], None] | None = None) -> None:
        """Insert or replace rows by key (one commit); ``on_committed(records)`` once they are durable."""
        if not records:
            return
        table = self._open()
        data = records_table(records)
        for attempt in range(6):
            try:
                (table.merge_insert("key").when_matched_update_all()
                 .when_not_matched_insert_all().execute(data))
                break
            except Exception as exc:
                if attempt == 5:
                    raise CatalogError(f"catalog upsert of {len(records)} rows failed: {exc}") from None
                time.sleep(0.05 * 2 ** attempt)
        if on_committed is not None:
            on_committed(records)

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Rows of these files (times as ns ints) by key; unknown keys are absent."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, dict[str, Any]] = {}
        for chunk in range(0, len(keys), 500):
            part = keys[chunk:chunk + 500]
            for row in self.rows(f"key IN ({', '.join(sql_str(k) for k in part)})"):
                out[row["key"]] = row
        return out

    def _update_rows(self, keys: Iterable[str], change) -> int:
        rows = list(self.get_many(keys).values())
        if not rows:
            return 0
        for row in rows:
            change(row)
        self.upsert(rows)
        return len(rows)

    def mark_backed_up(self, verified: dict[str, tuple[str, str | None]], at_ns: int) -> int:
        """Record a verified copy in the bucket for these keys: ``key -> (SHA-256, ETag)`` as verified."""
        def change(row):
            sha, etag = verified[row["key"]]
            row["backed_up_at"], row["backup_sha256"], row["backup_etag"] = at_ns, sha, etag
        return self._update_rows(verified, change)

    def mark_unbacked(self, keys: list[str]) -> int:
        """The bucket no longer holds a good copy of these files (the audit found them missing or
        changed): they are to be backed up again."""
        def change(row):
            row["backed_up_at"] = row["backup_sha256"] = row["backup_etag"] = None
        return self._update_rows(keys, change)

    def mark_remote_only(self, keys: list[str]) -> int:
        """These files were deleted locally (retention); their verified copy is in the bucket."""
        def change(row):
            row["local"] = False
        return self._update_rows(keys, change)

    def mark_local(self, keys: list[str]) -> int:
        """These files are on local disk again (restored)."""
        def change(row):
            row["local"] = True
        return self._update_rows(keys, change)

    def replace_all(self, records: list[dict[str, Any]]) -> None:
        """Replace the whole catalog with these rows (``mode=reindex``).

        The new table is built in a fresh folder and swapped in, so a damaged catalog is
        replaced without anyone deleting it by hand; it is kept aside as ``.catalog.corrupt-*``.
        """
        import lancedb

        stamp = time.time_ns()
        fresh_uri = f"{self.uri}.new-{stamp}"
        table = lancedb.connect(fresh_uri).create_table(TABLE, schema=CATALOG_SCHEMA, mode="overwrite")
        table.set_unenforced_primary_key("key")
        if records:
            table.add(records_table(records))
        healthy = self.healthy()
        aside = f"{self.uri}.{'old' if healthy else 'corrupt'}-{stamp}"
        if Path(self.uri).exists():
            os.replace(self.uri, aside)
        os.replace(fresh_uri, self.uri)
        if healthy and Path(aside).exists():
            shutil.rmtree(aside, ignore_errors=True)
        self._db = lancedb.connect(self.uri, read_consistency_interval=timedelta(0))
        self._table, self._broken = None, None
        self.optimize()

    # -- reads ---------------------------------------------------------------------------
    def query(self, where: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """Rows matching a SQL filter (all rows when None)."""
        table = self._open(create=False)
        if table is None:
            return CATALOG_SCHEMA.empty_table() if columns is None else \
                CATALOG_SCHEMA.empty_table().select(columns)
        search = table.search()
        if where:
            search = search.where(where)
        if columns:
            search = search.select(columns)
        try:
            return search.limit(None).to_arrow()
        except Exception as exc:
            raise CatalogError(f"catalog {self.uri} is unreadable ({' '.join(str(exc).split())[:300]}); "
                               "python launch.py mode=reindex rebuilds it from the files") from None

    def all(self) -> pa.Table:
        return self.query()

    def count(self) -> int:
        table = self._open(create=False)
        return 0 if table is None else table.count_rows()

    def rows(self, where: str | None = None) -> list[dict[str, Any]]:
        """Matching rows as dicts, times as ns since epoch (int) so nothing is truncated."""
        return as_ns_ints(self.query(where)).to_pylist()

    def pending_backup(self, node: str | None = None) -> list[dict[str, Any]]:
        """Local files not yet verified in the bucket (of one node), oldest first: what a backup
        pass uploads. Costs what is pending, not what is archived (see :class:`IndexedCatalog`)."""
        where = "backed_up_at IS NULL AND local = true" + (f" AND node = {sql_str(node)}" if node is not None else "")
        rows = as_ns_ints(self.query(where, columns=PENDING_COLUMNS)).to_pylist()
        return sorted(rows, key=lambda r: (r["sealed_at"] or 0, r["key"]))

    def backed_up_rows(self, node: str | None = None) -> list[dict[str, Any]]:
        """Files recorded as verified in the bucket (of one node): what the audit checks against the listing."""
        where = "backed_up_at IS NOT NULL" + (f" AND node = {sql_str(node)}" if node is not None else "")
        return as_ns_ints(self.query(where, columns=["key", "bytes", "sha256", "backup_sha256", "backup_etag",
                                                     "local", "node"])).to_pylist()

    def audit_rows(self, node: str | None = None) -> list[dict[str, Any]]:
        """Every file row (of one node) with what the audit compares against the bucket listing."""
        where = f"node = {sql_str(node)}" if node is not None else None
        return as_ns_ints(self.query(where, columns=["key", "bytes", "sha256", "sealed_at", "backed_up_at",
                                                     "backup_sha256", "backup_etag", "local", "node"])).to_pylist()

    def expired(self, cutoff_ns: int, node: str | None = None) -> list[dict[str, Any]]:
        """Local files verified in the bucket whose period ended before ``cutoff_ns`` (retention)."""
        where = (f"local = true AND backed_up_at IS NOT NULL AND period_end < {ts_literal(cutoff_ns)}"
                 + (f" AND node = {sql_str(node)}" if node is not None else ""))
        return as_ns_ints(self.query(where, columns=["key", "bytes", "sha256", "backup_sha256"])).to_pylist()

    def get(self, key: str) -> dict[str, Any] | None:
        """The row of one file (times as ns ints), or None."""
        rows = self.rows(f"key = {sql_str(key)}")
        return rows[0] if rows else None

    def lookup(self, exchange: str, symbol: str, channel: str, start_ns: int, end_ns: int,
               depth: int | None = None, market: str | None = None) -> pa.Table:
        """Files of one stream whose period overlaps ``[start_ns, end_ns)``, in time order."""
        where = [f"exchange = {sql_str(exchange)}", f"symbol = {sql_str(symbol)}",
                 f"channel = {sql_str(channel)}", f"period_start < {ts_literal(end_ns)}",
                 # files never span more than an hour: a two-sided range keeps the BTree scan small
                 f"period_start >= {ts_literal(start_ns - HOUR_NS)}", f"period_end > {ts_literal(start_ns)}"]
        if market:
            where.append(f"market = {sql_str(market)}")
        if depth is not None and channel == "l2book":
            where.append(f"depth = {int(depth)}")
        table = self.query(" AND ".join(where))
        return table.sort_by([("period_start", "ascending"), ("key", "ascending")])

    # -- maintenance ---------------------------------------------------------------------
    def optimize(self, keep_versions_for: timedelta = timedelta(minutes=10)) -> None:
        """Create missing scalar indexes, compact small commits, drop old versions."""
        from lancedb.index import BTree, Bitmap

        table = self._open(create=False)
        if table is None or table.count_rows() == 0:
            return
        existing = {getattr(ix, "columns", [None])[0] for ix in table.list_indices()}
        for column in BITMAP_COLUMNS:
            if column not in existing:
                table.create_index(column, config=Bitmap())
        for column in BTREE_COLUMNS:
            if column not in existing:
                table.create_index(column, config=BTree())
        table.optimize(cleanup_older_than=keep_versions_for)


StreamId = tuple[str, str, str]        # (exchange, symbol, channel)


class CatalogIndex:
    """Catalog rows grouped per (exchange, symbol, channel), sorted by ``(period_start, key)``.

    A lookup is a dictionary access and two binary searches on the stream's period starts; an
    update rewrites only the streams it touches. Not thread-safe (the owner holds a lock).
    """

    def __init__(self, table: pa.Table | None = None) -> None:
        self.streams: dict[StreamId, tuple[pa.Table, np.ndarray]] = {}
        if table is not None:
            self.replace(table)

    def replace(self, table: pa.Table) -> None:
        """Index exactly these rows (the whole catalog)."""
        self.streams = {}
        if table.num_rows == 0:
            return
        table = table.select(COLUMNS).cast(CATALOG_SCHEMA)
        table = table.take(pc.sort_indices(table, [(c, "ascending") for c in
                                                   ("exchange", "symbol", "channel", "period_start", "key")]))
        ids = pc.binary_join_element_wise(table["exchange"], table["symbol"], table["channel"], "\x1f")
        codes = pc.dictionary_encode(ids).combine_chunks().indices.to_numpy()
        cuts = [0, *(np.flatnonzero(np.diff(codes)) + 1).tolist(), table.num_rows]
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            part = table.slice(lo, hi - lo)
            self.streams[self._id(part)] = (part, _starts(part))

    @staticmethod
    def _id(part: pa.Table) -> StreamId:
        return (part["exchange"][0].as_py(), part["symbol"][0].as_py(), part["channel"][0].as_py())

    def update(self, rows: pa.Table) -> None:
        """Insert or replace rows by key (rows of the catalog schema)."""
        rows = rows.select(COLUMNS).cast(CATALOG_SCHEMA)
        fresh = CatalogIndex(rows)
        for sid, (new, _) in fresh.streams.items():
            old = self.streams.get(sid)
            if old is not None:
                kept = old[0].filter(pc.invert(pc.is_in(old[0]["key"], value_set=new["key"])))
                new = pa.concat_tables([kept, new])
                new = new.take(pc.sort_indices(new, [("period_start", "ascending"), ("key", "ascending")]))
            self.streams[sid] = (new, _starts(new))

    def lookup(self, exchange: str, symbol: str, channel: str, start_ns: int, end_ns: int,
               depth: int | None = None, market: str | None = None) -> pa.Table:
        """Rows whose period overlaps ``[start_ns, end_ns)`` (same rule as :meth:`Catalog.lookup`)."""
        entry = self.streams.get((exchange, symbol, channel))
        if entry is None:
            return CATALOG_SCHEMA.empty_table()
        table, starts = entry
        lo = int(np.searchsorted(starts, start_ns - HOUR_NS, "left"))   # files never span more than an hour
        hi = int(np.searchsorted(starts, end_ns, "left"))
        part = table.slice(lo, max(0, hi - lo))
        mask = pc.greater(part["period_end"].cast(pa.int64()), start_ns)
        if market:
            mask = pc.and_(mask, pc.equal(part["market"], market))
        if depth is not None and channel == "l2book":
            mask = pc.and_(mask, pc.equal(part["depth"], int(depth)))
        return part.filter(mask)

    @property
    def rows(self) -> int:
        return sum(table.num_rows for table, _ in self.streams.values())


def _starts(table: pa.Table) -> np.ndarray:
    return table["period_start"].cast(pa.int64()).to_numpy()


class IndexedCatalog(Catalog):
    """The catalog with an in-memory :class:`CatalogIndex` for lookups (one owner process).

    Every write goes through this object (LanceDB first, then the index), so the index is the
    durable table's current state; reads other than :meth:`lookup` still query LanceDB.
    Thread-safe: one lock around writes and index reads.
    """

    def __init__(self, root: str | Path, uri: str | None = None) -> None:
        super().__init__(root, uri)
        self.lock = threading.RLock()
        self.index = CatalogIndex()
        self.pending: dict[str, dict[str, dict[str, Any]]] = {}   # node -> key -> row not yet backed up
        self.commits = 0              # write commits since the last optimize()
        self.reload()

    def reload(self) -> None:
        """Rebuild the index and the set of files pending backup from the durable table."""
        with self.lock:
            table = super().query()
            self.index.replace(table)
            self.pending = {}
            self._track(as_ns_ints(table.filter(pc.and_(pc.is_null(table["backed_up_at"]),
                                                        pc.equal(table["local"], True))).select(PENDING_COLUMNS)
                                   ).to_pylist())

    def _track(self, rows: list[dict[str, Any]]) -> None:
        """Follow rows into (or out of) the pending-backup set."""
        for row in rows:
            node = row.get("node") or ""
            if row.get("backed_up_at") is None and row.get("local", True):
                self.pending.setdefault(node, {})[row["key"]] = {c: row.get(c) for c in PENDING_COLUMNS}
            else:
                self.pending.get(node, {}).pop(row["key"], None)

    def pending_backup(self, node: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            rows = [row for n, keys in self.pending.items() if node is None or n == node for row in keys.values()]
        return sorted(rows, key=lambda r: (r["sealed_at"] or 0, r["key"]))

    def upsert(self, records: list[dict[str, Any]], on_committed: Callable[[list[dict]], None] | None = None) -> None:
        if not records:
            return
        with self.lock:
            super().upsert(records)
            self.index.update(records_table(records))
            self._track(records)
            self.commits += 1
        if on_committed is not None:
            on_committed(records)

    def _update_rows(self, keys: Iterable[str], change) -> int:
        with self.lock:           # read-modify-write of rows: one at a time
            return super()._update_rows(keys, change)

    def replace_all(self, records: list[dict[str, Any]]) -> None:
        with self.lock:
            super().replace_all(records)
            self.reload()

    def lookup(self, exchange: str, symbol: str, channel: str, start_ns: int, end_ns: int,
               depth: int | None = None, market: str | None = None) -> pa.Table:
        with self.lock:
            return self.index.lookup(exchange, symbol, channel, start_ns, end_ns, depth, market)

    def optimize(self, keep_versions_for: timedelta = timedelta(minutes=10)) -> None:
        with self.lock:
            self.commits = 0
            super().optimize(keep_versions_for)


def as_ns_ints(table: pa.Table) -> pa.Table:
    """The same table with every timestamp column as int64 ns (``to_pylist`` friendly)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            table = table.set_column(i, pa.field(field.name, pa.int64()), table.column(i).cast(pa.int64()))
    return table
