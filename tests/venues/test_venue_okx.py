"""OKX v5: CRC32 checksums on the real 2022 capture, seq-chain rules and replay (the simulator's
faults are in test_venues.py)."""
from __future__ import annotations

import orjson
import pytest

from actors.errors import ConfigError
from actors.feed.records import ListSink
from actors.venues import get_venue
from actors.venues.base import Endpoints, SendFrame
from actors.venues.okx import checksum
from actors.venues.sim.recordings import read_recording
from conftest import FIXTURES
from venue_harness import CHANNELS, Harness, check_sim_truth

okx = get_venue("okx")

RECORDING = FIXTURES / "okx" / "okx_v5_2022-05-13.jsonl.zst"


def client_for(symbols, raw=None, depth=20):
    settings = okx.settings(raw or {})
    plan, = okx.plan_connections(settings, Endpoints("ws://t", "http://t"), symbols, CHANNELS, depth)
    sink = ListSink()
    client = okx.make_client(plan, settings, sink, depth)
    client.on_connect(0)
    return client, sink


def test_checksum_matches_every_books_message_of_the_capture():
    path = str(RECORDING)
    symbols = sorted(okx.recording_symbols(path))
    assert symbols == ["BTC-USD-220527", "BTC-USDT"]
    client, sink = client_for(symbols)
    books = trades = 0
    for rec in read_recording(path):
        if rec.kind != "recv":
            continue
        client.on_frame(rec.payload, rec.ts_local)
        if rec.payload.startswith('{"arg":{"channel":"books"'):
            books += 1
            assert orjson.loads(rec.payload)["data"][0]["checksum"] != 0
        elif rec.payload.startswith('{"arg":{"channel":"trades"'):
            trades += len(orjson.loads(rec.payload)["data"])
    assert books == 197 and client.checksums_verified == books and len(sink.books) == books
    assert len(sink.trades) == trades == 73
    assert not [e for e in sink.events if e[3] in ("gap", "error", "crossed")]


def book_msg(action, bids, asks, prev, seq, check=0):
    return orjson.dumps({"arg": {"channel": "books", "instId": "BTC-USDT-SWAP"}, "action": action, "data": [{
        "bids": [[p, s, "0", "1"] for p, s in bids], "asks": [[p, s, "0", "1"] for p, s in asks],
        "ts": "1700000000000", "checksum": check, "prevSeqId": prev, "seqId": seq}]}).decode()


def test_seq_chain_exceptions_gap_and_checksum_mismatch():
    client, sink = client_for(["BTC-USDT-SWAP"], {"ct_val": {"BTC-USDT-SWAP": 0.01}})
    client.on_frame(book_msg("snapshot", [("100", "5")], [("101", "7")], -1, 10), 1)
    client.on_frame(book_msg("update", [("100", "6")], [], 10, 15), 2)
    client.on_frame(book_msg("update", [], [], 15, 15), 3)                  # heartbeat: no change
    client.on_frame(book_msg("update", [("99", "1")], [], 15, 3), 4)        # documented reset
    client.on_frame(book_msg("update", [], [("102", "1")], 3, 5), 5)
    assert [b[3] for b in sink.books] == [10, 15, 15, 3, 5] and sink.books[1][5] == [0.06]
    actions = client.on_frame(book_msg("update", [], [("103", "1")], 7, 9), 6)   # a real break
    assert [e[3] for e in sink.events].count("gap") == 1 and len(sink.books) == 5
    assert [orjson.loads(a.frame)["op"] for a in actions if isinstance(a, SendFrame)] == ["unsubscribe", "subscribe"]
    client.on_frame(book_msg("update", [], [("104", "1")], 9, 11), 7)        # ignored until the snapshot
    good = checksum([("100", "5")], [("101", "7")])
    client.on_frame(book_msg("snapshot", [("100", "5")], [("101", "7")], -1, 20, good), 8)
    assert sink.events[-1][3] == "resync" and len(sink.books) == 6
    actions = client.on_frame(book_msg("update", [("100", "4")], [], 20, 21, good), 9)   # stale checksum
    assert sink.events[-1][3] == "gap" and "checksum" in sink.events[-1][4] and len(sink.books) == 6 and actions


def test_replay_server_serves_the_capture():
    path = str(RECORDING)
    symbols = sorted(okx.recording_symbols(path))
    server = okx.make_replay_server(path, 0, symbols)
    sink = Harness(okx, server, symbols, depth=20, replay_clock=True).run(until=server.finished.is_set)
    assert len(sink.books) == 197 and len(sink.trades) == 73
    assert not [e for e in sink.events if e[3] in ("gap", "crossed")]


def test_spot_market_replayed_with_checksums():
    """``spot/BTC-USDT``: the spot pair of the 2022 capture, archived under its market's name; every
    books message's CRC32 checksum verified against our book (0 mismatches), every trade once."""
    path = str(RECORDING)
    assert okx.recorded("spot/BTC-USDT", okx.recording_symbols(path))
    recorded_books = recorded_trades = 0
    for rec in read_recording(path):
        if rec.kind == "recv" and '"instId":"BTC-USDT"}' in rec.payload[:60]:
            msg = orjson.loads(rec.payload)
            recorded_books += msg["arg"]["channel"] == "books"
            recorded_trades += len(msg["data"]) if msg["arg"]["channel"] == "trades" else 0
    symbols = ["spot/BTC-USDT", "BTC-USD-220527"]
    server = okx.make_replay_server(path, 0, symbols)
    harness = Harness(okx, server, symbols, depth=20, replay_clock=True)
    sink = harness.run(until=server.finished.is_set)
    spot_books = [b for b in sink.books if b[0] == "spot/BTC-USDT"]
    assert len(spot_books) == recorded_books > 50
    assert len([t for t in sink.trades if t[0] == "spot/BTC-USDT"]) == recorded_trades > 0
    assert sum(c.client.checksums_verified for c in harness.conns) == len(sink.books) == 197
    assert not [e for e in sink.events if e[3] in ("gap", "crossed", "error")]
    with pytest.raises(ConfigError, match="two markets"):
        okx.validate(okx.settings({}), ["BTC-USDT", "spot/BTC-USDT"], CHANNELS, 20)


def test_spot_simulator_with_checksums():
    symbols = ["spot/BTC-USDT", "BTC-USDT-SWAP"]
    server = okx.make_sim_server(symbols, {"messages_per_s": 300, "record_truth": True}, 20)
    harness = Harness(okx, server, symbols, depth=20)
    sink = harness.run(until=lambda: all(len([b for b in harness.sink.books if b[0] == s]) >= 150 for s in symbols))
    check_sim_truth(sink, server, symbols)
    assert sum(c.client.checksums_verified for c in harness.conns) >= 300
