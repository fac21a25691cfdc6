"""The order book against a naive reference (every level in a dict, sorted on every read).

Both sides are checked: the compiled one (``actors/feed/_book.c``) and the pure-Python one it
falls back to; they must give the same results level for level.
"""
from __future__ import annotations

import math
import random

import pytest

from actors.feed import book as book_module
from actors.feed.book import WINDOW, OrderBook, PySide

try:
    from actors.feed._book import Side as CSide
except ImportError:                      # reported by test_the_compiled_side_is_built
    CSide = None

SIDES = [pytest.param(PySide, id="python"), pytest.param(CSide, id="compiled")]


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


def test_the_compiled_side_is_built():
    """``pip install -e .`` compiles it (gcc and the Python headers are on every CI machine)."""
    assert CSide is not None, "actors/feed/_book.c was not built: pip install -e . with a C compiler"
    assert book_module.Side is CSide


@pytest.mark.parametrize("side_type", SIDES)
def test_random_diffs_match_the_reference(side_type):
    """Diffs deep in the book, sweeps that empty the window (rebuilds), snapshots, wide reads."""
    rng = random.Random(3)
    book, ref = OrderBook(side_type), NaiveBook()
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


@pytest.mark.parametrize("side_type", SIDES)
@pytest.mark.parametrize("window", [1, 2, 5])
def test_tiny_windows_cut_and_rebuild_correctly(side_type, window):
    """A window of a few levels is cut and rebuilt all the time; every read still matches."""
    rng = random.Random(window)
    side, ref = side_type(1, window), {}
    for step in range(4000):
        levels = [(float(rng.randint(1, 300)), 0.0 if rng.random() < 0.5 else float(rng.randint(1, 9)))
                  for _ in range(rng.randint(1, 12))]
        side.apply(levels)
        for price, size in levels:
            if size:
                ref[price] = size
            else:
                ref.pop(price, None)
        n = rng.choice([1, 3, window, 4 * window + 1])
        best = sorted(ref)[:n]
        assert side.top(n) == (best, [ref[p] for p in best]), f"step {step}"
        assert side.best() == (best[0] if best else None)
        assert len(side) == len(ref)
    assert side.levels() == ref


@pytest.mark.parametrize("side_type", SIDES)
def test_bids_are_best_first_and_clear_empties(side_type):
    bids = side_type(-1)
    bids.apply([("100.5", "1"), ["101", "2"], [99, 3], ("101", "0"), ("102", "0")])
    assert bids.top(5) == ([100.5, 99.0], [1.0, 3.0])
    bids.set(105.0, 0.5)
    assert bids.best() == 105.0 and len(bids) == 3
    bids.clear()
    assert bids.top(5) == ([], []) and bids.best() is None and len(bids) == 0


@pytest.mark.parametrize("side_type", SIDES)
def test_numbers_are_read_as_float_reads_them(side_type):
    """Strings, ints, underscores and spaces convert exactly as ``float()`` does; -0.0 is 0.0."""
    side = side_type(1)
    side.apply([(" 65000.10 ", "1_000"), (65000.2, 3), ["0.1", "1e-8"], ("-0.0", "2"), ("0.0", "5")])
    assert side.levels() == {65000.1: 1000.0, 65000.2: 3.0, 0.1: 1e-8, 0.0: 5.0}
    assert side.top(2) == ([0.0, 0.1], [5.0, 1e-8])


@pytest.mark.parametrize("side_type", SIDES)
def test_bad_levels_raise_and_the_side_stays_usable(side_type):
    """Unparsable or non-finite prices raise ValueError (what a venue client turns into an
    ``error`` event); the levels before the bad one are set, the side keeps working."""
    side = side_type(1)
    with pytest.raises(ValueError):
        side.apply([("1.5", "1"), ("abc", "1"), ("2.5", "1")])
    with pytest.raises(ValueError):
        side.apply([("nan", "1")])
    with pytest.raises(ValueError):
        side.apply([("inf", "1")])
    with pytest.raises((TypeError, IndexError)):
        side.apply([("3.5",)])
    side.apply([("nan", "0"), ("2.0", "4")])        # removing a level that cannot exist is fine
    assert side.levels() == {1.5: 1.0, 2.0: 4.0}
    assert side.top(5) == ([1.5, 2.0], [1.0, 4.0])
    assert not any(math.isnan(p) for p in side.levels())


