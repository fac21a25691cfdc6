"""A price-level order book for one symbol (venue-neutral; no Ray, no I/O).

Each side keeps every level in a dict (price -> size) and, sorted, only the best levels: a
*window* of the best ``window`` to ``4 * window`` prices, holding every level better than or
equal to its worst price (``limit``). Real diffs mostly touch levels deep in the book (a
Binance depth diff carries ~70 levels of a 1000-level book); those cost one dict operation and
one comparison, and only levels inside the window are inserted into or removed from the sorted
list. When deletions leave it shorter than ``window``, it is rebuilt from the dict (the best
``2 * window``, sorted in C); when insertions grow it past ``4 * window``, it is cut back. The top N levels are a slice
of the window.

The same side is compiled from ``_book.c`` when the package is installed with a C compiler (the
build only warns without one): ``Side`` is the compiled one when it was built, else ``PySide``
(same algorithm, same results, ~3.7x slower on real Binance diffs: ``tests/bench/bench_book.py``).
``TICKARCHIVE_PURE_PYTHON_BOOK=1`` forces ``PySide``. After editing ``_book.c``, ``pip install -e .``
rebuilds it; ``tests/feed/test_book.py`` checks that both sides agree.
"""
from __future__ import annotations

import os
from array import array
from bisect import bisect_left, insort
from operator import neg
from typing import Iterable, Sequence

BID, ASK = "bid", "ask"
WINDOW = 128
INF = float("inf")


class PySide:
    """One side. Keys ascending: asks by price, bids by negated price (best first)."""

    __slots__ = ("sign", "sizes", "keys", "limit", "window")

    def __init__(self, sign: int, window: int = WINDOW) -> None:
        self.sign = sign
        self.sizes: dict[float, float] = {}
        self.keys: list[float] = []        # sorted keys of every level with key <= limit
        self.limit = INF                   # INF: the window holds every level
        self.window = window

    def __len__(self) -> int:
        return len(self.sizes)

    def set(self, price: float, size: float) -> None:
        self.apply([(price, size)])

    def apply(self, levels: Iterable[Sequence]) -> None:
        """Set ``[[price, size], ...]`` levels (strings or numbers); size 0 removes a level.

        A new level whose price is not finite raises ValueError (the levels before it are set)."""
        sizes, keys, limit, sign = self.sizes, self.keys, self.limit, self.sign
        for level in levels:
            price = float(level[0])
            size = float(level[1])
            if size:
                if price not in sizes:
                    if price - price:              # nan or inf (x - x is 0.0 for every finite x)
                        raise ValueError("a price is not a finite number")
                    key = sign * price
                    if key <= limit:
                        insort(keys, key)
                sizes[price] = size
            elif sizes.pop(price, None) is not None:
                key = sign * price
                if key <= limit:
                    del keys[bisect_left(keys, key)]
        n = len(keys)
        if n > 4 * self.window:            # cut back to twice the window (deletions have room)
            del keys[2 * self.window:]
            self.limit = keys[-1]
        elif n < self.window and self.limit != INF:
            self._rebuild()

    def _rebuild(self) -> None:
        """The window again from every level: the best ``2 * window`` (after deletions emptied it)."""
        sign, keep = self.sign, 2 * self.window
        ordered = sorted(self.sizes, reverse=sign < 0)       # best first, in C
        self.keys = [sign * p for p in ordered[:keep]]
        self.limit = INF if len(ordered) <= keep else self.keys[-1]

    def clear(self) -> None:
        self.sizes.clear()
        self.keys.clear()
        self.limit = INF

    def top(self, n: int) -> tuple[list[float], list[float]]:
        if n > self.window:                # a caller wants more levels than the window keeps
            self.window = n
            self._rebuild()
        prices = self.keys[:n] if self.sign > 0 else list(map(neg, self.keys[:n]))
        return prices, list(map(self.sizes.__getitem__, prices))

    def top_into(self, n: int, prices: bytearray, sizes: bytearray) -> int:
        """Append the best ``n`` levels to ``prices`` and ``sizes`` as C doubles; how many."""
        best_prices, best_sizes = self.top(n)
        prices += array("d", best_prices)
        sizes += array("d", best_sizes)
        return len(best_prices)

    def best(self) -> float | None:
        return self.sign * self.keys[0] if self.keys else None

    def levels(self) -> dict[float, float]:
        """Every level, price -> size."""
        return dict(self.sizes)


def py_apply_top(bids: PySide, asks: PySide, bid_levels: Iterable[Sequence], ask_levels: Iterable[Sequence],
                 depth: int, bid_px: bytearray, bid_sz: bytearray, ask_px: bytearray, ask_sz: bytearray) -> bool:
    """Apply a diff to both sides, then append the best ``depth`` levels of each to the four columns (as
    ``top_into``); False, and nothing appended, when the book is then crossed (best bid >= best ask).

    One call per book row on the hot path: ``apply_top`` is the compiled one when ``Side`` is."""
    bids.apply(bid_levels)
    asks.apply(ask_levels)
    bid, ask = bids.best(), asks.best()
    if bid is not None and ask is not None and bid >= ask:
        return False
    bids.top_into(depth, bid_px, bid_sz)
    asks.top_into(depth, ask_px, ask_sz)
    return True


Side: type = PySide
apply_top = py_apply_top
if not os.environ.get("TICKARCHIVE_PURE_PYTHON_BOOK"):
    try:
        from actors.feed._book import Side, apply_top
    except ImportError:                    # built without a C compiler (or an older build): the same in Python
        Side, apply_top = PySide, py_apply_top


class OrderBook:
    """Absolute-size price levels; size 0 removes a level (removing a missing level is fine)."""

    def __init__(self, side_type: type | None = None) -> None:
        side_type = side_type or Side
        self.bids = side_type(-1)
        self.asks = side_type(1)

    def apply(self, side: str, price: float, size: float) -> None:
        (self.bids if side == BID else self.asks).set(price, size)

    def apply_levels(self, bids: Iterable[Sequence], asks: Iterable[Sequence]) -> None:
        """Apply ``[[price, size], ...]`` levels (strings or numbers) to both sides."""
        self.bids.apply(bids)
        self.asks.apply(asks)

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def load_snapshot(self, bids: Iterable[Sequence], asks: Iterable[Sequence]) -> None:
        """Replace the book with these levels."""
        self.clear()
        self.apply_levels(bids, asks)

    def top(self, n: int) -> tuple[list[float], list[float], list[float], list[float]]:
        """``(bid_px, bid_sz, ask_px, ask_sz)`` of the best ``n`` levels, best first."""
        bid_px, bid_sz = self.bids.top(n)
        ask_px, ask_sz = self.asks.top(n)
        return bid_px, bid_sz, ask_px, ask_sz

    def best_bid(self) -> float | None:
        return self.bids.best()

    def best_ask(self) -> float | None:
        return self.asks.best()

    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (an impossible book)."""
        bid, ask = self.bids.best(), self.asks.best()
        return bid is not None and ask is not None and bid >= ask

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)
