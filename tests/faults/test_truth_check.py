"""The judge of the fault suite: each kind of defect it must count, counted (and nothing else)."""
from __future__ import annotations

from actors.venues.sim.market import SimTrade, Truth
from truth_check import Archived, Book, Event, Trade, TradeKeys, judge

KEYS = TradeKeys(lambda t: str(t.trade_id))


def book(n: int) -> tuple:
    return ((100.0 - n,), (1.0,), (101.0 + n,), (2.0,))


def truth_of(ids=(10, 11, 12, 13, 14), trades=5) -> Truth:
    truth = Truth()
    truth.books = {u: book(u) for u in ids}
    truth.trades = [SimTrade(i, 1.0 + i, 0.5, 1, "", "", sent_ns=i * 10) for i in range(1, trades + 1)]
    return truth


def rows(*ids: int, at=None) -> list[Book]:
    return [Book((at or {}).get(u, u), u, book(u)) for u in ids]


def trades(*pairs: tuple[int, int]) -> list[Trade]:
    """(trade id, received at) -> archived trades."""
    return [Trade(ts, str(i), (1.0 + i, 0.5, 1)) for i, ts in pairs]


ALL_TRADES = trades(*[(i, i * 10 + 1) for i in range(1, 6)])


def test_a_complete_archive_is_clean():
    v = judge(Archived(rows(10, 11, 12, 13, 14), ALL_TRADES, []), truth_of(), KEYS)
    assert v.clean and (v.books, v.trades, v.books_missing, v.trades_missing, v.epochs) == (5, 5, 0, 0, 1)


def test_missing_updates_need_a_loss_and_a_snapshot_that_holds_them():
    archived = Archived(rows(10, 11, 14), ALL_TRADES, [])
    assert judge(archived, truth_of(), KEYS).books_uncovered == 1                   # 12-13: one stretch
    archived.events = [Event(11, "gap", "", 11, 14), Event(13, "resync", "", 13, 14)]
    v = judge(archived, truth_of(), KEYS)
    assert (v.books_missing, v.books_uncovered) == (2, 0) and v.clean
    archived.events = [Event(11, "gap", "", 11, 14), Event(13, "resync", "", 12, 14)]
    assert judge(archived, truth_of(), KEYS).books_uncovered == 1                   # 13 is newer than the snapshot
    archived.events = [Event(15, "disconnect", "", None, None)]                     # after the row that follows
    assert judge(archived, truth_of(), KEYS).books_uncovered == 1


def test_updates_lost_at_the_end_or_before_the_first_sync():
    v = judge(Archived(rows(10, 11), ALL_TRADES, [Event(12, "disconnect", "stopped", None, None)]), truth_of(), KEYS)
    assert (v.books_missing, v.books_uncovered) == (3, 0)
    v = judge(Archived(rows(10, 11), ALL_TRADES, []), truth_of(), KEYS)
    assert v.books_uncovered == 1
    v = judge(Archived(rows(12, 13, 14), ALL_TRADES, [Event(1, "snapshot", "", 12, 12)]), truth_of(), KEYS)
    assert (v.books_missing, v.books_uncovered) == (2, 0)


def test_a_loss_event_naming_the_missing_update_covers_it():
    late = Archived(rows(10, 12, 13, 14), ALL_TRADES, [Event(12.5, "gap", "late push", 11, 11)])
    assert judge(late, truth_of(), KEYS).books_uncovered == 0
    other = Archived(rows(10, 12, 13, 14), ALL_TRADES, [Event(12.5, "gap", "late push", 13, 13)])
    assert judge(other, truth_of(), KEYS).books_uncovered == 1


