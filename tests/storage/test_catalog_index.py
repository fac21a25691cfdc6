"""The in-memory catalog index answers exactly what the LanceDB query answers."""
from __future__ import annotations

import random

from actors.storage.catalog import Catalog, IndexedCatalog, as_ns_ints
from actors.storage.layout import HOUR_NS, NS, StreamKey, parse_relpath

T0 = 1_735_689_600 * NS


def record(symbol: str, channel: str, start: int, span: int = HOUR_NS, rows: int = 10) -> dict:
    stream = StreamKey("binance", "perp", channel, symbol, 20 if channel == "l2book" else None)
    rel = stream.relpath(start, span)
    parsed = parse_relpath(rel)
    return {"key": rel, "exchange": "binance", "market": "perp", "channel": channel, "symbol": symbol,
            "depth": stream.depth, "period_start": parsed.period_start_ns, "period_end": start + span,
            "ts_local_min": start, "ts_local_max": start + span - 1, "rows": rows, "bytes": 100,
            "sha256": "0" * 64, "node": "n1", "sealed_at": start + span, "local": True}


def keys(table) -> list[str]:
    return as_ns_ints(table).column("key").to_pylist()


def test_index_lookups_equal_lancedb_queries_after_updates_and_reopen(tmp_path):
    rng = random.Random(3)
    indexed = IndexedCatalog(tmp_path)
    first = [record(s, c, T0 + h * HOUR_NS) for s in ("AUSDT", "BUSDT") for c in ("l2book", "trades")
             for h in range(48)]
    first += [record("AUSDT", "trades", T0 + 50 * HOUR_NS + m * 600 * NS, span=600 * NS) for m in range(6)]
    indexed.upsert(first)
    changed = [dict(r, rows=99) for r in rng.sample(first, 20)]           # replaced by key, not added
    indexed.upsert(changed + [record("CUSDT", "trades", T0)])
    indexed.mark_backed_up({first[0]["key"]: ("f" * 64, "etag")}, T0)
    reopened = IndexedCatalog(tmp_path)                                    # index rebuilt from LanceDB
    plain = Catalog(tmp_path)
    assert plain.count() == len(first) + 1 == reopened.index.rows == indexed.index.rows
    for _ in range(60):
        sym, ch = rng.choice(["AUSDT", "BUSDT", "CUSDT", "ZUSDT"]), rng.choice(["l2book", "trades"])
        start = T0 + rng.randrange(-3, 55) * HOUR_NS + rng.randrange(0, 3600) * NS
        end = start + rng.choice([1, 600, 3600, 30 * 86400]) * NS
        want = plain.lookup("binance", sym, ch, start, end, depth=20)
        assert keys(indexed.lookup("binance", sym, ch, start, end, depth=20)) == keys(want)
        assert keys(reopened.lookup("binance", sym, ch, start, end, depth=20)) == keys(want)
    got = as_ns_ints(reopened.lookup("binance", first[0]["symbol"], first[0]["channel"], T0, T0 + 1)).to_pylist()
    assert got[0]["backup_sha256"] == "f" * 64
    assert {r["key"]: r["rows"] for r in as_ns_ints(plain.all()).to_pylist()}[changed[0]["key"]] == 99
