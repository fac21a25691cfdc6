"""Paradex SBE: the codec against byte strings laid out here by hand from the schema's offsets
(docs/protocols/paradex.md), the client's rules on such frames, and the binary simulator end to
end into archive files checked against its truth. The simulator's faults are in test_venues.py."""
from __future__ import annotations

import asyncio
import re
import struct

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from actors.cli.config import load_settings
from actors.errors import ConfigError
from actors.feed.records import ListSink, StreamBuffers
from actors.storage.catalog import Catalog
from actors.storage.writer import SymbolStore
from actors.venues import get_venue
from actors.venues import paradex_sbe as sbe
from actors.venues.base import Endpoints, Reconnect, SendFrame
from actors.venues.paradex import ParadexClient
from actors.venues.sim.server import ServerThread
from archive_reading import read_channel
from venue_harness import CHANNELS, Harness, check_sim_truth, events, synced_after_last_connect

paradex = get_venue("paradex")
NULL = -9223372036854775808          # INT64_MIN
MARKET = "BTC-USD-PERP"


# ----------------------------------------------------------------------------- frames by hand
def header(block_length: int, template_id: int, schema_id: int = 1, version: int = 1) -> bytes:
    return struct.pack("<HHHH", block_length, template_id, schema_id, version)


def var_string(text: str) -> bytes:
    return bytes([len(text)]) + text.encode()


def hand_trade(ts=1_760_000_000_123_456, seq=42, trade_id=999, side=1, price=4_200_050_000_000, size=100_000,
               created=1_760_000_000_100_000, trade_type=1, block_length=50, market=MARKET) -> bytes:
    """TradeEvent: 0 ts i64, 8 seq i64, 16 tradeId i64, 24 side u8, 25 price i64, 33 size i64,
    41 createdAt i64, 49 tradeType u8 (50 bytes); bytes after 50 are a later version's fields."""
    block = bytearray(b"\xee" * block_length)
    struct.pack_into("<q", block, 0, ts)
    struct.pack_into("<q", block, 8, seq)
    struct.pack_into("<q", block, 16, trade_id)
    struct.pack_into("<B", block, 24, side)
    struct.pack_into("<q", block, 25, price)
    struct.pack_into("<q", block, 33, size)
    struct.pack_into("<q", block, 41, created)
    struct.pack_into("<B", block, 49, trade_type)
    return header(block_length, 1) + bytes(block) + var_string(market)


def hand_book(seq=10, pkg_type=0, bids=((4_200_000_000_000, 200_000_000), (4_199_900_000_000, 300_000_000)),
              asks=((4_200_100_000_000, 150_000_000),), best=(NULL,) * 9, block_length=89, entry=16,
              ts=1_760_000_000_000_000, market=MARKET) -> bytes:
    """BookEvent: 0 ts, 8 seq, 16 pkgType u8, 17..81 nine nullable i64 (89 bytes); then groups
    ``bids`` and ``asks`` (blockLength u16, numInGroup u16, entries {price i64, size i64}), market."""
    block = bytearray(b"\xee" * block_length)
    struct.pack_into("<q", block, 0, ts)
    struct.pack_into("<q", block, 8, seq)
    struct.pack_into("<B", block, 16, pkg_type)
    for k, value in enumerate(best):
        struct.pack_into("<q", block, 17 + 8 * k, value)
    groups = b""
    for levels in (bids, asks):
        groups += struct.pack("<HH", entry, len(levels))
        for price, size in levels:
            groups += struct.pack("<qq", price, size) + b"\xee" * (entry - 16)
    return header(block_length, 3) + bytes(block) + groups + var_string(market)


# ----------------------------------------------------------------------------- codec
def test_trade_event_decodes_from_the_schema_offsets_and_encodes_to_them():
    frame = hand_trade(trade_type=2, side=2)
    ev = sbe.decode(frame)
    assert ev == sbe.TradeEvent(1_760_000_000_123_456, 42, 999, 2, 4_200_050_000_000, 100_000,
                                1_760_000_000_100_000, 2, MARKET)
    assert ev.trade_type_name == "LIQUIDATION"
    assert sbe.to_float(ev.price) == 42000.5 and sbe.to_float(ev.size) == 0.001
    assert sbe.encode_trade(ev) == frame


def test_book_event_decodes_from_the_schema_offsets_and_encodes_to_them():
    frame = hand_book()
    ev = sbe.decode(frame)
    assert (ev.ts_us, ev.seq, ev.pkg_type, ev.market) == (1_760_000_000_000_000, 10, sbe.SNAPSHOT, MARKET)
    assert ev.bids == [(4_200_000_000_000, 200_000_000), (4_199_900_000_000, 300_000_000)]
    assert ev.asks == [(4_200_100_000_000, 150_000_000)]
    assert sbe.encode_book(ev) == frame


