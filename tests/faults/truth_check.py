"""Judge what was archived against a simulator's ground truth, precisely.

The truth (``record_truth``) is every trade the simulator delivered and the true top-N book
per update id, in epochs (a venue restart starts the ids again). The archive of one symbol is
its book rows, trade rows and events, each in arrival order. :func:`judge` counts:

* **book rows ≠ truth**: a row whose levels differ from the true book at its update id, or
  whose id the venue never sent, or that goes backwards within its epoch (a true but older
  book written after a newer one: whoever replays the rows in order sees a wrong book);
* **book rows doubled** / **trades doubled**: an update id (per epoch) or a trade written twice;
* **trades ≠ truth**: a trade the simulator never sent, or with other price/size/side;
* **unrecorded gaps**: stretches of lost data no event accounts for. Precisely:

  - a true book update ``u`` of epoch ``e`` with no row is *covered* when a loss event ``L``
    (``gap``, ``disconnect``, ``crossed``, ``lost``) of the symbol comes at or after the row
    before ``u`` (the previous archived id, in arrival order; the run's start if none) and at
    or before the row after ``u`` (none: the run's end), and the first sync event ``S``
    (``snapshot``/``resync``) after ``L`` re-establishes a book that holds ``u``: its
    ``seq_from`` (the snapshot's id) is ``>= u`` in the same epoch, or ``S`` belongs to a later
    epoch, or the venue has no ids (full-book pushes). Missing updates at the end of the run
    need only ``L``; before the first row, the start of the run stands for ``L``. A loss event
    of the same epoch that names ``u`` alone (``seq_from == seq_to == u``, e.g. a late full-book
    push refused) covers it too.
  - a true trade with no row is *covered* when a loss event ``L`` (``gap``, ``disconnect``,
    ``lost``) comes at or after the receipt of the archived trade sent just before it, and every
    archived trade sent after it was received at or after ``L``: the loss is the tail of a
    connection that died (TCP keeps order), never a hole in a healthy stream. (``L`` may come
    before the lost trade was sent: the server writes into a connection the client already closed.)

  Uncovered missing updates / trades are counted as stretches (runs of consecutive truth
  entries), with examples.

Plain Python over plain tuples, so the same judgement applies to a ``ListSink`` (client only)
and to the Parquet archive of a real run.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

MS = 1_000_000
LOSS = ("gap", "disconnect", "crossed", "lost")
SYNC = ("snapshot", "resync")


@dataclass(frozen=True)
class Book:
    ts_local: int
    key: int                 # the update id the row is at (Hyperliquid: the block time in ms)
    levels: tuple            # (bid_px, bid_sz, ask_px, ask_sz) as tuples


@dataclass(frozen=True)
class Trade:
    ts_local: int
    key: Any                 # what identifies the trade (see TradeKeys)
    fields: tuple            # (price, size, side)


@dataclass(frozen=True)
class Event:
    ts_local: int
    kind: str
    detail: str
    seq_from: int | None
    seq_to: int | None


@dataclass
class Archived:
    """One symbol's archive, every list in arrival order."""

    books: list[Book]
    trades: list[Trade]
    events: list[Event]


@dataclass(frozen=True)
class TradeKeys:
    """How a venue's archived trade is matched to the simulator's trade."""

    of_truth: Callable[[Any], Any]                       # SimTrade -> key
    of_row: Callable[[dict], Any] = lambda r: r["trade_id"]


@dataclass
class Verdict:
    """Counts over one or more symbols (add them with ``+``)."""

    books: int = 0
    books_wrong: int = 0
    books_doubled: int = 0
    books_missing: int = 0
    books_uncovered: int = 0          # stretches
    trades: int = 0
    trades_wrong: int = 0
    trades_doubled: int = 0
    trades_missing: int = 0
    trades_uncovered: int = 0         # stretches
    epochs: int = 0                   # truth epochs (venue sequences) with archived rows
    books_resync_repeats: int = 0     # of books_doubled: a (re)sync snapshot repeating the last row
    examples: list[str] = field(default_factory=list)

    def __add__(self, other: "Verdict") -> "Verdict":
        out = Verdict()
        for name in self.__dataclass_fields__:
            a, b = getattr(self, name), getattr(other, name)
            setattr(out, name, a + b)
        out.examples = (self.examples + other.examples)[:20]
        return out

    @property
    def unrecorded_gaps(self) -> int:
        return self.books_uncovered + self.trades_uncovered

    @property
    def clean(self) -> bool:
        """Nothing wrong, doubled or unaccounted for."""
        return not (self.books_wrong or self.books_doubled or self.trades_wrong or self.trades_doubled
                    or self.unrecorded_gaps)

    def line(self) -> str:
        return (f"books {self.books} (wrong {self.books_wrong}, doubled {self.books_doubled}, missing "
                f"{self.books_missing}, unrecorded stretches {self.books_uncovered}); trades {self.trades} "
                f"(wrong {self.trades_wrong}, doubled {self.trades_doubled}, missing {self.trades_missing}, "
                f"unrecorded stretches {self.trades_uncovered})")


