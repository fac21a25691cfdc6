"""``source=replay`` of each new market's real recording through the whole archiver (Ray, writers,
sealing): files land under the market's folder, the loaders' ``market=`` (and quantpylib's
``feed_cls``) read them back, every recorded trade is archived once, and the books agree with the
venue's own best bid/ask (Binance bookTicker) or checksums (OKX)."""
from __future__ import annotations

import re
from collections import Counter

import orjson
import pytest

from actors.cli.config import load_settings
from actors.remote.archive import run_archive
from actors.restore.loading import load_l2book, load_lob_archives, load_trades
from actors.venues.sim.recordings import read_recording
from archive_reading import archive_files
from conftest import FIXTURES

pytestmark = pytest.mark.ray

CASES = [
    ("binance", "binance-cm/BINANCE_DELIVERY_2021.jsonl.zst", ["XRPUSD_PERP", "BTCUSD_211231"],
     {"XRPUSD_PERP": "perp", "BTCUSD_211231": "futures"}, "2021-07-22T00:00", "2021-07-23T00:00"),
    ("binance", "binance-spot/BINANCE_SPOT_2021.jsonl.zst", ["spot/NKNUSDT", "spot/LRCBTC"],
     {"NKNUSDT": "spot", "LRCBTC": "spot"}, "2021-10-12T00:00", "2021-10-13T00:00"),
    ("bybit", "bybit/bybit_v5_spot_btc_2026-08-10.jsonl.zst", ["spot/BTCUSDT"], {"BTCUSDT": "spot"},
     "2026-08-09T00:00", "2026-08-11T00:00"),
    ("okx", "okx/okx_v5_2022-05-13.jsonl.zst", ["spot/BTC-USDT"], {"BTC-USDT": "spot"},
     "2022-05-13T00:00", "2022-05-14T00:00"),
]


def recorded(path):
    """Per wire symbol: the recorded trade ids, and Binance bookTicker (bid, ask) by update id."""
    trades, tickers = Counter(), {}
    for rec in read_recording(path):
        if rec.kind != "recv":
            continue
        msg = orjson.loads(rec.payload)
        stream, data = msg.get("stream", ""), msg.get("data")
        if stream.endswith("@bookTicker"):
            tickers.setdefault(data["s"], {})[data["u"]] = (float(data["b"]), float(data["a"]))
        elif stream.endswith(("@aggTrade", "@trade")):
            trades[(data["s"], str(data.get("a", data.get("t"))))] += 1
        elif msg.get("topic", "").startswith("publicTrade.") or (msg.get("arg") or {}).get("channel") == "trades":
            for t in data or ():
                trades[(t.get("s") or t.get("instId"), str(t.get("i") or t.get("tradeId")))] += 1
    return trades, tickers


@pytest.mark.parametrize("venue, path, symbols, markets, start, end", CASES, ids=lambda v: str(v)[:24])
def test_replay_each_market(tmp_path, ray_session, venue, path, symbols, markets, start, end):
    root = tmp_path / "archive"
    report = run_archive(load_settings(["source=replay", f"replay.file={FIXTURES / path}", "replay.speed=0",
                                        f"storage.root={root}", f"archive.{venue}=[{','.join(symbols)}]"]))
    assert report.ok and set(report.venues) == {venue}
    rels = {f.relative_to(root).as_posix() for f in archive_files(root)}
    for rel in rels:
        m = re.match(rf"^{venue}/(\w+)/(l2book|trades|events)/\d{{4}}/\d{{2}}/([A-Z0-9_-]+?)(_depth20)?_\d{{4}}\.parquet$",
                     rel)
        assert m and markets[m.group(3)] == m.group(1), rel
    trades, tickers = recorded(FIXTURES / path)
    for bare, market in markets.items():
        archived = load_trades(root, venue, bare, start, end, market=market).column("trade_id").to_pylist()
        assert Counter(archived) == Counter({i: 1 for (s, i) in trades if s == bare}) and archived, bare
        books = load_l2book(root, venue, bare, start, end, market=market).select(["seq", "bid_px", "ask_px"]).to_pylist()
        assert books and all(b["bid_px"][0] < b["ask_px"][0] for b in books)
        matched = 0
        for b in books:
            truth = tickers.get(bare, {}).get(b["seq"])
            if truth is not None:
                assert (b["bid_px"][0], b["ask_px"][0]) == truth, f"{bare}: book differs from bookTicker at {b['seq']}"
                matched += 1
        assert matched or venue != "binance", bare
        lobs = load_lob_archives(venue, bare, 20, start, end, path=root, feed_cls=market)
        assert len(lobs) == len(books)
