"""A synthetic limit order book with known truth (venue-neutral; used by every simulator).

Prices are integer ticks and sizes integer lots, rendered as fixed-decimal strings; the
truth a test compares against is the floats parsed from exactly those strings, so a correct
client rebuilds bit-identical books. Every :meth:`SyntheticMarket.step` is either a set of
level changes (a depth diff) or a trade that consumes the opposite best level (a trade plus
the level change it causes). Deterministic for a given seed.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

from actors.feed.book import ASK, BID, OrderBook


@dataclass(frozen=True)
class LevelChange:
    side: str          # "bid" | "ask"
    price: str         # venue-formatted
    size: str          # "0.000" removes the level


@dataclass(frozen=True)
class SimTrade:
    trade_id: int
    price: float
    size: float
    side: int          # +1 taker buy, -1 taker sell
    price_str: str
    size_str: str
    sent_ns: int = 0   # when the simulator sent it (set in the truth record)
    exchange_ms: int = 0   # the venue time it carried (set in the truth record)


@dataclass
class Step:
    """What one market step changed."""

    changes: list[LevelChange] = field(default_factory=list)
    trade: SimTrade | None = None

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        """The changed levels as ``[[price, size], ...]`` per side (bids, asks)."""
        return ([[c.price, c.size] for c in self.changes if c.side == BID],
                [[c.price, c.size] for c in self.changes if c.side == ASK])


class SyntheticMarket:
    """Random-walk book around a mid price (see module docstring)."""

    def __init__(self, symbol: str, seed: int = 7, levels: int = 200, tick_decimals: int = 1,
                 size_decimals: int = 3, trade_probability: float = 0.3) -> None:
        self.symbol = symbol
        self.rng = random.Random((seed * 1_000_003) ^ zlib.crc32(symbol.encode()))
        self.px_dec, self.sz_dec = tick_decimals, size_decimals
        self.levels = levels
        self.trade_probability = trade_probability
        self.bids: dict[int, int] = {}          # ticks -> lots
        self.asks: dict[int, int] = {}
        self.book = OrderBook()                 # truth, in parsed floats
        self.next_trade_id = 1_000_000 + self.rng.randrange(1_000_000)
        mid = int(10 ** (tick_decimals + 2 + self.rng.randrange(3)) * (1 + self.rng.random()))
        for k in range(1, levels + 1):
            self._set(BID, mid - k, self.rng.randint(1, 5000))
            self._set(ASK, mid + k, self.rng.randint(1, 5000))

    # -- formatting ----------------------------------------------------------------------
    def px(self, ticks: int) -> str:
        return f"{ticks / 10 ** self.px_dec:.{self.px_dec}f}"

    def sz(self, lots: int) -> str:
        return f"{lots / 10 ** self.sz_dec:.{self.sz_dec}f}"

    def _set(self, side: str, ticks: int, lots: int) -> LevelChange:
        levels = self.bids if side == BID else self.asks
        if lots <= 0:
            levels.pop(ticks, None)
            lots = 0
        else:
            levels[ticks] = lots
        change = LevelChange(side, self.px(ticks), self.sz(lots))
        self.book.apply(side, float(change.price), float(change.size))
        return change

    def best(self, side: str) -> int:
        return max(self.bids) if side == BID else min(self.asks)

    # -- evolution -----------------------------------------------------------------------
    def step(self) -> Step:
        """One market event: a trade (with its level change) or a few level changes."""
        rng = self.rng
        if rng.random() < self.trade_probability:
            return self._trade()
        step = Step()
        for _ in range(rng.randint(1, 3)):
            side = BID if rng.random() < 0.5 else ASK
            best_bid, best_ask = self.best(BID), self.best(ASK)
            distance = min(int(rng.expovariate(0.25)), self.levels - 1)
            if side == BID:
                ticks = best_bid - distance if rng.random() < 0.9 or best_ask - best_bid <= 1 else best_bid + 1
            else:
                ticks = best_ask + distance if rng.random() < 0.9 or best_ask - best_bid <= 1 else best_ask - 1
            levels = self.bids if side == BID else self.asks
            remove = ticks in levels and rng.random() < 0.3 and len(levels) > self.levels // 2
            step.changes.append(self._set(side, ticks, 0 if remove else rng.randint(1, 5000)))
        self._refill(step)
        return step

    def _trade(self) -> Step:
        rng = self.rng
        taker = 1 if rng.random() < 0.5 else -1
        side = ASK if taker == 1 else BID
        levels = self.asks if side == ASK else self.bids
        ticks = self.best(side)
        lots = min(levels[ticks], rng.randint(1, 800))
        self.next_trade_id += 1
        trade = SimTrade(self.next_trade_id, float(self.px(ticks)), float(self.sz(lots)), taker,
                         self.px(ticks), self.sz(lots))
        step = Step(trade=trade)
        step.changes.append(self._set(side, ticks, levels[ticks] - lots))
        self._refill(step)
        return step

    def _refill(self, step: Step) -> None:
        """Keep both sides non-empty and about ``levels`` deep."""
        for side, levels in ((BID, self.bids), (ASK, self.asks)):
            while len(levels) < self.levels // 2 or not levels:
                if side == BID:
                    ticks = (min(levels) if levels else self.best(ASK)) - 1
                else:
                    ticks = (max(levels) if levels else self.best(BID)) + 1
                step.changes.append(self._set(side, ticks, self.rng.randint(1, 5000)))

    def snapshot(self, limit: int) -> tuple[list[list[str]], list[list[str]]]:
        """Top ``limit`` levels per side as venue strings (bids descending, asks ascending)."""
        bids = sorted(self.bids, reverse=True)[:limit]
        asks = sorted(self.asks)[:limit]
        return ([[self.px(t), self.sz(self.bids[t])] for t in bids],
                [[self.px(t), self.sz(self.asks[t])] for t in asks])

    def top(self, depth: int) -> tuple[list[float], list[float], list[float], list[float]]:
        """The true top-``depth`` book as a correct client rebuilds it."""
        return self.book.top(depth)


@dataclass(frozen=True)
class SimLiquidation:
    side: int          # the liquidation order's side: +1 buy (a short was liquidated)
    price: float
    size: float
    price_str: str
    size_str: str


class SimDerivatives:
    """Mark/index price, funding and open interest of one simulated perp (its own random stream, so
    the book's sequence does not depend on whether these are published). Values are decimal strings;
    the truth is the floats parsed from them."""

    FIELDS = ("mark_price", "index_price", "funding_rate", "predicted_funding_rate", "next_funding_time",
              "open_interest", "last_price")

    def __init__(self, market: SyntheticMarket) -> None:
        self.market = market
        self.rng = random.Random(market.next_trade_id * 7919 + 17)    # not drawn from the book's stream
        mid = market.px((market.best(BID) + market.best(ASK)) // 2)
        self.values: dict[str, str] = {"mark_price": mid, "index_price": mid, "funding_rate": "0.00010000",
                                       "predicted_funding_rate": "0.00010000", "next_funding_time": "1786320000000",
                                       "open_interest": "50000.000", "last_price": mid}

    def step(self) -> dict[str, str]:
        """Move the values; the ones that changed (the mark price always does)."""
        rng, m = self.rng, self.market
        mid = (m.best(BID) + m.best(ASK)) // 2
        changed = {"mark_price": m.px(mid + rng.randint(1, 3) * (1 if rng.random() < 0.5 else -1))}
        if changed["mark_price"] == self.values["mark_price"]:
            changed["mark_price"] = m.px(mid + 5)
        if rng.random() < 0.5:
            changed["index_price"] = m.px(mid + rng.randint(-3, 3))
        if rng.random() < 0.2:
            changed["funding_rate"] = f"{rng.randint(-300, 300) / 1e6:.8f}"
            changed["predicted_funding_rate"] = f"{rng.randint(-300, 300) / 1e6:.8f}"
        if rng.random() < 0.3:
            changed["open_interest"] = f"{float(self.values['open_interest']) + rng.randint(-500, 500) / 1e3:.3f}"
        if rng.random() < 0.3:
            changed["last_price"] = m.px(m.best(BID) if rng.random() < 0.5 else m.best(ASK))
        if rng.random() < 0.02:
            changed["next_funding_time"] = str(int(self.values["next_funding_time"]) + 8 * 3600 * 1000)
        self.values.update(changed)
        return changed

    def floats(self, names: tuple[str, ...] = FIELDS) -> tuple:
        """The values as a client parses them (next funding time in ns)."""
        return tuple(int(self.values[n]) * 1_000_000 if n == "next_funding_time" else float(self.values[n])
                     for n in names)

    def liquidation(self) -> SimLiquidation:
        m, rng = self.market, self.rng
        side = 1 if rng.random() < 0.5 else -1
        price, size = m.px(m.best(ASK) + rng.randint(0, 5) if side > 0 else m.best(BID) - rng.randint(0, 5)), \
            m.sz(rng.randint(1, 2000))
        return SimLiquidation(side, float(price), float(size), price, size)


@dataclass
class Truth:
    """What a simulator actually sent for one symbol (``record_truth``).

    ``books`` holds the current epoch: a venue restart (its sequence starts again, so update ids
    may repeat) moves it to ``epochs`` and starts an empty one (:meth:`new_epoch`).
    """

    trades: list[SimTrade] = field(default_factory=list)
    books: dict[int, tuple] = field(default_factory=dict)   # update id -> (bid_px, bid_sz, ask_px, ask_sz)
    derivatives: list[tuple] = field(default_factory=list)  # every value (SimDerivatives.FIELDS) after each push
    liquidations: list[SimLiquidation] = field(default_factory=list)   # each one that reached a subscriber
    open_interest_served: set = field(default_factory=set)  # values a REST poll answered (Binance)
    epoch_start_ns: int = 0
    epochs: list[tuple[int, dict[int, tuple]]] = field(default_factory=list)   # earlier (start_ns, books)

    def new_epoch(self, start_ns: int) -> None:
        """The venue's sequence restarted at ``start_ns``."""
        self.epochs.append((self.epoch_start_ns, self.books))
        self.books, self.epoch_start_ns = {}, start_ns

    def all_epochs(self) -> list[tuple[int, dict[int, tuple]]]:
        """Every epoch as ``(start_ns, books)``, oldest first (the current one last)."""
        return [*self.epochs, (self.epoch_start_ns, self.books)]


class SimSymbol:
    """One simulated symbol: its market, the venue's sequence state and the ground truth."""

    def __init__(self, symbol: str, seed: int) -> None:
        self.symbol = symbol
        self.low = symbol.lower()
        self.market = SyntheticMarket(symbol, seed)
        self.last_u = 0
        self.truth = Truth()
        self.derivatives = SimDerivatives(self.market)
        self.steps = 0
        self.skip_next_diff = False
        self.state: dict = {}            # venue-specific (e.g. the last published view)
