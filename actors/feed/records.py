"""Record schemas of the archive (docs/file-format.md "Schemas") and columnar row buffers.

Every channel has one Arrow schema. Event kinds written to the ``events`` channel:
``connect``, ``subscribed``, ``disconnect`` (detail says why), ``gap`` (a sequence break:
``seq_from`` = last good id, ``seq_to`` = id received; also a socket process restart),
``resync`` (a fresh snapshot re-established the book, ``seq_from`` = snapshot id),
``snapshot`` (first snapshot on a connection), ``crossed`` (an impossible book, not written),
``error`` (a venue error or malformed frame, quoted and truncated), ``stale`` (a snapshot too
old to bridge the buffered diffs), ``lost`` (spool damage found at recovery). Venue parsers hand plain Python values to a
:class:`RowSink`; :class:`StreamBuffers` collects them per stream as column lists and
turns them into ``pa.RecordBatch`` objects on flush, so the hot path never builds
Arrow objects per message.
"""
from __future__ import annotations

from array import array
from typing import Iterable, Protocol, Sequence

import pyarrow as pa

from actors.feed.book import OrderBook

TS_TYPE = pa.timestamp("ns", tz="UTC")
FLOATS = pa.list_(pa.float64())

L2BOOK_SCHEMA = pa.schema(
    [
        pa.field("ts_local", TS_TYPE, nullable=False),
        pa.field("ts_exchange", TS_TYPE),
        pa.field("seq", pa.int64()),
        pa.field("bid_px", FLOATS),
        pa.field("bid_sz", FLOATS),
        pa.field("ask_px", FLOATS),
        pa.field("ask_sz", FLOATS),
    ]
)
TRADES_SCHEMA = pa.schema(
    [
        pa.field("ts_local", TS_TYPE, nullable=False),
        pa.field("ts_exchange", TS_TYPE),
        pa.field("trade_id", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("size", pa.float64()),
        pa.field("side", pa.int8()),
        pa.field("trade_type", pa.string()),     # null: a plain trade; a venue may say LIQUIDATION, ...
    ]
)
EVENTS_SCHEMA = pa.schema(
    [
        pa.field("ts_local", TS_TYPE, nullable=False),
        pa.field("channel", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("seq_from", pa.int64()),
        pa.field("seq_to", pa.int64()),
    ]
)
#: the values of a ``derivatives`` row, in schema order (a venue says what it knows, null elsewhere)
DERIVATIVE_FIELDS = ("mark_price", "index_price", "funding_rate", "predicted_funding_rate", "next_funding_time",
                     "open_interest", "last_price")
DERIVATIVES_SCHEMA = pa.schema(
    [
        pa.field("ts_local", TS_TYPE, nullable=False),
        pa.field("ts_exchange", TS_TYPE),
        pa.field("mark_price", pa.float64()),
        pa.field("index_price", pa.float64()),
        pa.field("funding_rate", pa.float64()),
        pa.field("predicted_funding_rate", pa.float64()),
        pa.field("next_funding_time", TS_TYPE),
        pa.field("open_interest", pa.float64()),      # in the venue's unit (contracts or base currency)
        pa.field("last_price", pa.float64()),
    ]
)
LIQUIDATIONS_SCHEMA = pa.schema(
    [
        pa.field("ts_local", TS_TYPE, nullable=False),
        pa.field("ts_exchange", TS_TYPE),
        pa.field("side", pa.int8()),                  # the liquidation ORDER's side: +1 buy = a short was liquidated
        pa.field("price", pa.float64()),
        pa.field("size", pa.float64()),
        pa.field("order_id", pa.string()),            # null when the venue names none
    ]
)
SCHEMAS: dict[str, pa.Schema] = {
    "l2book": L2BOOK_SCHEMA,
    "trades": TRADES_SCHEMA,
    "events": EVENTS_SCHEMA,
    "derivatives": DERIVATIVES_SCHEMA,
    "liquidations": LIQUIDATIONS_SCHEMA,
}
CHANNELS = tuple(SCHEMAS)
DATA_CHANNELS = ("l2book", "trades", "derivatives", "liquidations")

class SchemaMismatch(ValueError):
    """Rows that cannot be put in a channel's record schema (a missing required column, an unknown one,
    a value that does not cast)."""


def _conformed_column(column: pa.Array | pa.ChunkedArray, field: pa.Field) -> pa.Array | pa.ChunkedArray:
    """``column`` as ``field.type``; only exact casts (an integer id to its decimal text, a coarser or
    zone-less time to ns UTC) are made."""
    if column.type == field.type:
        return column
    if pa.types.is_timestamp(field.type) and pa.types.is_timestamp(column.type) and column.type.tz in (None, "UTC",
                                                                                                         "Etc/UTC"):
        column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))    # a zone-less time is UTC (as written)
    elif pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    try:
        return column.cast(field.type)          # safe casts only: nothing is truncated or wraps
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaMismatch(f"column {field.name!r}: {column.type} does not cast to {field.type} ({exc})") from None


