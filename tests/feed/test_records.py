"""Row buffers: what goes in comes out as Arrow, and a refused row leaves nothing behind."""
import pytest

from actors.feed.book import OrderBook, PySide, Side
from actors.feed.records import L2BOOK_SCHEMA, StreamBuffers


def test_book_rows_come_out_as_written_and_a_bad_row_leaves_no_trace():
    buffers = StreamBuffers()
    buffers.book("BTC", 1, 2, 10, [100.0, 99.5], [1.0, 2.0], [100.5], [3.0])
    with pytest.raises(ValueError, match="different number"):
        buffers.book("BTC", 3, 4, 11, [100.0, 99.0], [1.0], [100.5], [3.0])
    buffers.book("BTC", 5, None, None, [], [], [101.0, 102.0], [0.5, 0.25])
    batch = buffers.take()[("BTC", "l2book")]
    assert batch.schema == L2BOOK_SCHEMA
    rows = batch.drop_columns(["ts_local", "ts_exchange"]).to_pylist()   # (ns times need pandas as Python values)
    assert batch.column("ts_local").cast("int64").to_pylist() == [1, 5]
    assert batch.column("ts_exchange").cast("int64").to_pylist() == [2, None]
    assert [r["seq"] for r in rows] == [10, None]
    assert [(r["bid_px"], r["bid_sz"], r["ask_px"], r["ask_sz"]) for r in rows] == [
        ([100.0, 99.5], [1.0, 2.0], [100.5], [3.0]),
        ([], [], [101.0, 102.0], [0.5, 0.25]),
    ]
    assert buffers.take() == {}                      # emptied; the next batch starts afresh
    buffers.book("BTC", 7, 8, 12, [1.0], [2.0], [3.0], [4.0])
    assert buffers.take()[("BTC", "l2book")].column("ask_sz").to_pylist() == [[4.0]]


@pytest.mark.parametrize("side_type", [PySide, Side], ids=["python", "default"])
def test_book_top_rows_equal_rows_from_level_lists(side_type):
    """``book_top`` (levels copied by the book's sides) and ``book`` with ``book.top()`` make the same batch,
    mixed in one buffer, for a side with fewer levels than the depth and for an empty one."""
    book = OrderBook(side_type)
    book.load_snapshot([[f"{100 - i * 0.5}", f"{i + 1}"] for i in range(30)], [["100.5", "2.5"], ["101", "1"]])
    copied, listed = StreamBuffers(), StreamBuffers()
    for ts in range(4):
        copied.book_top("BTC", ts, ts + 1, ts + 10, book, 20)
        listed.book("BTC", ts, ts + 1, ts + 10, *book.top(20))
        copied.book("BTC", ts, None, None, [1.0], [2.0], [], [])
        listed.book("BTC", ts, None, None, [1.0], [2.0], [], [])
        book.apply_levels([["100", "0"], [f"{90 - ts}", "7"]], [["100.5", "0"]] if ts == 2 else [])
    a, b = copied.take()[("BTC", "l2book")], listed.take()[("BTC", "l2book")]
    assert a.equals(b)
    assert a.column("bid_px").to_pylist()[0] == [100.0 - i * 0.5 for i in range(20)]
    assert a.column("ask_px").to_pylist()[6] == [101.0]     # after 100.5 was removed at ts 2
