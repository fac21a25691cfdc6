"""Paradex (JSON shapes): SBE frames are refused clearly; the simulator's truth and faults are
in test_venues.py."""
from __future__ import annotations

from actors.feed.records import ListSink
from actors.venues import get_venue
from actors.venues.base import Endpoints
from venue_harness import CHANNELS

paradex = get_venue("paradex")


def test_binary_sbe_frame_is_a_clear_error_not_a_guess():
    settings = paradex.settings({})
    plan, = paradex.plan_connections(settings, Endpoints("ws://h", "http://h"), ["BTC-USD-PERP"], CHANNELS, 20)
    sink = ListSink()
    client = paradex.make_client(plan, settings, sink, 20)
    client.on_connect(0)
    client.on_frame(b"\x01\x00\x03\x00" + bytes(40), 1)
    assert sink.events[-1][3] == "error" and "SBE" in sink.events[-1][4] and not sink.books