def test_a_longer_block_and_longer_group_entries_of_a_later_version_still_decode():
    trade = sbe.decode(hand_trade(block_length=66))       # 16 bytes of fields we do not know
    assert (trade.trade_id, trade.price, trade.market) == (999, 4_200_050_000_000, MARKET)
    book = sbe.decode(hand_book(block_length=105, entry=24, pkg_type=1))
    assert book.bids == [(4_200_000_000_000, 200_000_000), (4_199_900_000_000, 300_000_000)]
    assert book.asks == [(4_200_100_000_000, 150_000_000)] and book.market == MARKET and book.pkg_type == sbe.DELTA
    # the encoder lays out a longer block the same way (zeros for the unknown fields)
    assert sbe.decode(sbe.encode_book(book, block_length=105)) == book
    assert len(sbe.encode_book(book, block_length=105)) == len(sbe.encode_book(book)) + 16


def test_null_best_prices_are_none_and_a_set_one_is_its_value():
    best = (NULL, NULL, 4_200_100_000_000, 150_000_000, NULL, NULL, NULL, NULL, 7)
    ev = sbe.decode(hand_book(best=best, bids=()))
    assert ev.best_bid_price is None and ev.best_bid_size is None and ev.relative_spread is None
    assert (ev.best_ask_price, ev.best_ask_size, ev.best_ask_api_size) == (4_200_100_000_000, 150_000_000, 7)
    assert ev.bids == [] and sbe.to_float(ev.best_bid_price) is None
    assert sbe.encode_book(ev) == hand_book(best=best, bids=())


def test_unknown_template_ids_decode_to_none():
    heartbeat = header(16, 40) + struct.pack("<qq", 1_760_000_000_000_000, 5)
    bbo = header(48, 2) + bytes(48) + var_string(MARKET)
    assert sbe.decode(heartbeat) is None and sbe.decode(bbo) is None


def test_every_truncation_of_a_frame_is_an_sbe_error():
    for frame in (hand_book(), hand_trade()):
        for n in range(len(frame)):
            with pytest.raises(sbe.SbeError):
                sbe.decode(frame[:n])
    with pytest.raises(sbe.SbeError, match="schema id 9"):
        sbe.decode(header(50, 1, schema_id=9) + bytes(50) + var_string(MARKET))
    with pytest.raises(sbe.SbeError, match="block length 40 is shorter"):
        sbe.decode(header(40, 1) + bytes(40) + var_string(MARKET))
    with pytest.raises(sbe.SbeError, match="null price"):
        sbe.decode(hand_book(bids=((NULL, 1),)))


def test_mantissas_are_exact_and_floats_equal_the_decimal_strings():
    for text in ("42000.5", "0.001", "67629.7", "0.00000001", "123456.12345678", "-3.25", "7"):
        assert sbe.to_float(sbe.mantissa(text)) == float(text)
    assert sbe.mantissa("42000.50") == 4_200_050_000_000
    with pytest.raises(ValueError):
        sbe.mantissa("0.000000001")


def test_the_frame_in_the_handlers_docstring_is_what_it_says():
    block = ParadexClient.decode.__doc__.split("::", 1)[1].split("\n\n")[1]
    frame = bytes.fromhex("".join(re.split(r"\s{2,}", line.strip())[0].replace(" ", "")
                                  for line in block.splitlines()))
    assert frame == hand_book(seq=7, pkg_type=1, bids=((4_200_050_000_000, 100_000),), asks=())
    assert sbe.decode(frame).bids == [(4_200_050_000_000, 100_000)]


# ----------------------------------------------------------------------------- client
class TypedSink(ListSink):
    """A sink whose trades take a ``trade_type`` (as the archive's will)."""

    def __init__(self) -> None:
        super().__init__()
        self.types: dict[str, str] = {}

    def trade(self, symbol, ts_local, ts_exchange, trade_id, price, size, side, trade_type=None) -> None:
        super().trade(symbol, ts_local, ts_exchange, trade_id, price, size, side)
        self.types[trade_id] = trade_type


def client_for(sink, symbols=(MARKET,), depth=2):
    settings = paradex.settings({})
    plan, = paradex.plan_connections(settings, Endpoints("ws://h", "http://h"), list(symbols), CHANNELS, depth)
    client = paradex.make_client(plan, settings, sink, depth)
    client.on_connect(0)
    return client


def test_connects_negotiating_schema_1_version_1():
    plan, = paradex.plan_connections(paradex.settings({}), Endpoints("ws://h", "http://h"), [MARKET], CHANNELS, 5)
    assert plan.url == "ws://h/v1?sbeSchemaId=1&sbeSchemaVersion=1"
    assert [s.name for s in plan.subscriptions] == [f"order_book.{MARKET}.deltas", f"trades.{MARKET}"]


