"""The ``derivatives`` and ``liquidations`` channels per venue: real frames where a recording holds them
(Bybit ``tickers``), the venues' documented frames otherwise, and the simulators end to end."""
from __future__ import annotations

import orjson

from actors.feed.records import DERIVATIVE_FIELDS, ListSink
from actors.venues import get_venue
from actors.venues.base import Endpoints, FetchSnapshot
from actors.venues.sim.recordings import read_recording
from conftest import FIXTURES

ALL = ["l2book", "trades", "derivatives", "liquidations"]
BYBIT_RECORDING = FIXTURES / "bybit" / "bybit_v5_linear_btc_eth_2026-08-10.jsonl.zst"
MARK, INDEX, FUNDING, PREDICTED, NEXT_FUNDING, OI, LAST = range(len(DERIVATIVE_FIELDS))


def client_for(venue_name, symbols, settings=None, depth=20):
    venue = get_venue(venue_name)
    settings = settings or venue.settings({})
    plans = venue.plan_connections(settings, Endpoints("ws://t", "http://t"), symbols, ALL, depth)
    sink = ListSink()
    clients = [venue.make_client(plan, settings, sink, depth) for plan in plans]
    for client in clients:
        client.on_connect(0)
    return clients, sink


def test_bybit_tickers_on_the_real_capture():
    """Deltas merged into the snapshot: at every real ticker frame carrying ``openInterestValue``,
    the merged open interest times the merged mark price equals it (Bybit's own product), so a
    delta that lost a value (or took a stale one) shows; and every row holds the latest value each
    field was sent with."""
    bybit = get_venue("bybit")
    path = str(BYBIT_RECORDING)
    (client,), sink = client_for("bybit", ["BTCUSDT", "ETHUSDT"], bybit.replay_settings(bybit.settings({}), path))
    keys = {"markPrice": MARK, "indexPrice": INDEX, "fundingRate": FUNDING, "openInterest": OI, "lastPrice": LAST}
    latest: dict[str, dict[int, float]] = {}
    checked = frames = 0
    for rec in read_recording(path):
        if rec.kind != "recv":
            continue
        client.on_frame(rec.payload, rec.ts_local)
        if not rec.payload.startswith('{"topic":"tickers.'):
            continue
        frames += 1
        msg = orjson.loads(rec.payload)
        data, sym = msg["data"], msg["data"]["symbol"]
        seen = latest.setdefault(sym, {})
        seen.update({i: float(data[k]) for k, i in keys.items() if data.get(k)})
        row = [r for r in sink.derivatives if r[0] == sym][-1]
        assert all(row[3 + i] == v for i, v in seen.items()), f"{sym} at ts {msg['ts']}: {row} vs {seen}"
        assert row[3 + NEXT_FUNDING] == 1786320000000 * 1_000_000
        if "openInterestValue" in data:
            assert abs(row[3 + OI] * row[3 + MARK] / float(data["openInterestValue"]) - 1) < 1e-9
            checked += 1
    assert frames == 401 and checked == 60
    # a row per change of our fields, never for a delta of only the best bid/ask
    assert len(sink.derivatives) == 102
    values = [tuple(r[3:]) for r in sink.derivatives]
    assert all(a != b for a, b in zip(values, values[1:]))
    assert not [e for e in sink.events if e[3] == "error"]


def test_bybit_all_liquidation_side_is_the_position_side():
    (client,), sink = client_for("bybit", ["BTCUSDT"])
    client.on_frame('{"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":1739502303204,"data":['
                    '{"T":1739502302929,"s":"BTCUSDT","S":"Buy","v":"0.5","p":"96000.1"},'
                    '{"T":1739502302930,"s":"BTCUSDT","S":"Sell","v":"1.25","p":"96001"}]}', 7)
    assert sink.liquidations == [("BTCUSDT", 7, 1739502302929 * 1_000_000, -1, 96000.1, 0.5, None),
                                 ("BTCUSDT", 7, 1739502302930 * 1_000_000, 1, 96001.0, 1.25, None)]