def conform(data: pa.Table | pa.RecordBatch, channel: str, columns: list[str] | None = None):
    """Rows of ``channel`` in any shape the archive ever wrote (older spool frames, format 1/2 files:
    no ``trade_type``, ``trade_id`` as int64, ``ts_exchange`` in ms) in the record schema.

    Columns come back in the schema's order; a missing nullable column is all null. ``columns``
    keeps a subset (in the schema's order). The same type (Table or RecordBatch) is returned, and
    rows already in the schema are returned as they are. Raises :class:`SchemaMismatch`.
    """
    schema = SCHEMAS[channel]
    target = schema if columns is None else pa.schema([schema.field(name) for name in schema.names
                                                       if name in columns])
    if data.schema.remove_metadata().equals(target):
        return data
    unknown = set(data.schema.names) - set(schema.names)
    if unknown:
        raise SchemaMismatch(f"{channel}: unknown column(s) {', '.join(sorted(unknown))}")
    arrays = []
    for field in target:
        if field.name in data.schema.names:
            arrays.append(_conformed_column(data.column(field.name), field))
        elif field.nullable:
            arrays.append(pa.nulls(data.num_rows, field.type))
        else:
            raise SchemaMismatch(f"{channel}: required column {field.name!r} is missing")
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(arrays, schema=target)
    return pa.Table.from_arrays(arrays, schema=target)


class RowSink(Protocol):
    """Where venue logic sends normalized rows. Times are UTC nanoseconds (int)."""

    def book(self, symbol: str, ts_local: int, ts_exchange: int | None, seq: int | None,
             bid_px: Sequence[float], bid_sz: Sequence[float],
             ask_px: Sequence[float], ask_sz: Sequence[float]) -> None: ...

    def book_top(self, symbol: str, ts_local: int, ts_exchange: int | None, seq: int | None,
                 book: OrderBook, depth: int) -> None:
        """The same row as ``book(..., *book.top(depth))``; a sink may copy it more cheaply."""

    def trade(self, symbol: str, ts_local: int, ts_exchange: int | None, trade_id: str,
              price: float, size: float, side: int, trade_type: str | None = None) -> None: ...

    def event(self, symbol: str, ts_local: int, channel: str, kind: str, detail: str = "",
              seq_from: int | None = None, seq_to: int | None = None) -> None: ...

    def derivative(self, symbol: str, ts_local: int, ts_exchange: int | None, values: Sequence) -> None:
        """One ``derivatives`` row: ``values`` in :data:`DERIVATIVE_FIELDS` order (next_funding_time in ns)."""

    def liquidation(self, symbol: str, ts_local: int, ts_exchange: int | None, side: int, price: float,
                    size: float, order_id: str | None = None) -> None: ...