# ----------------------------------------------------------------------------- sources
def _levels(values: Iterable) -> tuple:
    return tuple(tuple(v) for v in values)


def from_sink(sink, symbol: str, book_key: Callable[[tuple], int], trade_keys: TradeKeys) -> Archived:
    """A ``ListSink``'s rows of ``symbol`` (as the client wrote them)."""
    books = [Book(b[1], book_key({"ts_exchange": b[2], "seq": b[3]}), _levels(b[4:8]))
             for b in sink.books if b[0] == symbol]
    trades = [Trade(t[1], trade_keys.of_row({"ts_exchange": t[2], "trade_id": t[3], "price": t[4], "size": t[5],
                                             "side": t[6]}), (t[4], t[5], t[6]))
              for t in sink.trades if t[0] == symbol]
    events = [Event(e[1], e[3], e[4], e[5], e[6]) for e in sink.events if e[0] == symbol]
    return Archived(books, trades, events)


def from_archive(root, venue: str, symbol: str, book_key: Callable[[dict], int], trade_keys: TradeKeys) -> Archived:
    """The sealed Parquet rows of ``symbol`` (files in time order, rows stably sorted by ``ts_local``)."""
    from archive_reading import archive_files, read_channel

    def rows(channel: str) -> list[dict]:
        if not archive_files(root, channel, symbol, venue):
            return []
        return sorted(read_channel(root, channel, symbol, venue).to_pylist(), key=lambda r: r["ts_local"])

    books = [Book(r["ts_local"], book_key(r), (tuple(r["bid_px"]), tuple(r["bid_sz"]), tuple(r["ask_px"]),
                                               tuple(r["ask_sz"]))) for r in rows("l2book")]
    trades = [Trade(r["ts_local"], trade_keys.of_row(r), (r["price"], r["size"], r["side"])) for r in rows("trades")]
    events = [Event(r["ts_local"], r["kind"], r["detail"], r["seq_from"], r["seq_to"]) for r in rows("events")]
    return Archived(books, trades, events)


# ----------------------------------------------------------------------------- the judgement
def judge(archived: Archived, truth, trade_keys: TradeKeys, has_ids: bool = True, label: str = "") -> Verdict:
    """Count wrong, doubled and unaccounted-for rows of one symbol (see module docstring)."""
    verdict = Verdict(books=len(archived.books), trades=len(archived.trades))
    _judge_books(archived, truth.all_epochs(), has_ids, verdict, label)
    _judge_trades(archived, truth.trades, trade_keys, verdict, label)
    return verdict


def _example(verdict: Verdict, text: str) -> None:
    if len(verdict.examples) < 20:
        verdict.examples.append(text)


class _Stretches:
    """Runs of consecutive unaccounted-for truth entries."""

    def __init__(self) -> None:
        self.open = False

    def accounted(self) -> None:
        self.open = False

    def unaccounted(self) -> bool:
        """One more entry no event accounts for; True when it starts a new stretch."""
        starts, self.open = not self.open, True
        return starts


def _epoch_at(starts: list[int], ts: int) -> int:
    return max(0, bisect.bisect_right(starts, ts) - 1)


