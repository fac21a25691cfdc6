"""Placement rules (plain logic): which node a venue group gets, how symbols are cut into processes."""
from __future__ import annotations

from actors.remote.placement import NodeInfo, choose_node, group_venues, shards


def node(node_id, resources=(), labels=(), alive=True, head=False):
    return NodeInfo(node_id, alive, frozenset(resources), frozenset(labels), head)


def test_groups_nodes_and_shards():
    nodes = [node("h", head=True), node("a1", ["venue_a"]), node("a2", labels=["venue_a"]),
             node("b", ["venue_b"]), node("dead", ["venue_c"], alive=False)]
    groups = group_venues(["binance", "bybit", "okx", "woox"], {"binance": "venue_a", "okx": "venue_a"})
    assert [(g.requirement, g.venues) for g in groups] == [("venue_a", ["binance", "okx"]), ("", ["bybit", "woox"])]
    assert choose_node(nodes, "", prefer="h").node_id == "h"                       # anywhere: the launching node
    assert choose_node(nodes, "venue_a", prefer="h", load={"a1": 1}).node_id == "a2"   # resource or label, least loaded
    assert choose_node(nodes, "venue_b").node_id == "b"
    assert choose_node(nodes, "venue_c") is None                                   # only on a dead node
    assert shards(list(range(10)), 0, 250) == [list(range(10))]
    assert [len(s) for s in shards(list(range(1000)), 0, 250)] == [250] * 4
    assert [len(s) for s in shards(list(range(5)), 2, 250)] == [2, 2, 1]
    assert shards([], 0, 250) == []