def test_both_sides_agree_on_a_real_binance_day():
    """The real recording's diffs through both sides: the same top 20 after every diff."""
    from bench.recorded import depth_diffs

    snapshot, diffs = depth_diffs()
    assert len(diffs) > 6000
    compiled, python = OrderBook(CSide), OrderBook(PySide)
    for book in (compiled, python):
        book.load_snapshot(snapshot["bids"], snapshot["asks"])
    for bids, asks in diffs:
        compiled.apply_levels(bids, asks)
        python.apply_levels(bids, asks)
        assert compiled.top(20) == python.top(20)
    assert len(compiled) == len(python) > 2000


@pytest.mark.parametrize("side_type", SIDES)
def test_decimal_strings_convert_exactly_as_float_does(side_type):
    """Venue prices and sizes as decimal strings (up to 19 digits, any number of decimals, signs,
    leading zeros, exponents): every one becomes the very double ``float()`` makes of it."""
    rng = random.Random(11)
    texts = []
    for _ in range(20000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 19)))
        point = rng.randint(0, len(digits))
        text = digits[:point] + "." + digits[point:] if rng.random() < 0.8 else digits
        if rng.random() < 0.1:
            text += f"e{rng.randint(-12, 12)}"
        texts.append(("-" if rng.random() < 0.2 else "") + text)
    texts += ["0.1", "0.3", "65000.10", "1.", ".5", "-.5", "000000000000001.25", "9007199254740993",
              "0.000000000000000000001", "123456789012345.6"]
    side = side_type(1)
    side.apply([(str(i), text) for i, text in enumerate(texts) if float(text)])
    expected = {float(i): float(text) for i, text in enumerate(texts) if float(text)}
    assert side.levels() == expected


def test_apply_top_equals_apply_then_top_and_refuses_a_crossed_book():
    """``apply_top`` (one call per book row) against the naive book: the same levels appended, a
    crossed book appends nothing and says so, bad levels raise and append nothing; the compiled
    one and the pure-Python one agree on every step."""
    from array import array

    from actors.feed._book import apply_top as c_apply_top
    from actors.feed.book import py_apply_top

    rng = random.Random(24)
    for side_type, apply_top in ((CSide, c_apply_top), (PySide, py_apply_top)):
        book, ref = OrderBook(side_type), NaiveBook()
        bids = [[f"{999 - i * 0.5:.1f}", "1.000"] for i in range(300)]
        asks = [[f"{1000 + i * 0.5:.1f}", "1.000"] for i in range(300)]
        book.load_snapshot(bids, asks)
        ref.apply("b", bids)
        ref.apply("a", asks)
        columns = tuple(bytearray() for _ in range(4))
        crossed = 0
        for step in range(2000):
            diff = {side: [[f"{(999 - rng.randrange(60) * 0.5) if side == 'b' else (1000 + rng.randrange(60) * 0.5):.1f}",
                            "0" if rng.random() < 0.3 else f"{rng.random():.3f}"] for _ in range(2)]
                    for side in ("b", "a")}
            if step % 101 == 0:          # a bid at or above the best ask: crossed
                diff["b"].append([f"{min(ref.sides['a'], default=1000.0):.1f}", "1"])
            before = [bytes(c) for c in columns]
            ok = apply_top(book.bids, book.asks, diff["b"], diff["a"], 20, *columns)
            ref.apply("b", diff["b"])
            ref.apply("a", diff["a"])
            best_bid, best_ask = max(ref.sides["b"]), min(ref.sides["a"])
            assert ok == (best_bid < best_ask), f"step {step}"
            if not ok:
                crossed += 1
                assert [bytes(c) for c in columns] == before       # nothing appended
                book.clear()
                book.load_snapshot(bids, asks)
                ref = NaiveBook()
                ref.apply("b", bids)
                ref.apply("a", asks)
                continue
            added = [list(array("d", bytes(c)[len(b):])) for c, b in zip(columns, before)]
            assert tuple(added) == ref.top(20), f"step {step}"
        assert crossed == 20
        size = [len(c) for c in columns]
        with pytest.raises(ValueError):
            apply_top(book.bids, book.asks, [["1", "x"]], [], 20, *columns)
        assert [len(c) for c in columns] == size
