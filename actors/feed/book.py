"""A price-level order book for one symbol (venue-neutral; no Ray, no I/O).

Levels are kept in a dict (price -> size) per side plus a sorted price list maintained with
``bisect``, so applying a level is O(log n) to find and a short memmove to insert or remove,
and the top N levels are a slice.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from typing import Iterable, Sequence

BID, ASK = "bid", "ask"


class _Side:
    """One side: ``keys`` ascending; for bids the keys are negated prices (best first)."""

    __slots__ = ("sign", "sizes", "keys")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.sizes: dict[float, float] = {}
        self.keys: list[float] = []

    def set(self, price: float, size: float) -> None:
        if size == 0.0:
            if self.sizes.pop(price, None) is not None:
                key = self.sign * price
                i = bisect_left(self.keys, key)
                if i < len(self.keys) and self.keys[i] == key:
                    del self.keys[i]
            return
        if price not in self.sizes:
            insort(self.keys, self.sign * price)
        self.sizes[price] = size

    def clear(self) -> None:
        self.sizes.clear()
        self.keys.clear()

    def top(self, n: int) -> tuple[list[float], list[float]]:
        prices = [self.sign * k for k in self.keys[:n]]
        return prices, [self.sizes[p] for p in prices]

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
        for price, size, *_ in bids:
            self.bids.set(float(price), float(size))
        for price, size, *_ in asks:
            self.asks.set(float(price), float(size))

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
        bid, ask = self.best_bid(), self.best_ask()
        return bid is not None and ask is not None and bid >= ask

    def __len__(self) -> int:
        return len(self.bids.sizes) + len(self.asks.sizes)
