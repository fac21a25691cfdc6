"""Export to hftbacktest's event format: one ``.npz`` whose ``data`` is an array of 64-byte events.

Each event is ``ev u64, exch_ts i64, local_ts i64, px f64, qty f64, order_id u64, ival i64, fval f64``
(ns times). How our rows become events:

* a book row becomes the level changes from the previous book (``DEPTH_EVENT`` with ``BUY`` for bids,
  ``SELL`` for asks): a level that is new or changed size carries its new size, a level that left the
  top N (or the book) is a ``qty 0`` change, so hftbacktest's book is always our top-N book;
* the first book, and the first book after a ``gap``/``lost`` event (or a missing hour), is a
  ``DEPTH_CLEAR`` per side followed by a ``DEPTH_SNAPSHOT`` of every level;
* a trade is a ``TRADE_EVENT`` with the aggressor side (``BUY``: taker bought);
* ``exch_ts`` is the venue's time (our ``ts_local`` where the venue gives none), ``local_ts`` our receive time.

Events are ordered as hftbacktest requires (``validate_event_order``): the ``LOCAL`` events by local
time, the ``EXCH`` events by exchange time, trades before depth at the same time. An event whose
exchange time is in order is one ``EXCH | LOCAL`` event; one that is not (the venue's clock disagrees
with the order we received them in) is split into a ``LOCAL`` event in receive order and an ``EXCH``
event in exchange order, as hftbacktest's own ``correct_event_order`` does.

Memory: the hour being converted and the one before it (exchange order needs the next hour's earliest
time). Events go to a temporary file as they are made; :meth:`HftbacktestWriter.close` streams it into
the ``.npz`` (a zip with ``data.npy``, deflated, exactly what ``np.savez_compressed`` writes).
"""
from __future__ import annotations

import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from actors.export.driver import ExportRequest, Hour

DEPTH, TRADE, DEPTH_CLEAR, DEPTH_SNAPSHOT = 1, 2, 3, 4
EXCH, LOCAL, BUY, SELL = 1 << 31, 1 << 30, 1 << 29, 1 << 28
EVENT_DTYPE = np.dtype({"names": ["ev", "exch_ts", "local_ts", "px", "qty", "order_id", "ival", "fval"],
                        "formats": ["<u8", "<i8", "<i8", "<f8", "<f8", "<u8", "<i8", "<f8"],
                        "offsets": [0, 8, 16, 24, 32, 40, 48, 56], "itemsize": 64}, align=True)
BLOCK_ROWS = 4096                     # book rows compared at once (bounds the n x N x N comparison)
_NO_LIMIT = np.iinfo(np.int64).max


