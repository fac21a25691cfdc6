"""The frames in the venue handlers' docstrings are real: each is a cut of a frame in the recordings.

A handler's docstring shows the wire it reads (a ``::`` block, levels cut to a few). This checks each
such frame against the recording it names: some recorded frame holds the same keys and values, its
level lists starting with the levels shown. WOO X has no recording; its docstrings quote the docs.
"""
from __future__ import annotations

import json

import pytest

from actors.venues.binance import BinanceClient, BinanceCoinmClient, BinanceSpotClient
from actors.venues.bybit import BybitClient, BybitSpot
from actors.venues.hyperliquid import HyperliquidClient
from actors.venues.okx import OkxClient
from actors.venues.sim.recordings import read_recording
from conftest import FIXTURES

HANDLERS = {
    "binance-usdm/btcusdt_20240808.gz": [BinanceClient._on_payload, BinanceClient._on_trade],
    "binance-cm/BINANCE_DELIVERY_2021.jsonl.zst": [BinanceCoinmClient],
    "binance-spot/BINANCE_SPOT_2021.jsonl.zst": [BinanceSpotClient],
    "bybit/bybit_v5_linear_btc_eth_2026-08-10.jsonl.zst": [BybitClient._on_book, BybitClient._on_trades],
    "bybit/bybit_v5_spot_btc_2026-08-10.jsonl.zst": [BybitSpot],
    "hyperliquid/btcusd_20250126.gz": [HyperliquidClient._on_book, HyperliquidClient._on_trades],
    "okx/okx_v5_2022-05-13.jsonl.zst": [OkxClient._on_book, OkxClient._on_trades],
}


ELIDED = "\u2026"          # a list shown as ``[a, b, ...]`` or ``[...]``: more levels follow


def docstring_frame(func) -> dict:
    """The first JSON frame of the ``::`` literal block in a handler's (or class's) docstring;
    ``...`` in a list means the recorded list goes on."""
    doc = func.__doc__ or ""
    assert "::\n\n" in doc, f"{func.__qualname__}: no frame in its docstring"
    text = ""
    for line in doc.split("::\n\n", 1)[1].split("\n\n", 1)[0].splitlines():
        text += line.strip()
        try:
            return json.loads(text.replace("[...]", f'["{ELIDED}"]').replace(",...", f',"{ELIDED}"'))
        except ValueError:
            continue
    raise AssertionError(f"{func.__qualname__}: its docstring frame is not JSON: {text[:200]}")


def is_cut_of(shown, recorded) -> bool:
    """``shown`` equals ``recorded`` except that its lists may stop early."""
    if isinstance(shown, dict):
        return isinstance(recorded, dict) and shown.keys() == recorded.keys() and \
            all(is_cut_of(v, recorded[k]) for k, v in shown.items())
    if isinstance(shown, list):
        if shown and shown[-1] == ELIDED:
            shown = shown[:-1]
        elif len(shown) != len(recorded or []) and not shown:
            return False
        return isinstance(recorded, list) and len(shown) <= len(recorded) and \
            all(is_cut_of(a, b) for a, b in zip(shown, recorded))
    return shown == recorded and type(shown) is type(recorded)


@pytest.mark.parametrize("recording", sorted(HANDLERS))
def test_docstring_frames_are_recorded(recording):
    frames = {f.__qualname__: docstring_frame(f) for f in HANDLERS[recording]}
    found = set()
    for rec in read_recording(FIXTURES / recording):
        if rec.kind != "recv" or not rec.payload.startswith("{"):
            continue
        msg = json.loads(rec.payload)
        payloads = [msg, msg["data"]] if "stream" in msg else [msg]     # a Binance payload may be shown bare
        found |= {name for name, frame in frames.items() if any(is_cut_of(frame, m) for m in payloads)}
        if len(found) == len(frames):
            break
    assert found == set(frames), f"not in {recording}: {sorted(set(frames) - found)}"
