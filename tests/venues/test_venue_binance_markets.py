"""Binance COIN-M and spot: the real 2021 captures replayed over loopback through our clients (ground
truth: the venue's own bookTicker and the recorded trades), their simulators, and the market
routing of symbols (layout folder, protocol, endpoints)."""
from __future__ import annotations

from collections import Counter

import orjson
import pytest

from actors.errors import ConfigError
from actors.venues import get_venue
from actors.venues.base import Endpoints
from actors.venues.sim.recordings import read_recording
from conftest import FIXTURES
from venue_harness import CHANNELS, Harness, check_sim_truth

binance = get_venue("binance")

COINM = FIXTURES / "binance-cm" / "BINANCE_DELIVERY_2021.jsonl.zst"
SPOT = FIXTURES / "binance-spot" / "BINANCE_SPOT_2021.jsonl.zst"


def recorded_truth(path):
    """Per wire symbol: bookTicker (best bid, best ask) by update id, and the recorded trade ids."""
    tickers, trades = {}, Counter()
    for rec in read_recording(path):
        if rec.kind != "recv" or not rec.payload.startswith('{"stream":"'):
            continue
        msg = orjson.loads(rec.payload)
        d = msg["data"]
        if msg["stream"].endswith("@bookTicker"):
            tickers.setdefault(d["s"], {})[d["u"]] = (float(d["b"]), float(d["a"]))
        elif msg["stream"].endswith(("@aggTrade", "@trade")):
            trades[(d["s"], str(d.get("a", d.get("t"))), float(d["p"]), float(d["q"]), -1 if d["m"] else 1)] += 1
    return tickers, trades


def replay(path, symbols):
    settings = binance.replay_settings(binance.settings({}), str(path))
    server = binance.make_replay_server(str(path), 0, symbols)
    return Harness(binance, server, symbols, settings=settings, depth=20, replay_clock=True).run(
        until=server.finished.is_set, timeout_s=120)


def check_books_and_trades(sink, path, symbols):
    """Every recorded trade once; every book row at a bookTicker's id has its best bid and ask; no gap."""
    tickers, trades = recorded_truth(path)
    wire = {s: s.split("/")[-1] for s in symbols}
    got = Counter((wire[t[0]], t[3], t[4], t[5], t[6]) for t in sink.trades)
    assert got == Counter({k: 1 for k in trades if k[0] in wire.values()}) and got
    matched = {}
    for row in sink.books:
        truth = tickers.get(wire[row[0]], {}).get(row[3])
        if truth is not None:
            assert (row[4][0], row[6][0]) == truth, f"{row[0]}: book differs from bookTicker at u={row[3]}"
            matched[row[0]] = matched.get(row[0], 0) + 1
    assert not [e for e in sink.events if e[3] in ("gap", "stale", "crossed", "error")]
    for sym in symbols:
        assert [e[3] for e in sink.events if e[0] == sym].count("snapshot") == 1, sym
    return matched


def test_coinm_capture_replayed_books_equal_bookticker():
    symbols = sorted(binance.recording_symbols(str(COINM)))
    assert "BTCUSD_211231" not in symbols and "futures/BTCUSD_211231" in symbols and "XRPUSD_PERP" in symbols
    sink = replay(COINM, symbols)
    matched = check_books_and_trades(sink, COINM, symbols)
    assert set(matched) == set(symbols) and sum(matched.values()) == 212, matched
    assert len(sink.trades) == 51


def test_spot_capture_replayed_books_equal_bookticker():
    symbols = sorted(binance.recording_symbols(str(SPOT)))
    assert symbols == ["spot/BLZETH", "spot/LRCBTC", "spot/NKNUSDT", "spot/RUNEEUR"]
    sink = replay(SPOT, symbols)
    matched = check_books_and_trades(sink, SPOT, symbols)
    assert matched == {"spot/NKNUSDT": 19, "spot/LRCBTC": 6, "spot/BLZETH": 1}, matched
    assert {b[0] for b in sink.books} == set(symbols)


def test_spot_sync_rule_on_hand_built_diffs():
    """Spot: drop u <= lastUpdateId, bridge with U <= id+1 <= u, then U == last u + 1 (else a gap)."""
    settings = binance.settings({})
    plan, = binance.plan_connections(settings, Endpoints("ws://h", "http://h"), ["spot/BTCUSDT"], CHANNELS, 5)
    assert plan.url == "ws://h/spot/stream" and plan.names == {"BTCUSDT": "spot/BTCUSDT"}
    from actors.feed.records import ListSink
    sink = ListSink()
    client = binance.make_client(plan, settings, sink, 5)
    client.on_connect(0)

    def diff(first, last, bid):
        return orjson.dumps({"stream": "btcusdt@depth@100ms", "data": {
            "e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": first, "u": last, "b": [[bid, "1"]], "a": [["200", "1"]]}})

    fetch, = client.on_frame(diff(8, 10, "90"), 1)
    assert fetch.url == "http://h/spot/api/v3/depth?symbol=BTCUSDT&limit=1000"
    client.on_frame(diff(11, 12, "91"), 2)
    client.on_snapshot("BTCUSDT", b'{"lastUpdateId":10,"bids":[["80","1"]],"asks":[["200","2"]]}', 3)
    assert [b[3] for b in sink.books] == [12] and sink.books[0][4][0] == 91.0    # 8..10 dropped, 11..12 bridges
    client.on_frame(diff(13, 15, "92"), 4)
    assert [b[3] for b in sink.books] == [12, 15] and sink.books[0][0] == "spot/BTCUSDT"
    actions = client.on_frame(diff(17, 18, "93"), 5)                      # 16 is missing
    assert [e[3] for e in sink.events][-1] == "gap" and len(sink.books) == 2 and actions


