"""The README's "Query the archive" snippets, run as written on an archive the writers sealed.

Each answer is checked against the rows the writers were handed (tests/mixed_archive.py: four
venues, after mode=migrate), computed here in plain Python.
"""
from __future__ import annotations

import bisect
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import mixed_archive
from actors.storage.catalog import Catalog, as_ns_ints
from actors.storage.migrate import migrate

README = Path(__file__).resolve().parents[2] / "README.md"
MINUTE_NS, HOUR_NS = 60 * 10**9, 3600 * 10**9


def snippets() -> list[str]:
    """The python blocks of the README section "Query the archive", in order."""
    text = README.read_text()
    section = text[text.index("## Query the archive"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    truth = mixed_archive.build(root)
    migrate(root, Catalog(str(root)))
    blocks = snippets()
    assert len(blocks) == 3 and 'ROOT = "/tmp/tickarchive-demo"' in blocks[0]
    namespace: dict = {}
    for block in blocks:
        exec(compile(block.replace('"/tmp/tickarchive-demo"', repr(str(root))), "README.md", "exec"), namespace)
    return namespace, {ch: as_ns_ints(table).to_pylist() for ch, table in truth.items()}


def test_trades_per_venue_per_minute(answers):
    namespace, truth = answers
    want = Counter((row["exchange"], row["ts_local"] // MINUTE_NS * MINUTE_NS) for row in truth["trades"])
    got = {(exchange, int(minute.timestamp()) * 10**9): n for exchange, minute, n in namespace["per_minute"]}
    assert got == dict(want) and len(got) > len(mixed_archive.VENUES)


def test_vwap_per_symbol_per_hour(answers):
    namespace, truth = answers
    sums: dict = defaultdict(lambda: [0.0, 0.0, 0])
    for row in truth["trades"]:
        acc = sums[(row["exchange"], row["symbol"], row["ts_local"] // HOUR_NS * HOUR_NS)]
        acc[0] += row["price"] * row["size"]
        acc[1] += row["size"]
        acc[2] += 1
    frame = namespace["vwap"]
    got = {(e, s, h.timestamp() * 10**9): (v, n) for e, s, h, v, n in frame.iter_rows()}
    assert set(got) == {(e, s, float(h)) for e, s, h in sums}
    for (e, s, h), (value, n) in got.items():
        pv, volume, count = sums[(e, s, int(h))]
        assert n == count and value == pytest.approx(pv / volume, rel=1e-12)


def test_trades_as_of_the_best_bid_and_ask(answers):
    namespace, truth = answers
    books: dict = defaultdict(list)
    for row in truth["l2book"]:
        books[(row["exchange"], row["symbol"])].append((row["ts_local"], row["bid_px"][0], row["ask_px"][0]))
    for rows in books.values():
        rows.sort()
    frame = namespace["quoted"]
    assert frame.height == len(truth["trades"])
    seen_quotes = 0
    by_id = {(row["exchange"], row["trade_id"]): row for row in truth["trades"]}
    for exchange, symbol, ts, trade_id, price, side, bid, ask in frame.iter_rows():
        trade = by_id[(exchange, trade_id)]
        assert (price, side) == (trade["price"], trade["side"])
        rows = books[(exchange, symbol)]
        at = bisect.bisect_right([r[0] for r in rows], trade["ts_local"]) - 1
        assert (bid, ask) == ((rows[at][1], rows[at][2]) if at >= 0 else (None, None))
        seen_quotes += at >= 0
    assert seen_quotes > len(truth["trades"]) // 2
