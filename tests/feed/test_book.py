"""The order book against a naive reference (every level in a dict, sorted on every read)."""
from __future__ import annotations

import random

from actors.feed.book import WINDOW, OrderBook


class NaiveBook:
    def __init__(self) -> None:
        self.sides = {"b": {}, "a": {}}

    def apply(self, side: str, levels) -> None:
        for px, sz in levels:
            if float(sz) == 0.0:
                self.sides[side].pop(float(px), None)
            else:
                self.sides[side][float(px)] = float(sz)

    def top(self, n: int):
        bids = sorted(self.sides["b"], reverse=True)[:n]
        asks = sorted(self.sides["a"])[:n]
        return bids, [self.sides["b"][p] for p in bids], asks, [self.sides["a"][p] for p in asks]


def test_random_diffs_match_the_reference():
    """Diffs deep in the book, sweeps that empty the window (rebuilds), snapshots, wide reads."""
    rng = random.Random(3)
    book, ref = OrderBook(), NaiveBook()
    for step in range(3000):
        mid = 1000 + rng.randint(-30, 30)
        if step % 500 == 0:              # a fresh snapshot: 1000 levels a side
            bids = [[f"{mid - 1 - i * 0.1:.1f}", f"{rng.random():.3f}"] for i in range(1000)]
            asks = [[f"{mid + i * 0.1:.1f}", f"{rng.random():.3f}"] for i in range(1000)]
            book.load_snapshot(bids, asks)
            ref = NaiveBook()
            ref.apply("b", bids)
            ref.apply("a", asks)
        else:
            for side, sign in (("b", -1), ("a", 1)):
                levels = []
                for _ in range(rng.randint(0, 80)):
                    offset = rng.choice([rng.randint(0, 30), rng.randint(0, 1500)]) * 0.1
                    price = f"{mid + sign * (offset + (1 if side == 'b' else 0)):.1f}"
                    levels.append([price, "0.000" if rng.random() < 0.45 else f"{rng.random():.3f}"])
                if step % 97 == 0:       # a sweep: the best 150 levels removed
                    best = ref.top(150)[0 if side == "b" else 2]
                    levels += [[f"{p:.1f}", "0"] for p in best]
                book_side = book.bids if side == "b" else book.asks
                book_side.apply(levels)
                ref.apply(side, levels)
        n = 200 if step % 250 == 0 else 20
        assert book.top(n) == ref.top(n), f"step {step}"
        assert len(book) == len(ref.sides["b"]) + len(ref.sides["a"])
    assert book.bids.window >= WINDOW and book.bids.limit != float("inf")