def padded(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A list<float64> column as an ``(rows, width)`` array, NaN where a row has fewer levels."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = array.offsets.to_numpy()
    values = array.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    counts = np.diff(offsets)
    out = np.full((len(counts), width), np.nan)
    rows = np.repeat(np.arange(len(counts)), counts)
    out[rows, np.arange(len(values)) - (offsets[:-1] - offsets[0])[rows]] = values
    return out


def _widen(matrix: np.ndarray, width: int) -> np.ndarray:
    if matrix.shape[1] >= width:
        return matrix
    return np.hstack([matrix, np.full((matrix.shape[0], width - matrix.shape[1]), np.nan)])


def side_changes(px: np.ndarray, sz: np.ndarray, prev_px: np.ndarray, prev_sz: np.ndarray,
                 snap: np.ndarray) -> tuple[np.ndarray, ...]:
    """Level changes of one side between consecutive books (rows of ``px``/``sz``, each after the row
    before it; the first after ``prev_*``). Rows where ``snap`` list every level instead.

    Returns ``(row, px, qty, is_snapshot)`` of every change, by row."""
    before_px = np.vstack([prev_px[None], px[:-1]])
    before_sz = np.vstack([prev_sz[None], sz[:-1]])
    match = px[:, :, None] == before_px[:, None, :]             # NaN never matches
    valid, valid_before = ~np.isnan(px), ~np.isnan(before_px)
    in_before = match.any(2)
    old_sz = np.take_along_axis(before_sz, match.argmax(2), 1)
    changed = valid & (~in_before | (sz != old_sz) | snap[:, None])
    removed = valid_before & ~match.any(1) & ~snap[:, None]
    rows_c, lvl_c = np.nonzero(changed)
    rows_r, lvl_r = np.nonzero(removed)
    rows = np.concatenate([rows_c, rows_r])
    order = np.argsort(rows, kind="stable")
    return (rows[order], np.concatenate([px[rows_c, lvl_c], before_px[rows_r, lvl_r]])[order],
            np.concatenate([sz[rows_c, lvl_c], np.zeros(len(rows_r))])[order],
            np.concatenate([snap[rows_c], np.zeros(len(rows_r), bool)])[order])


def _times(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    local = table.column("ts_local").cast(pa.int64()).to_numpy()
    exch = table.column("ts_exchange").cast(pa.int64()).fill_null(0).to_numpy()
    return local, np.where(exch > 0, exch, local)


class BookDiffer:
    """Turns consecutive book rows into hftbacktest depth events, keeping the last book between hours."""

    def __init__(self) -> None:
        self.last: tuple[np.ndarray, ...] | None = None     # (bid_px, bid_sz, ask_px, ask_sz) of the last row
        self.snapshot_next = True

    def hole(self) -> None:
        """The next book starts afresh (clear + snapshot)."""
        self.snapshot_next = True

    def events(self, books: pa.Table, holes: list[int]) -> np.ndarray:
        """The depth events of ``books`` (rows in time order) in row order; ``holes`` force snapshots."""
        n = books.num_rows
        if not n:
            self.snapshot_next = self.snapshot_next or bool(holes)
            return np.zeros(0, EVENT_DTYPE)
        local, exch = _times(books)
        snap = np.zeros(n, bool)
        snap[0] = self.snapshot_next
        at = np.searchsorted(local, np.asarray(holes, np.int64), "left")
        snap[at[at < n]] = True                  # the first book at or after each hole
        self.snapshot_next = bool((at >= n).any())
        columns = [books.column(name) for name in ("bid_px", "bid_sz", "ask_px", "ask_sz")]
        parts = []
        for lo in range(0, n, BLOCK_ROWS):
            hi = min(n, lo + BLOCK_ROWS)
            block = [c.slice(lo, hi - lo) for c in columns]
            width = max(1, max(int(pc.max(pc.list_value_length(c)).as_py() or 0) for c in block),
                        self.last[0].shape[0] if self.last is not None else 0)
            mats = [padded(c, width) for c in block]
            last = [np.full(width, np.nan)] * 4 if self.last is None else [_widen(v[None], width)[0]
                                                                           for v in self.last]
            parts.append(self._block(mats, last, snap[lo:hi], local[lo:hi], exch[lo:hi]))
            self.last = tuple(m[-1] for m in mats)
        return np.concatenate(parts)

    @staticmethod
    def _block(mats: list[np.ndarray], last: list[np.ndarray], snap: np.ndarray, local: np.ndarray,
               exch: np.ndarray) -> np.ndarray:
        rows, evs, pxs, qtys, firsts = [], [], [], [], []
        snap_rows = np.nonzero(snap)[0]
        for side_flag, (px, sz), (prev_px, prev_sz), worst in (
                (BUY, mats[0:2], last[0:2], np.nanmin), (SELL, mats[2:4], last[2:4], np.nanmax)):
            if len(snap_rows):                  # clear up to the worst level of the old and the new book
                levels = np.hstack([px[snap_rows], np.vstack([prev_px[None], px[:-1]])[snap_rows]])
                with np.errstate(invalid="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    clear_px = worst(levels, axis=1)
                keep = ~np.isnan(clear_px)
                rows.append(snap_rows[keep])
                evs.append(np.full(keep.sum(), DEPTH_CLEAR | side_flag, np.uint64))
                pxs.append(clear_px[keep])
                qtys.append(np.zeros(keep.sum()))
                firsts.append(np.zeros(keep.sum(), np.int8))
            r, p, q, s = side_changes(px, sz, prev_px, prev_sz, snap)
            rows.append(r)
            evs.append(np.where(s, DEPTH_SNAPSHOT, DEPTH).astype(np.uint64) | np.uint64(side_flag))
            pxs.append(p)
            qtys.append(q)
            firsts.append(np.ones(len(r), np.int8))
        row = np.concatenate(rows)
        order = np.lexsort((np.concatenate(firsts), row))        # by row; a row's clears first
        out = np.zeros(len(row), EVENT_DTYPE)
        row = row[order]
        out["ev"] = np.concatenate(evs)[order]
        out["px"] = np.concatenate(pxs)[order]
        out["qty"] = np.concatenate(qtys)[order]
        out["local_ts"] = local[row]
        out["exch_ts"] = exch[row]
        return out


def trade_events(trades: pa.Table) -> np.ndarray:
    """One ``TRADE_EVENT`` per trade, with the aggressor side."""
    out = np.zeros(trades.num_rows, EVENT_DTYPE)
    if not trades.num_rows:
        return out
    local, exch = _times(trades)
    side = trades.column("side").fill_null(0).to_numpy()
    out["ev"] = np.where(side > 0, TRADE | BUY, np.where(side < 0, TRADE | SELL, TRADE)).astype(np.uint64)
    out["local_ts"], out["exch_ts"] = local, exch
    out["px"] = trades.column("price").to_numpy()
    out["qty"] = trades.column("size").to_numpy()
    return out


def _key(ts: np.ndarray, ev: np.ndarray) -> np.ndarray:
    """Sort key: time, then trades (0) before depth (1)."""
    return ts * 2 + ((ev & np.uint64(0xFF)) != TRADE)


def in_local_order(depth: np.ndarray, trades: np.ndarray) -> np.ndarray:
    """Depth and trade events of one hour by local time, trades first at the same time (stable)."""
    events = np.concatenate([trades, depth])
    return events[np.argsort(_key(events["local_ts"], events["ev"]), kind="stable")]


def order_events(events: np.ndarray, carried: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Flag events (in local order) for hftbacktest: returns ``(ordered, carry)``.

    An event whose exchange key is at least every earlier one's and at most every later one's (and at most
    ``limit``, the smallest key of the next hour) is one ``EXCH | LOCAL`` event. Any other is a ``LOCAL``
    event in place plus an ``EXCH`` copy placed among the aligned events by exchange key; ``carried``
    ``EXCH`` copies from the hour before are placed the same way, and copies above ``limit`` are carried on.
    """
    key = _key(events["exch_ts"], events["ev"])
    n = len(events)
    before_max = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min], key[:-1]])) if n else key
    after_min = np.minimum.accumulate(np.concatenate([key[1:], [limit]])[::-1])[::-1] if n else key
    aligned = (key >= before_max) & (key <= np.minimum(after_min, limit))
    flags = np.where(aligned, EXCH | LOCAL, LOCAL).astype(np.uint64)
    events = events.copy()
    events["ev"] |= flags
    copies = np.concatenate([carried, events[~aligned]])
    copies["ev"] = (copies["ev"] & ~np.uint64(EXCH | LOCAL)) | np.uint64(EXCH)
    copy_key = _key(copies["exch_ts"], copies["ev"])
    carry = copies[copy_key > limit]
    copies, copy_key = copies[copy_key <= limit], copy_key[copy_key <= limit]
    at = np.nonzero(aligned)[0]
    slot = np.searchsorted(key[at], copy_key, "right")             # after this many aligned events
    copy_pos = np.concatenate([[-1], at])[slot]                    # -1: before every event of the hour
    positions = np.concatenate([np.arange(n), copy_pos])
    tie = np.concatenate([np.zeros(n, np.int64), 1 + np.argsort(np.argsort(copy_key, kind="stable"))])
    merged = np.concatenate([events, copies])
    return merged[np.lexsort((tie, positions))], carry


class NpzStream:
    """Events appended to a temporary file, then written as ``data.npy`` inside a deflated ``.npz``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.raw = self.path.with_name(f".{self.path.name}.events")
        self.file = open(self.raw, "wb")
        self.count = 0

    def append(self, events: np.ndarray) -> None:
        events.tofile(self.file)
        self.count += len(events)

    def close(self) -> str:
        self.file.close()
        partial = self.path.with_name(f".{self.path.name}.partial")
        header = {"descr": np.lib.format.dtype_to_descr(EVENT_DTYPE), "fortran_order": False,
                  "shape": (self.count,)}
        try:
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
                with zf.open("data.npy", "w", force_zip64=True) as out, open(self.raw, "rb") as raw:
                    np.lib.format.write_array_header_1_0(out, header)
                    shutil.copyfileobj(raw, out, 16 << 20)
            os.replace(partial, self.path)
        finally:
            self.raw.unlink(missing_ok=True)
            partial.unlink(missing_ok=True)
        return str(self.path)


class HftbacktestWriter:
    """The ``hftbacktest`` export format (see the module docstring)."""

    channels = ("l2book", "trades")

    def __init__(self, out: str | Path, req: ExportRequest) -> None:
        out = Path(out)
        self.out = out if out.suffix == ".npz" else out.with_suffix(".npz")
        self.stream = NpzStream(self.out)
        self.books = BookDiffer()
        self.pending: np.ndarray | None = None       # the previous hour, in local order, not yet flagged
        self.carried = np.zeros(0, EVENT_DTYPE)

    def write_hour(self, hour: Hour) -> None:
        if "l2book" in hour.missing:
            self.books.hole()
        events = in_local_order(self.books.events(hour.books, hour.holes), trade_events(hour.trades))
        if not len(events):
            return
        self._flush(int(_key(events["exch_ts"], events["ev"]).min()))
        self.pending = events

    def _flush(self, limit: int) -> None:
        if self.pending is not None:
            ordered, self.carried = order_events(self.pending, self.carried, limit)
            self.stream.append(ordered)
            self.pending = None

    def close(self) -> list[str]:
        self._flush(_NO_LIMIT)
        if len(self.carried):
            self.stream.append(self.carried)
        return [self.stream.close()]