def test_wrong_doubled_and_backwards_books_are_counted():
    wrong = rows(10, 11, 12, 13, 14)
    wrong[1] = Book(11, 11, book(99))
    assert judge(Archived(wrong, ALL_TRADES, []), truth_of(), KEYS).books_wrong == 1
    v = judge(Archived(rows(10, 11, 11, 12, 13, 14, at={11: 11}), ALL_TRADES, []), truth_of(), KEYS)
    assert (v.books_doubled, v.books_wrong, v.books_resync_repeats) == (1, 0, 0)
    resynced = Archived(rows(10, 11) + [Book(11.5, 11, book(11))] + rows(12, 13, 14),
                        ALL_TRADES, [Event(11.2, "disconnect", "", None, None), Event(11.5, "snapshot", "", 11, 11)])
    v = judge(resynced, truth_of(), KEYS)
    assert (v.books_doubled, v.books_resync_repeats) == (1, 1)
    backwards = [Book(ts, u, book(u)) for ts, u in ((1, 10), (2, 12), (3, 11), (4, 13), (5, 14))]
    v = judge(Archived(backwards, ALL_TRADES, []), truth_of(), KEYS)
    assert (v.books_wrong, v.books_missing, v.books_uncovered) == (1, 0, 0)
    unknown = rows(10, 11, 12, 13, 14) + [Book(20, 99, book(99))]
    assert judge(Archived(unknown, ALL_TRADES, []), truth_of(), KEYS).books_wrong == 1


def test_a_restart_starts_a_new_epoch_of_the_same_ids():
    truth = truth_of((10, 11, 12))
    truth.new_epoch(100)
    truth.books = {1: book(-1), 2: book(-2)}
    archived = Archived(rows(10, 11, 12) + [Book(101, 1, book(-1)), Book(102, 2, book(-2))], ALL_TRADES,
                        [Event(101, "resync", "", 1, 1)])
    v = judge(archived, truth, KEYS)
    assert v.clean and v.epochs == 2 and v.books_missing == 0
    archived.books[3] = Book(101, 1, book(1))          # the new epoch's id 1 with another book
    assert judge(archived, truth, KEYS).books_wrong == 1


def test_trades_may_only_be_lost_as_the_tail_of_a_connection_that_died():
    lost_tail = Archived(rows(10, 11, 12, 13, 14), trades((1, 11), (2, 21)), [Event(60, "disconnect", "", None, None)])
    v = judge(lost_tail, truth_of(), KEYS)
    assert (v.trades_missing, v.trades_uncovered) == (3, 0)
    hole = Archived(rows(10, 11, 12, 13, 14), trades((1, 11), (2, 21), (4, 41), (5, 51)),
                    [Event(60, "disconnect", "", None, None)])
    v = judge(hole, truth_of(), KEYS)
    assert (v.trades_missing, v.trades_uncovered) == (1, 1)
    resumed = Archived(rows(10, 11, 12, 13, 14), trades((1, 11), (2, 21), (5, 61)),
                       [Event(60, "gap", "socket process restarted", None, None)])
    assert judge(resumed, truth_of(), KEYS).trades_uncovered == 0
    silent = Archived(rows(10, 11, 12, 13, 14), trades((1, 11), (2, 21)), [])
    assert judge(silent, truth_of(), KEYS).trades_uncovered == 1
    closed_first = Archived(rows(10, 11, 12, 13, 14), trades((1, 11), (2, 21)),     # the client closed at 25,
                            [Event(25, "disconnect", "", None, None)])              # the server wrote on at 30..50
    assert judge(closed_first, truth_of(), KEYS).trades_uncovered == 0
    before_last_receipt = Archived(rows(10, 11, 12, 13, 14), trades((1, 11), (2, 21)),
                                   [Event(15, "disconnect", "", None, None)])
    assert judge(before_last_receipt, truth_of(), KEYS).trades_uncovered == 1


def test_doubled_and_wrong_trades_are_counted():
    doubled = Archived(rows(10, 11, 12, 13, 14), ALL_TRADES + trades((3, 99)), [])
    assert judge(doubled, truth_of(), KEYS).trades_doubled == 1
    wrong = Archived(rows(10, 11, 12, 13, 14), ALL_TRADES[:4] + [Trade(51, "5", (9.0, 0.5, 1))], [])
    v = judge(wrong, truth_of(), KEYS)
    assert v.trades_wrong == 1 and v.trades_missing == 1