def test_binance_mark_price_open_interest_poll_and_force_order():
    """Binance's documented frames (the recording holds none of these streams)."""
    clients, sink = client_for("binance", ["BTCUSDT"], get_venue("binance").settings({"open_interest_interval": "5s"}))
    market = next(c for c in clients if "/market" in c.plan.url)
    assert [s.name for s in market.plan.subscriptions] == ["btcusdt@markPrice@1s", "btcusdt@forceOrder"]
    frame = ('{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT",'
             '"p":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"0.00038167","T":1562306400000}}')
    poll, = market.on_frame(frame, 1_000)
    assert isinstance(poll, FetchSnapshot) and poll.url == "http://t/fapi/v1/openInterest?symbol=BTCUSDT"
    assert market.on_frame(frame, 2_000) == []                       # no change, no row; poll on its way
    market.on_fetched(poll, b'{"openInterest":"10659.509","symbol":"BTCUSDT","time":1562305381000}', 3_000)
    assert market.on_frame(frame, 4_000_000_000) == []               # next poll 5 s after the first
    assert len(market.on_frame(frame, 5_000_001_000)) == 1
    assert sink.derivatives == [
        ("BTCUSDT", 1_000, 1562305380000 * 1_000_000, 11794.15, 11784.62659091, 0.00038167, None,
         1562306400000 * 1_000_000, None, None),
        ("BTCUSDT", 3_000, 1562305381000 * 1_000_000, 11794.15, 11784.62659091, 0.00038167, None,
         1562306400000 * 1_000_000, 10659.509, None)]
    market.on_fetched(poll, None, 6_000, error="HTTP 429")
    assert [e[2:4] for e in sink.events if e[3] == "error"] == [("derivatives", "error")]
    market.on_frame('{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT",'
                    '"S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910","ap":"9910.5","X":"FILLED","l":"0.014",'
                    '"z":"0.014","T":1568014460893}}}', 9)
    assert sink.liquidations == [("BTCUSDT", 9, 1568014460893 * 1_000_000, -1, 9910.5, 0.014, None)]


def test_binance_open_interest_polls_stay_within_the_weight_budget():
    import pytest
    from actors.errors import ConfigError

    binance = get_venue("binance")
    settings = binance.settings({"open_interest_interval": "5s"})
    binance.validate(settings, [f"S{i}USDT" for i in range(100)], ALL, 20)            # 1200/min: allowed
    with pytest.raises(ConfigError, match="open_interest_interval"):
        binance.validate(settings, [f"S{i}USDT" for i in range(101)], ALL, 20)
    binance.validate(settings, [f"S{i}USDT" for i in range(101)], ["l2book", "trades"], 20)   # no polls


# ----------------------------------------------------------------------------- simulators, end to end
SIM = {"messages_per_s": 400, "record_truth": True, "derivatives_every": 4, "liquidation_probability": 0.05}
#: the values each venue's derivatives stream carries (the rest: polled, or not said)
CARRIED = {"binance": (MARK, INDEX, FUNDING, NEXT_FUNDING), "bybit": (MARK, INDEX, FUNDING, NEXT_FUNDING, OI, LAST),
           "okx": (MARK, FUNDING, PREDICTED, NEXT_FUNDING, OI), "hyperliquid": (MARK, INDEX, FUNDING, OI)}
LIQUIDATIONS = {"binance", "bybit"}      # of these simulators (Hyperliquid publishes none; OKX's: not archived yet)