@pytest.mark.parametrize("symbols", [["spot/BTCUSDT", "ETHUSD_PERP"], ["BTCUSDT", "spot/BTCUSDT", "futures/BTCUSD_250627"]])
def test_simulators_of_several_markets_on_one_port(symbols):
    """Spot, COIN-M and USD-M simulators behind one loopback port: every archived row equals its truth."""
    server = binance.make_sim_server(symbols, {"messages_per_s": 300, "record_truth": True, "seed": 5}, 10)
    harness = Harness(binance, server, symbols)
    sink = harness.run(until=lambda: all(len([b for b in harness.sink.books if b[0] == s]) >= 150 for s in symbols))
    check_sim_truth(sink, server, symbols)
    kinds = Counter(e[3] for e in sink.events)
    assert kinds["snapshot"] == len(symbols) and not kinds["gap"] and not kinds["error"]


def test_symbols_name_their_market():
    assert [binance.qualify(s) for s in ["BTCUSDT", "perp/BTCUSDT", "spot/BTCUSDT", "BTCUSD_PERP", "BTCUSD_250627",
                                         "BTCUSDT_250627"]] == \
        ["BTCUSDT", "BTCUSDT", "spot/BTCUSDT", "BTCUSD_PERP", "futures/BTCUSD_250627", "futures/BTCUSDT_250627"]
    assert [binance.protocol_of(s).protocol_key for s in ["BTCUSDT", "spot/BTCUSDT", "BTCUSD_PERP",
                                                          "futures/BTCUSD_250627", "futures/BTCUSDT_250627"]] == \
        ["", "spot", "coinm", "coinm", ""]
    with pytest.raises(ConfigError, match="dated"):
        binance.qualify("perp/BTCUSD_250627")
    live = binance.live_endpoints(binance.settings({}))
    plans = binance.plan_connections(binance.settings({}), live, ["BTCUSDT", "spot/BTCUSDT", "BTCUSD_PERP"],
                                     CHANNELS, 20)
    assert sorted(p.url for p in plans) == ["wss://dstream.binance.com/stream", "wss://fstream.binance.com/public/stream",
                                            "wss://stream.binance.com:9443/stream"]
    many = binance.settings({"max_streams_per_connection": 1024})     # USD-M allows 1024, COIN-M 200
    coinm = [f"C{i}USD_PERP" for i in range(150)]
    assert [len(p.subscriptions) for p in binance.plan_connections(many, live, coinm, CHANNELS, 20)] == [200, 100]
    with pytest.raises(ConfigError, match="depth: 5000"):
        binance.validate(binance.settings({}), ["BTCUSDT"], CHANNELS, 5000)
    binance.validate(binance.settings({"spot_snapshot_limit": 5000}), ["spot/BTCUSDT"], CHANNELS, 5000)


def test_snapshots_are_spent_from_the_weight_budget():
    """Spot limit 5000 weighs 250 of 6000 a minute: 24 snapshots in a minute, the 25th waits for the next."""
    from actors.feed.records import ListSink
    from actors.venues.base import FetchSnapshot

    settings = binance.settings({"spot_snapshot_limit": 5000, "max_streams_per_connection": 100})
    symbols = [f"spot/S{i}USDT" for i in range(30)]
    plan, = binance.plan_connections(settings, Endpoints("ws://h", "http://h"), symbols, ["l2book"], 20)
    client = binance.make_client(plan, settings, ListSink(), 20)

    def diffs(ts):
        fetched = []
        for i in range(30):
            frame = orjson.dumps({"stream": f"s{i}usdt@depth@100ms", "data": {
                "e": "depthUpdate", "E": 1, "s": f"S{i}USDT", "U": 1, "u": 2, "b": [], "a": []}})
            fetched += [a.symbol for a in client.on_frame(frame, ts) if isinstance(a, FetchSnapshot)]
        return fetched

    assert len(diffs(10**9)) == 24
    assert diffs(30 * 10**9) == []                         # still inside the minute
    assert len(diffs(61 * 10**9)) == 6                     # the rest, once the first minute's weight expired


def test_spot_in_hftbacktest_format(tmp_path):
    """The same spot traffic as an hftbacktest collector writes it (``<ns> <json>`` lines, the REST
    answer inline at the moment it was fetched, no URL): recognised as spot by its diffs (no ``pu``)."""
    import gzip

    lines = []
    for rec in read_recording(SPOT):
        if (rec.kind == "recv" and rec.payload.startswith('{"stream":"nknusdt@')) or \
                (rec.kind == "http" and "symbol=NKNUSDT" in rec.url):
            lines.append((rec.ts_local, rec.payload))
    path = tmp_path / "nknusdt_20211012.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(f"{ts} {payload}\n" for ts, payload in sorted(lines))
    assert binance.recording_matches(str(path)) and binance.recording_symbols(str(path)) == {"spot/NKNUSDT"}
    sink = replay(path, ["spot/NKNUSDT"])
    assert check_books_and_trades(sink, path, ["spot/NKNUSDT"]) == {"spot/NKNUSDT": 19}