class ListSink:
    """A RowSink that keeps every row as a tuple in memory: for tests and offline tools."""

    def __init__(self) -> None:
        self.books: list[tuple] = []
        self.trades: list[tuple] = []
        self.events: list[tuple] = []
        self.derivatives: list[tuple] = []
        self.liquidations: list[tuple] = []

    def book(self, symbol, ts_local, ts_exchange, seq, bid_px, bid_sz, ask_px, ask_sz) -> None:
        self.books.append((symbol, ts_local, ts_exchange, seq, list(bid_px), list(bid_sz),
                           list(ask_px), list(ask_sz)))

    def book_top(self, symbol, ts_local, ts_exchange, seq, book, depth) -> None:
        self.book(symbol, ts_local, ts_exchange, seq, *book.top(depth))

    def trade(self, symbol, ts_local, ts_exchange, trade_id, price, size, side, trade_type=None) -> None:
        row = (symbol, ts_local, ts_exchange, trade_id, price, size, side)
        self.trades.append(row if trade_type is None else (*row, trade_type))   # a typed trade has 8 fields

    def event(self, symbol, ts_local, channel, kind, detail="", seq_from=None, seq_to=None) -> None:
        self.events.append((symbol, ts_local, channel, kind, detail, seq_from, seq_to))

    def derivative(self, symbol, ts_local, ts_exchange, values) -> None:
        self.derivatives.append((symbol, ts_local, ts_exchange, *values))

    def liquidation(self, symbol, ts_local, ts_exchange, side, price, size, order_id=None) -> None:
        self.liquidations.append((symbol, ts_local, ts_exchange, side, price, size, order_id))


class ColumnBuffer:
    """Rows of one stream as column lists; ``take()`` returns a RecordBatch and empties it."""

    __slots__ = ("schema", "columns")

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.columns: list[list] = [[] for _ in schema]

    def __len__(self) -> int:
        return len(self.columns[0])

    def append(self, values: Iterable) -> None:
        any(map(list.append, self.columns, values))    # one append per column, without a Python loop

    def take(self) -> pa.RecordBatch | None:
        if not self.columns[0]:
            return None
        arrays = [pa.array(col, type=field.type) for col, field in zip(self.columns, self.schema)]
        self.columns = [[] for _ in self.schema]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