def archived_sim_run(venue_name, symbols, tmp_path, enough=40):
    """Run the venue's simulator against its client, then write every row through the real writer
    core (spool, seal, catalog) and load the two channels back with the public loaders."""
    from actors import load_derivatives, load_liquidations
    from actors.feed.records import StreamBuffers
    from actors.storage.catalog import Catalog
    from actors.storage.layout import NS
    from actors.storage.writer import SymbolStore
    from venue_harness import Harness

    venue = get_venue(venue_name)
    server = venue.make_sim_server(symbols, SIM, 10)
    buffers = StreamBuffers()
    harness = Harness(venue, server, symbols, depth=10, sink=buffers, channels=ALL)

    def count(sym, channel):
        buf = buffers.buffers.get((sym, channel))
        return len(buf) if buf is not None else 0
    liquidations = 3 if venue_name in LIQUIDATIONS else 0
    harness.run(until=lambda: all(count(s, "derivatives") >= enough and count(s, "liquidations") >= liquidations
                                  for s in symbols))
    core = SymbolStore(str(tmp_path), venue_name, "perp", symbols, 10, 3600 * NS, "w1", Catalog(str(tmp_path)))
    core.recover()
    batches = buffers.take()
    assert not [b for (sym, ch), b in batches.items() if ch == "events"
                and set(b.column("kind").to_pylist()) & {"error", "gap"}]
    core.write("sim", 1, batches)
    core.seal_all()
    loaded = {}
    for sym in symbols:
        start, end = 0, 2**62
        loaded[sym] = (load_derivatives(tmp_path, venue_name, sym, start, end).to_pylist(),
                       load_liquidations(tmp_path, venue_name, sym, start, end).to_pylist())
    return server, loaded


def check_sim_channels(venue_name, server, loaded):
    carried = CARRIED[venue_name]
    for sym, (derivs, liqs) in loaded.items():
        truth = server.truth(sym)
        names = [DERIVATIVE_FIELDS[i] for i in carried]
        got = [tuple(_plain(r[n]) for n in names) for r in derivs]
        want = [tuple(t[i] for i in carried) for t in truth.derivatives]
        # a row per change of a value the stream carries: the truth with repeats (no change) folded
        want = [w for k, w in enumerate(want) if k == 0 or w != want[k - 1]]
        if venue_name == "binance":              # open-interest rows repeat the streamed values
            got = [g for k, g in enumerate(got) if k == 0 or g != got[k - 1]]
            served = {r["open_interest"] for r in derivs} - {None}
            assert served and served <= truth.open_interest_served, f"{sym}: open interest not from the REST answers"
        if venue_name == "okx":                  # three channels: a row per frame, the step's last one is the truth
            rest = iter(got)
            assert all(w in rest for w in want) and len(want) >= 20, f"{sym}: derivatives differ from the simulator's"
        else:
            assert got == want and len(got) >= 20, f"{sym}: derivatives differ from the simulator's"
        assert [(r["side"], r["price"], r["size"]) for r in liqs] == \
            [(t.side, t.price, t.size) for t in truth.liquidations], f"{sym}: liquidations differ"
        assert bool(liqs) == (venue_name in LIQUIDATIONS)


def _plain(value):
    """A loaded value as the truth holds it (timestamps as ns)."""
    return value.value if hasattr(value, "value") else value


def test_binance_sim_derivatives_and_liquidations_through_the_writer(tmp_path):
    server, loaded = archived_sim_run("binance", ["BTCUSDT", "ETHUSDT"], tmp_path)
    check_sim_channels("binance", server, loaded)


def test_bybit_sim_derivatives_and_liquidations_through_the_writer(tmp_path):
    server, loaded = archived_sim_run("bybit", ["BTCUSDT", "ETHUSDT"], tmp_path)
    check_sim_channels("bybit", server, loaded)


def test_okx_sim_derivatives_through_the_writer(tmp_path):
    server, loaded = archived_sim_run("okx", ["BTC-USDT-SWAP"], tmp_path)
    check_sim_channels("okx", server, loaded)


def test_hyperliquid_sim_derivatives_through_the_writer(tmp_path):
    server, loaded = archived_sim_run("hyperliquid", ["BTC", "ETH"], tmp_path)
    check_sim_channels("hyperliquid", server, loaded)
