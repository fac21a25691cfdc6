"""Every venue through the shared declaration: typed settings from its yaml, and its simulator's
faults (break_chain, malformed, drop_connection, stall) over real loopback websockets, checked
against the simulator's ground truth."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from typing import Callable

import pytest
import yaml

from actors.cli.config import load_settings
from actors.errors import ConfigError
from actors.venues import CONF_DIR, get_venue, supported_venues
from venue_harness import MS, Harness, check_sim_truth, events, synced_after_last_connect


@pytest.mark.parametrize("name", supported_venues())
def test_yaml_sets_exactly_the_venue_settings(name):
    venue = get_venue(name)
    raw = yaml.safe_load((CONF_DIR / "venues" / f"{name}.yaml").read_text())
    assert set(raw) == {f.name for f in fields(venue.Settings)}     # every key the code reads is settable
    assert venue.settings(raw) == venue.settings({})                 # the yaml states the defaults


@pytest.mark.parametrize("raw, needle", [
    ({"max_topics_per_connection": 10}, "venues.bybit.max_topics_per_connection: unknown key"),
    ({"book_depth": 7}, "venues.bybit.book_depth: 7 (allowed: None, 1, 50, 200, 1000)"),
    ({"heartbeat_interval": "soon"}, "venues.bybit.heartbeat_interval: cannot parse 'soon'"),
    ({"max_streams_per_connection": "many"}, "venues.bybit.max_streams_per_connection: 'many' is not a int"),
    ({"max_streams_per_connection": 0}, "venues.bybit.max_streams_per_connection: 0 (allowed: 1..any)"),
    ({"ws_base": None}, "venues.bybit.ws_base: must be set"),
])
def test_bad_venue_setting_is_one_clear_error(raw, needle):
    with pytest.raises(ConfigError) as err:
        get_venue("bybit").settings(raw)
    assert needle in str(err.value)


def test_venue_limits_and_heartbeats_are_enforced():
    with pytest.raises(ConfigError, match="venues.woox.max_streams_per_connection: 101 .allowed: 1..100"):
        get_venue("woox").settings({"max_streams_per_connection": 101})
    with pytest.raises(ConfigError, match="venues.binance.heartbeat_interval: binance pings the client itself"):
        get_venue("binance").settings({"heartbeat_interval": "20s"})
    assert get_venue("okx").settings({"heartbeat_interval": "250ms", "ct_val": {"A-B": 1}}).heartbeat_interval == 0.25


def test_every_setting_can_be_overridden_on_the_command_line():
    s = load_settings(["venues.binance.trade_stream=aggTrade", "venues.okx.book_channel=books5",
                       "venues.bybit.max_lifetime=2h"])
    assert s.venue("binance").cfg.trade_stream == "aggTrade" and s.venue("bybit").cfg.max_lifetime == 7200.0
    with pytest.raises(ConfigError, match="venues.binance.trade_stream: 'bookTicker' .allowed: trade, aggTrade"):
        load_settings(["venues.binance.trade_stream=bookTicker"])


# ----------------------------------------------------------------------------- simulator faults
@dataclass(frozen=True)
class SimCase:
    symbols: tuple[str, str]
    depth: int = 20
    id_of: Callable | None = lambda t: str(t.trade_id)        # the archived trade id of a true trade
    book_key: Callable = lambda b: b[3]                        # a book row -> its key in truth.books
    broken: str = "gap"                                        # the event a break_chain fault gives
    rest_sync: bool = False                                    # resynced from a REST snapshot
    venue: str = ""                                            # the venue of a market's case (else its key)


CASES = {
    "binance": SimCase(("BTCUSDT", "ETHUSDT"), depth=10, rest_sync=True),
    "bybit": SimCase(("BTCUSDT", "ETHUSDT"), id_of=lambda t: f"{t.trade_id:08x}-sim"),
    "hyperliquid": SimCase(("BTC", "ETH"), book_key=lambda b: b[2] // MS, broken="crossed"),
    "okx": SimCase(("BTC-USDT-SWAP", "ETH-USDT-SWAP")),
    "woox": SimCase(("PERP_BTC_USDT", "PERP_ETH_USDT"), id_of=None, rest_sync=True),
    "paradex": SimCase(("BTC-USD-PERP", "ETH-USD-PERP")),
    # other markets: their own simulators, next to the perpetual's on one loopback port
    "binance-spot-coinm": SimCase(("spot/BTCUSDT", "BTCUSD_PERP"), depth=10, rest_sync=True, venue="binance"),
    "bybit-spot": SimCase(("spot/BTCUSDT", "ETHUSDT"), id_of=lambda t: f"{t.trade_id:08x}-sim", venue="bybit"),
}


def test_every_venue_has_a_fault_case():
    assert sorted({case.venue or name for name, case in CASES.items()}) == supported_venues()


@pytest.mark.parametrize("name", sorted(CASES))
def test_sim_faults_leave_events_and_books_stay_true(name):
    case = CASES[name]
    venue = get_venue(case.venue or name)
    symbols, broken_sym = list(case.symbols), case.symbols[0]
    server = venue.make_sim_server(symbols, {"messages_per_s": 300, "record_truth": True}, case.depth)
    harness = Harness(venue, server, symbols, depth=case.depth, idle_timeout_s=1.0)
    sink = harness.sink
    disconnects = lambda: Counter(sink.events[i][0] for i in events(sink, "disconnect"))  # noqa: E731
    sink = harness.run(until=lambda: synced_after_last_connect(sink, symbols, rows=20), steps=[
        (None, lambda: synced_after_last_connect(sink, symbols, rows=20)),
        (lambda: server.inject("break_chain", symbol=broken_sym),
         lambda: events(sink, "resync", broken_sym) and events(sink, case.broken, broken_sym)),
        (lambda: server.inject("malformed"), lambda: events(sink, "error", text="malformed")),
        (lambda: server.inject("drop_connection"),
         lambda: min(disconnects()[s] for s in symbols) >= 1 and synced_after_last_connect(sink, symbols)),
        (lambda: server.inject("stall", seconds=2.5), lambda: events(sink, "disconnect", text="stalled")),
    ])
    check_sim_truth(sink, server, symbols, case.id_of, case.book_key)
    kinds = Counter(e[3] for e in sink.events)
    assert kinds[case.broken] == 1 and kinds["gap" if case.broken == "crossed" else "crossed"] == 0
    assert all(e[0] == broken_sym for e in sink.events if e[3] == case.broken)
    broken_at = events(sink, case.broken, broken_sym)[0]
    resync = sink.events[next(i for i in events(sink, "resync", broken_sym) if i > broken_at)]
    between = [b for b in sink.books if b[0] == broken_sym and sink.events[broken_at][1] <= b[1] < resync[1]]
    if case.rest_sync:     # only the buffered diffs applied on top of the fresh snapshot
        assert all(b[3] >= resync[6] for b in between), "book written from the broken chain"
    else:
        assert not between, "book written while unsynced"
    for sym in symbols:
        assert events(sink, "error", sym, "malformed")
        assert disconnects()[sym] >= 2 and len(events(sink, "connect", sym)) >= 3     # drop + stalled feed
        assert events(sink, "disconnect", sym, "stalled")
        assert events(sink, "subscribed", sym)
        # the first book after a reconnect: a fresh "snapshot", or a "resync" where the venue says so
        last_connect = events(sink, "connect", sym)[-1]
        synced = min(i for i in events(sink, "snapshot", sym) + events(sink, "resync", sym) if i > last_connect)
        assert sink.events[synced][3] == ("resync" if venue.reconnect_is_resync else "snapshot")