class BookBuffer:
    """l2book rows with their levels kept flat (C doubles, one bytearray per column, plus offsets):
    ``append_top`` copies a row straight out of a compiled book side (``top_into``, no Python
    float per level), and ``take()`` hands each column to Arrow without a copy."""

    __slots__ = ("ts_local", "ts_exchange", "seq", "levels", "bid_offsets", "ask_offsets")

    def __init__(self) -> None:
        self.ts_local: list[int] = []
        self.ts_exchange: list[int | None] = []
        self.seq: list[int | None] = []
        self.levels = (bytearray(), bytearray(), bytearray(), bytearray())   # bid_px, bid_sz, ask_px, ask_sz
        self.bid_offsets = array("i", (0,))
        self.ask_offsets = array("i", (0,))

    def __len__(self) -> int:
        return len(self.ts_local)

    def append(self, ts_local: int, ts_exchange: int | None, seq: int | None, bid_px: Sequence[float],
               bid_sz: Sequence[float], ask_px: Sequence[float], ask_sz: Sequence[float]) -> None:
        """One row from level lists; a refused row leaves no half row behind."""
        bpx, bsz, apx, asz = self.levels
        bids_end, asks_end = len(bpx), len(apx)
        try:
            bpx += array("d", bid_px)
            bsz += array("d", bid_sz)
            apx += array("d", ask_px)
            asz += array("d", ask_sz)
            if len(bsz) != len(bpx) or len(asz) != len(apx):
                raise ValueError("a book side has a different number of prices and sizes")
        except (TypeError, ValueError):
            for column, end in zip(self.levels, (bids_end, bids_end, asks_end, asks_end)):
                del column[end:]
            raise
        self.end_row(ts_local, ts_exchange, seq)

    def append_top(self, ts_local: int, ts_exchange: int | None, seq: int | None, book: OrderBook,
                   depth: int) -> None:
        """One row of the best ``depth`` levels of ``book``, copied by its sides."""
        bpx, bsz, apx, asz = self.levels
        book.bids.top_into(depth, bpx, bsz)
        book.asks.top_into(depth, apx, asz)
        self.end_row(ts_local, ts_exchange, seq)

    def end_row(self, ts_local: int, ts_exchange: int | None, seq: int | None) -> None:
        """The row's scalar columns, and where its levels end (in doubles): after its levels were
        appended to ``levels`` (by ``append``, ``append_top``, or a caller's ``apply_top``)."""
        self.ts_local.append(ts_local)
        self.ts_exchange.append(ts_exchange)
        self.seq.append(seq)
        self.bid_offsets.append(len(self.levels[0]) >> 3)
        self.ask_offsets.append(len(self.levels[2]) >> 3)

    def take(self) -> pa.RecordBatch | None:
        if not self.ts_local:
            return None
        offsets = [_arrow(self.bid_offsets, len(self.bid_offsets), pa.int32()),
                   _arrow(self.ask_offsets, len(self.ask_offsets), pa.int32())]
        lists = [pa.ListArray.from_arrays(offsets[i // 2], _arrow(values, len(values) >> 3, pa.float64()),
                                          type=FLOATS)
                 for i, values in enumerate(self.levels)]
        arrays = [pa.array(self.ts_local, TS_TYPE), pa.array(self.ts_exchange, TS_TYPE),
                  pa.array(self.seq, pa.int64()), *lists]
        self.__init__()                          # fresh buffers: Arrow now owns the old ones
        return pa.RecordBatch.from_arrays(arrays, schema=L2BOOK_SCHEMA)


def _arrow(values: array | bytearray, length: int, type_: pa.DataType) -> pa.Array:
    """``length`` fixed-width values in a C buffer as an Arrow array of ``type_``, sharing its memory."""
    return pa.Array.from_buffers(type_, length, [None, pa.py_buffer(values)])


class StreamBuffers:
    """A RowSink that buffers rows per (symbol, channel) for batching to writers."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, str], ColumnBuffer | BookBuffer] = {}
        self.rows = 0

    def _buffer(self, symbol: str, channel: str) -> ColumnBuffer | BookBuffer:
        key = (symbol, channel)
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = BookBuffer() if channel == "l2book" else ColumnBuffer(SCHEMAS[channel])
        return buf

    def book(self, symbol, ts_local, ts_exchange, seq, bid_px, bid_sz, ask_px, ask_sz) -> None:
        self.book_buffer(symbol).append(ts_local, ts_exchange, seq, bid_px, bid_sz, ask_px, ask_sz)
        self.rows += 1

    def book_top(self, symbol, ts_local, ts_exchange, seq, book, depth) -> None:
        self.book_buffer(symbol).append_top(ts_local, ts_exchange, seq, book, depth)
        self.rows += 1

    def book_buffer(self, symbol: str) -> BookBuffer:
        """``symbol``'s l2book buffer: a client may copy a row's levels into it and call ``book_ended``."""
        buf = self.buffers.get((symbol, "l2book"))      # (an empty buffer is falsy: no ``or`` here)
        return self._buffer(symbol, "l2book") if buf is None else buf  # type: ignore[return-value]

    def book_ended(self, buf: BookBuffer, ts_local: int, ts_exchange: int | None, seq: int | None) -> None:
        """A row whose levels were appended to ``buf.levels`` (``book_buffer``) ends here
        (``buf.end_row``, inlined: one call per book row on the hot path)."""
        buf.ts_local.append(ts_local)
        buf.ts_exchange.append(ts_exchange)
        buf.seq.append(seq)
        levels = buf.levels
        buf.bid_offsets.append(len(levels[0]) >> 3)
        buf.ask_offsets.append(len(levels[2]) >> 3)
        self.rows += 1

    def trade(self, symbol, ts_local, ts_exchange, trade_id, price, size, side, trade_type=None) -> None:
        buf = self.buffers.get((symbol, "trades"))
        if buf is None:
            buf = self._buffer(symbol, "trades")
        buf.append((ts_local, ts_exchange, trade_id, price, size, side, trade_type))
        self.rows += 1

    def event(self, symbol, ts_local, channel, kind, detail="", seq_from=None, seq_to=None) -> None:
        self._buffer(symbol, "events").append((ts_local, channel, kind, detail[:2000], seq_from, seq_to))
        self.rows += 1

    def derivative(self, symbol, ts_local, ts_exchange, values) -> None:
        self._buffer(symbol, "derivatives").append((ts_local, ts_exchange, *values))
        self.rows += 1

    def liquidation(self, symbol, ts_local, ts_exchange, side, price, size, order_id=None) -> None:
        self._buffer(symbol, "liquidations").append((ts_local, ts_exchange, side, price, size, order_id))
        self.rows += 1

    def take(self) -> dict[tuple[str, str], pa.RecordBatch]:
        """All buffered rows as batches keyed by (symbol, channel); buffers are emptied."""
        out = {}
        for key, buf in self.buffers.items():
            batch = buf.take()
            if batch is not None:
                out[key] = batch
        self.rows = 0
        return out