def test_snapshot_then_deltas_build_the_book_and_a_seq_break_is_a_gap_and_a_resubscribe():
    sink = ListSink()
    client = client_for(sink)
    assert client.on_frame(hand_book(seq=10), 1) == []
    delta = [(4_200_000_000_000, 0), (4_199_800_000_000, 500_000_000)]      # remove the best bid, add one deeper
    assert client.on_frame(hand_book(seq=11, pkg_type=1, bids=delta, asks=()), 2) == []
    assert [b[3:] for b in sink.books] == [
        (10, [42000.0, 41999.0], [2.0, 3.0], [42001.0], [1.5]),
        (11, [41999.0, 41998.0], [3.0, 5.0], [42001.0], [1.5])]
    assert sink.books[1][2] == 1_760_000_000_000_000 * 1000          # us -> ns
    actions = client.on_frame(hand_book(seq=13, pkg_type=1, bids=(), asks=()), 3)
    assert [e[3:7] for e in sink.events if e[3] == "gap"] == [("gap", "seq 13 after 11", 11, 13)]
    assert [a.frame for a in actions if isinstance(a, SendFrame)] == [
        f'{{"jsonrpc":"2.0","method":"unsubscribe","params":{{"channel":"order_book.{MARKET}.deltas"}},"id":3}}',
        f'{{"jsonrpc":"2.0","method":"subscribe","params":{{"channel":"order_book.{MARKET}.deltas"}},"id":4}}']
    client.on_frame(hand_book(seq=14, pkg_type=1), 4)              # unsynced: waits for the snapshot
    client.on_frame(hand_book(seq=20), 5)
    assert [b[3] for b in sink.books] == [10, 11, 20] and events(sink, "resync")


def test_trades_are_written_once_by_trade_id_with_their_type():
    sink = TypedSink()
    client = client_for(sink)
    for frame in (hand_trade(trade_id=5), hand_trade(trade_id=5), hand_trade(trade_id=6, trade_type=2, side=2)):
        client.on_frame(frame, 1)
    assert [t[2:] for t in sink.trades] == [(1_760_000_000_100_000_000, "5", 42000.5, 0.001, 1),
                                           (1_760_000_000_100_000_000, "6", 42000.5, 0.001, -1)]
    assert sink.types == {"5": "FILL", "6": "LIQUIDATION"} and client.duplicate_trades == 1
    plain = ListSink()                                  # a sink without trade_type still gets the trade
    client_for(plain).on_frame(hand_trade(trade_type=2), 1)
    assert [t[3] for t in plain.trades] == ["999"]


def test_unknown_template_is_skipped_and_a_truncated_frame_is_one_error_the_connection_stays():
    sink = ListSink()
    client = client_for(sink)
    client.on_frame(hand_book(seq=10), 1)
    assert client.on_frame(header(16, 40) + bytes(16), 2) == []
    assert client.skipped_templates == {40: 1} and not [e for e in sink.events if e[3] == "error"]
    actions = client.on_frame(hand_book(seq=11, pkg_type=1)[:-20], 3)
    errors = [e for e in sink.events if e[3] == "error"]
    assert len(errors) == 1 and "malformed frame (SBE truncated BookEvent" in errors[0][4]
    assert not [a for a in actions if isinstance(a, Reconnect)]
    client.on_frame(hand_book(seq=11, pkg_type=1, bids=(), asks=()), 4)    # the same seq again: still chained
    assert [b[3] for b in sink.books] == [10, 11] and not events(sink, "gap")


def test_old_json_payloads_still_parse():
    sink = TypedSink()
    client = client_for(sink)
    client.on_frame('{"jsonrpc":"2.0","method":"subscription","params":{"channel":"order_book.BTC-USD-PERP.deltas",'
                    '"data":{"seq_no":3,"market":"BTC-USD-PERP","last_updated_at":1718267837265,"update_type":"s",'
                    '"inserts":[{"side":"BUY","price":"67629.7","size":"0.992"},'
                    '{"side":"SELL","price":"69378.6","size":"3.137"}],"updates":[],"deletes":[]}}}', 1)
    client.on_frame('{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.BTC-USD-PERP","data":'
                    '{"id":"17","market":"BTC-USD-PERP","side":"SELL","size":"0.1","price":"67629.7",'
                    '"created_at":1718267837266,"trade_type":"RPI"}}}', 2)
    assert [b[2:] for b in sink.books] == [(1718267837265 * 1_000_000, 3, [67629.7], [0.992], [69378.6], [3.137])]
    assert [t[3:] for t in sink.trades] == [("17", 67629.7, 0.1, -1)] and sink.types == {"17": "RPI"}


