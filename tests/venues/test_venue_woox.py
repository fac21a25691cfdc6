"""WOO X v3 (no real capture exists): subscription planning and the JSON PING/PONG; the
simulator's prevTs sync, truth and faults are in test_venues.py."""
from __future__ import annotations

import orjson

from actors.feed.records import ListSink
from actors.venues import get_venue
from actors.venues.base import Endpoints, SendFrame
from venue_harness import CHANNELS

woox = get_venue("woox")


def test_plan_limits_topics_per_connection():
    settings = woox.settings({})
    syms = [f"PERP_C{i}_USDT" for i in range(60)]
    plans = woox.plan_connections(settings, Endpoints("ws://h", "http://h"), syms, CHANNELS, 20)
    assert [len(p.subscriptions) for p in plans] == [100, 20]
    frames = [orjson.loads(a.frame) for p in plans for a in woox.make_client(p, settings, ListSink(), 20).on_connect(0)]
    assert [len(f["params"]) for f in frames] == [20] * 6


def test_server_ping_is_answered_and_acks_name_their_topics():
    settings = woox.settings({})
    plan, = woox.plan_connections(settings, Endpoints("ws://h", "http://h"), ["PERP_BTC_USDT"], CHANNELS, 20)
    sink = ListSink()
    client = woox.make_client(plan, settings, sink, 20)
    request = orjson.loads(client.on_connect(0)[0].frame)
    assert client.on_frame('{"cmd":"PING","ts":1}', 1) == [SendFrame('{"cmd":"PONG"}')]
    client.on_frame(orjson.dumps({"id": request["id"], "cmd": "SUBSCRIBE", "success": True, "ts": 2}), 2)
    assert [(e[2], e[3], e[4]) for e in sink.events[1:]] == [
        ("l2book", "subscribed", "orderbookupdate@PERP_BTC_USDT@50"), ("trades", "subscribed", "trade@PERP_BTC_USDT")]