def _judge_books(archived: Archived, epochs: list[tuple[int, dict]], has_ids: bool, verdict: Verdict,
                 label: str) -> None:
    starts = [start for start, _ in epochs]
    placed: list[tuple[int, Book]] = []          # (epoch, row) of every row that matched the truth
    seen: list[set[int]] = [set() for _ in epochs]
    last: list[int | None] = [None] * len(epochs)
    current = 0
    syncs_at = sorted(ev.ts_local for ev in archived.events if ev.kind in SYNC)
    for row in archived.books:
        candidates = [current] + [e for e in range(current + 1, len(epochs)) if starts[e] <= row.ts_local]
        match = next((e for e in candidates if row.key in epochs[e][1] and (last[e] is None or row.key > last[e])
                      and _levels(epochs[e][1][row.key]) == row.levels), None)
        if match is not None:
            current, last[match] = match, row.key
            seen[match].add(row.key)
            placed.append((match, row))
        elif any(row.key in seen[e] and _levels(epochs[e][1][row.key]) == row.levels for e in candidates):
            verdict.books_doubled += 1
            previous = placed[-1][1] if placed else None
            if previous is not None and previous.key == row.key and \
                    bisect.bisect_right(syncs_at, row.ts_local) > bisect.bisect_left(syncs_at, previous.ts_local):
                verdict.books_resync_repeats += 1         # the snapshot after a resync repeats the last row
            _example(verdict, f"{label} book row at {row.key} written twice")
        elif (late := next((e for e in candidates if row.key in epochs[e][1]
                            and _levels(epochs[e][1][row.key]) == row.levels), None)) is not None:
            verdict.books_wrong += 1              # a true book, but older than a row written before it
            seen[late].add(row.key)
            _example(verdict, f"{label} book row at {row.key} (ts {row.ts_local}) written after a newer one")
        else:
            verdict.books_wrong += 1
            _example(verdict, f"{label} book row at {row.key} (ts {row.ts_local}) differs from the truth")
    verdict.epochs += sum(1 for keys in seen if keys)
    losses = [(i, ev) for i, ev in enumerate(archived.events) if ev.kind in LOSS]
    syncs = [(i, ev) for i, ev in enumerate(archived.events) if ev.kind in SYNC]
    order = [(e, row.key) for e, row in placed]           # increasing (epoch, key) in arrival order
    for e, (_, books) in enumerate(epochs):
        stretches = _Stretches()
        for key in sorted(books):
            if key in seen[e]:
                stretches.accounted()
                continue
            verdict.books_missing += 1
            if _book_covered(e, key, order, placed, losses, syncs, starts, has_ids):
                stretches.accounted()
            elif stretches.unaccounted():
                verdict.books_uncovered += 1
                _example(verdict, f"{label} book update {key} (epoch {e}) missing with no event accounting for it")


def _book_covered(epoch: int, key: int, order: list[tuple[int, int]], placed: list[tuple[int, Book]],
                  losses: list[tuple[int, Event]], syncs: list[tuple[int, Event]], starts: list[int],
                  has_ids: bool) -> bool:
    if any(ev.seq_from == ev.seq_to == key and _epoch_at(starts, ev.ts_local) == epoch for _, ev in losses):
        return True                                      # an event names exactly this update
    at = bisect.bisect_left(order, (epoch, key))
    before = placed[at - 1][1].ts_local if at > 0 else None
    after = placed[at][1].ts_local if at < len(placed) else None
    if before is None:                                   # before the first row: the start is the loss
        candidates = [(-1, None)]
    else:
        candidates = [(i, ev) for i, ev in losses if ev.ts_local >= before and (after is None or ev.ts_local <= after)]
    for index, _ in candidates:
        if after is None:
            return True                                   # lost at the end of the run, and said so
        sync = next((ev for i, ev in syncs if i > index), None)
        if sync is None:
            continue
        if not has_ids or sync.seq_from is None or _epoch_at(starts, sync.ts_local) > epoch:
            return True
        if sync.seq_from >= key:
            return True
    return False


def _judge_trades(archived: Archived, truth_trades: list, keys: TradeKeys, verdict: Verdict, label: str) -> None:
    truth = {keys.of_truth(t): t for t in truth_trades}
    got: dict[Any, Trade] = {}
    for row in archived.trades:
        t = truth.get(row.key)
        if row.key in got:
            verdict.trades_doubled += 1
            _example(verdict, f"{label} trade {row.key} written twice")
        elif t is None or (t.price, t.size, t.side) != row.fields:
            verdict.trades_wrong += 1
            _example(verdict, f"{label} trade {row.key} {row.fields} is not a trade the venue sent")
        else:
            got[row.key] = row
    # every archived trade by send time: (sent_ns, ts_local)
    received = sorted((truth[k].sent_ns, row.ts_local) for k, row in got.items())
    later_min = [0] * (len(received) + 1)               # min ts_local of archived trades sent at or after i
    later_min[-1] = 1 << 62
    for i in range(len(received) - 1, -1, -1):
        later_min[i] = min(received[i][1], later_min[i + 1])
    losses = sorted(ev.ts_local for ev in archived.events if ev.kind in ("gap", "disconnect", "lost"))
    stretches = _Stretches()
    for t in sorted(truth_trades, key=lambda t: t.sent_ns):
        key = keys.of_truth(t)
        if key in got:
            stretches.accounted()
            continue
        verdict.trades_missing += 1
        at = bisect.bisect_right(received, (t.sent_ns, 1 << 62))
        first_later = later_min[at]
        before = received[at - 1][1] if at else -1
        loss = bisect.bisect_left(losses, before)
        if loss < len(losses) and losses[loss] <= first_later:    # the tail of a connection that died
            stretches.accounted()
        elif stretches.unaccounted():
            verdict.trades_uncovered += 1
            _example(verdict, f"{label} trade {key} sent at {t.sent_ns} missing with no event accounting for it")
