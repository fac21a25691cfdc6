"""A price-level order book for one symbol (venue-neutral; no Ray, no I/O).

Each side keeps every level in a dict (price -> size) and, sorted, only the best levels: a
*window* of the best ``window`` to ``4 * window`` prices, holding every level better than or
equal to its worst price (``limit``). Real diffs mostly touch levels deep in the book (a
Binance depth diff carries ~70 levels of a 1000-level book); those cost one dict operation and
one comparison, and only levels inside the window are inserted into or removed from the sorted
list. When deletions leave it shorter than ``window``, it is rebuilt from the dict (the best
``2 * window``, sorted in C); when insertions grow it past ``4 * window``, it is cut back. The top N levels are a slice
of the window.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from operator import neg
from typing import Iterable, Sequence

BID, ASK = "bid", "ask"
WINDOW = 128
INF = float("inf")


class _Side:
    """One side. Keys ascending: asks by price, bids by negated price (best first)."""

    __slots__ = ("sign", "sizes", "keys", "limit", "window")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.sizes: dict[float, float] = {}
        self.keys: list[float] = []        # sorted keys of every level with key <= limit
        self.limit = INF                   # INF: the window holds every level
        self.window = WINDOW

    def set(self, price: float, size: float) -> None:
        self.apply([(price, size)])

    def apply(self, levels: Iterable[Sequence]) -> None:
        """Set ``[[price, size], ...]`` levels (strings or numbers); size 0 removes a level."""
        sizes, keys, limit, sign = self.sizes, self.keys, self.limit, self.sign
        for level in levels:
            price = float(level[0])
            size = float(level[1])
            if size:
                if price not in sizes:
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

    def best(self) -> float | None:
        return self.sign * self.keys[0] if self.keys else None


class OrderBook:
    """Absolute-size price levels; size 0 removes a level (removing a missing level is fine)."""

    def __init__(self) -> None:
        self.bids = _Side(-1)
        self.asks = _Side(1)

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
        bids, asks = self.bids.keys, self.asks.keys
        return bool(bids and asks) and -bids[0] >= asks[0]

    def __len__(self) -> int:
        return len(self.bids.sizes) + len(self.asks.sizes)
