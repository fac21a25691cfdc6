"""``archive.<venue>`` entries carrying their market, and ``restore.market``: one clear line for a
bad one, the archive's names for the good ones."""
from __future__ import annotations

import pytest

from actors.cli.config import load_settings
from actors.errors import ConfigError
from actors.restore.loading import market_of
from actors.restore.restorer import RestoreError, Restorer
from actors.storage.layout import LayoutError, StreamKey


def test_symbols_carry_their_market(tmp_path):
    settings = load_settings([f"storage.root={tmp_path}", "archive.binance=[BTCUSDT,spot/BTCUSDT,BTCUSD_PERP,BTCUSD_250627]",
                              "archive.bybit=[spot/ETHUSDT,perp/BTCUSDT]", "archive.okx=[spot/BTC-USDT]"])
    assert settings.venue("binance").symbols == ("BTCUSDT", "spot/BTCUSDT", "BTCUSD_PERP", "futures/BTCUSD_250627")
    assert settings.venue("bybit").symbols == ("spot/ETHUSDT", "BTCUSDT")
    assert settings.venue("okx").symbols == ("spot/BTC-USDT",)
    assert StreamKey.of("binance", "perp", "l2book", "futures/BTCUSD_250627", 20).id == \
        "binance/futures/l2book/BTCUSD_250627_depth20"


@pytest.mark.parametrize("entry, message", [
    ("archive.binance=[moon/BTCUSDT]", "unknown market 'moon'"),
    ("archive.bybit=[futures/BTCUSDT]", "bybit archives no futures market"),
    ("archive.binance=[spot/btcusdt]", "not a Binance spot symbol"),
    ("archive.binance=[BTCUSD_PERX]", "not a Binance USD-M symbol"),
    ("archive.binance=[futures/BTCUSDT]", "perpetual contract"),
])
def test_bad_market_is_one_clear_error(tmp_path, entry, message):
    with pytest.raises(ConfigError, match=message):
        load_settings([f"storage.root={tmp_path}", entry])


def test_restore_market_and_feed_cls(tmp_path):
    restorer = Restorer(str(tmp_path))
    assert restorer.stream_key("binance", "BTCUSDT", "trades", None, "spot").id == "binance/spot/trades/BTCUSDT"
    assert restorer.stream_key("binance", "spot/BTCUSDT", "trades", None, "perp").market == "spot"
    with pytest.raises(RestoreError, match="restore.market"):
        restorer.stream_key("binance", "BTCUSDT", "trades", None, "spots")

    class BinanceSpotFeed:          # quantpylib passes its feed class; its name says the market
        pass
    assert [market_of(None), market_of("spot"), market_of(BinanceSpotFeed), market_of("PerpFeed")] == \
        ["perp", "spot", "spot", "perp"]
    with pytest.raises(LayoutError, match="feed_cls"):
        market_of("Options")