# ----------------------------------------------------------------------------- simulator
def test_binary_simulator_refuses_a_socket_without_the_sbe_negotiation():
    server = paradex.make_sim_server([MARKET], {}, 10)
    thread = ServerThread(server).start()

    async def status(query: str):
        try:
            async with connect(f"{server.ws_base}/v1{query}", open_timeout=5):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code
    try:
        assert [asyncio.run(status(q)) for q in ("", "?sbeSchemaId=1&sbeSchemaVersion=2",
                                                  "?sbeSchemaId=1&sbeSchemaVersion=1")] == [400, 400, 101]
    finally:
        thread.stop()


class ArchiveTee(TypedSink):
    """Every row to the archive's own buffers too (what the socket actor sends its writer)."""

    def __init__(self) -> None:
        super().__init__()
        self.buffers = StreamBuffers()

    def book(self, *row) -> None:
        super().book(*row)
        self.buffers.book(*row)

    def trade(self, symbol, ts_local, ts_exchange, trade_id, price, size, side, trade_type=None) -> None:
        super().trade(symbol, ts_local, ts_exchange, trade_id, price, size, side, trade_type)
        self.buffers.trade(symbol, ts_local, ts_exchange, trade_id, price, size, side)

    def event(self, *row) -> None:
        super().event(*row)
        self.buffers.event(*row)


def test_binary_simulator_to_archive_files_books_are_true_and_trades_once(tmp_path):
    symbols, depth = [MARKET, "ETH-USD-PERP"], 10
    server = paradex.make_sim_server(symbols, {"messages_per_s": 300, "record_truth": True}, depth)
    sink = ArchiveTee()
    harness = Harness(paradex, server, symbols, depth=depth, idle_timeout_s=5.0, sink=sink)
    harness.run(until=lambda: synced_after_last_connect(sink, symbols, rows=300) and
                sum(1 for v in sink.types.values() if v == "LIQUIDATION") >= 2, steps=[
        (None, lambda: synced_after_last_connect(sink, symbols, rows=50)),
        (lambda: server.inject("break_chain", symbol=MARKET), lambda: events(sink, "resync", MARKET)),
        (lambda: server.inject("duplicate_frames", count=20),
         lambda: server.call(lambda: all(s.duplicates == 0 for s in server.sessions))),
    ])
    core = SymbolStore(str(tmp_path), "paradex", "perp", symbols, depth, 3600 * 10 ** 9, "w1",
                            Catalog(str(tmp_path)), node="test")
    core.recover()
    assert core.write("p1", 1, sink.buffers.take())
    core.seal_all()

    archived = ListSink()                      # the archive files' rows, read back with pyarrow
    for sym in symbols:
        books, trades = read_channel(tmp_path, "l2book", sym).to_pylist(), read_channel(tmp_path, "trades", sym).to_pylist()
        archived.books += [(sym, r["ts_local"], r["ts_exchange"], r["seq"], r["bid_px"], r["bid_sz"], r["ask_px"],
                            r["ask_sz"]) for r in books]
        archived.trades += [(sym, r["ts_local"], r["ts_exchange"], r["trade_id"], r["price"], r["size"], r["side"])
                            for r in trades]
        assert len(books) >= 300 and all(len(r["bid_px"]) == depth for r in books)
    check_sim_truth(archived, server, symbols)          # every book true, every trade once and in order
    assert len(archived.books) == len(sink.books) and len(archived.trades) == len(sink.trades)
    assert sink.types == {str(t): server.trade_types[t] for t in map(int, sink.types)}
    assert sum(1 for v in sink.types.values() if v == "LIQUIDATION") >= 2
    assert [e[4] for e in sink.events if e[3] == "gap"] and not [e for e in sink.events if e[3] == "crossed"]


def test_json_mode_simulator_for_the_old_payloads():
    symbols = [MARKET]
    server = paradex.make_sim_server(symbols, {"messages_per_s": 300, "record_truth": True,
                                               "paradex_payloads": "json"}, 10)
    sink = TypedSink()
    harness = Harness(paradex, server, symbols, depth=10, sink=sink)
    harness.run(until=lambda: synced_after_last_connect(sink, symbols, rows=100) and len(sink.trades) >= 20)
    check_sim_truth(sink, server, symbols)
    assert set(sink.types.values()) <= {"FILL", "LIQUIDATION"} and sink.types
    assert all(sink.types[str(t)] == server.trade_types[t] for t in map(int, sink.types))
    with pytest.raises(ValueError, match="paradex_payloads"):
        paradex.make_sim_server(symbols, {"paradex_payloads": "xml"}, 10)
    assert load_settings(["source=sim", "source.paradex_payloads=json"]).sim_section()["paradex_payloads"] == "json"
    with pytest.raises(ConfigError, match="source.paradex_payloads: 'xml' is not allowed"):
        load_settings(["source=sim", "source.paradex_payloads=xml"])
