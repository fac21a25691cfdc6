"""Where the actors of a run go, and what each node calls itself (plain logic, no Ray import).

* ``placement.<venue>: <name>`` pins a venue's socket(s) and writers to nodes that advertise
  the Ray custom resource ``<name>`` (``ray start --resources '{"<name>": 1}'``) or a node label
  with that key (``ray start --labels '<name>=...'``); a venue without an entry goes anywhere.
  Venues with the same requirement form one *group*: the group runs on ONE node (chosen
  among the eligible alive nodes), so writers are always on the node of the sockets that
  feed them, and the group's symbols share its writer processes.
* Each node writes under its own archive root: ``TICKARCHIVE_ROOT`` in the environment the
  node was started with (``TICKARCHIVE_ROOT=/data/a ray start ...``; Ray's workers inherit it),
  else ``storage.root``. ``TICKARCHIVE_NODE`` names the node in the catalog (default: the host
  name); nodes sharing a host need distinct names.
* Sizing: a group gets ``ceil(symbols / symbols_per_writer)`` writer processes
  (``storage.symbols_per_writer``; 0 = automatic, :data:`AUTO_SYMBOLS_PER_WRITER`), and a
  venue ``ceil(symbols / symbols_per_socket)`` socket processes (``socket.symbols_per_process``;
  0 = automatic, :data:`AUTO_SYMBOLS_PER_SOCKET`).
"""
from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable

ROOT_ENV = "TICKARCHIVE_ROOT"
NODE_ENV = "TICKARCHIVE_NODE"
AUTO_SYMBOLS_PER_WRITER = 250     # one writer process seals 500 streams at 10 msgs/s each in < 1 core
AUTO_SYMBOLS_PER_SOCKET = 250     # one socket process parses ~5,000 msgs/s of diff books + trades
ANYWHERE = ""


def node_root(configured: str) -> str:
    """This node's archive root: ``$TICKARCHIVE_ROOT`` if the node was started with it, else ``configured``."""
    return os.environ.get(ROOT_ENV) or configured


def node_name() -> str:
    """This node's name in the catalog: ``$TICKARCHIVE_NODE``, else the host name."""
    return os.environ.get(NODE_ENV) or socket.gethostname()


@dataclass(frozen=True)
class NodeInfo:
    """One Ray node as placement sees it."""

    node_id: str
    alive: bool
    resources: frozenset[str]
    labels: frozenset[str]
    is_head: bool = False

    def offers(self, requirement: str) -> bool:
        return requirement == ANYWHERE or requirement in self.resources or requirement in self.labels


def nodes_from_ray(raw: Iterable[dict[str, Any]]) -> list[NodeInfo]:
    """``ray.nodes()`` entries as :class:`NodeInfo`."""
    return [NodeInfo(n["NodeID"], bool(n.get("Alive")), frozenset(n.get("Resources") or {}),
                     frozenset(n.get("Labels") or {}), "node:__internal_head__" in (n.get("Resources") or {}))
            for n in raw]


def eligible(nodes: list[NodeInfo], requirement: str) -> list[NodeInfo]:
    """Alive nodes that meet a requirement (``""``: every alive node)."""
    return [n for n in nodes if n.alive and n.offers(requirement)]


def choose_node(nodes: list[NodeInfo], requirement: str, prefer: str | None = None,
                load: dict[str, int] | None = None) -> NodeInfo | None:
    """The node for a group: ``prefer`` if eligible, else the least loaded eligible node; None if none."""
    candidates = eligible(nodes, requirement)
    for node in candidates:
        if node.node_id == prefer:
            return node
    if not candidates:
        return None
    load = load or {}
    return min(candidates, key=lambda n: (load.get(n.node_id, 0), n.is_head, n.node_id))


def orchestration_node(nodes: list[NodeInfo], requirement: str | None) -> NodeInfo | None:
    """Where the run's orchestration lives (the ``archive`` runner and the ``restore`` actor that
    owns the catalog): the head node, or the node offering ``requirement`` (``ray.orchestration``;
    the head first when it offers it). Never an arbitrary worker: losing one must not stop the run."""
    if not requirement:
        return next((n for n in nodes if n.alive and n.is_head), None)
    candidates = eligible(nodes, requirement)
    return min(candidates, key=lambda n: (not n.is_head, n.node_id)) if candidates else None


def describe_nodes(nodes: list[NodeInfo]) -> str:
    """``node 1a2b3c4d (head): eu, gpu`` per alive node, for error messages."""
    parts = []
    for n in nodes:
        if n.alive:
            offered = sorted(r for r in n.resources | n.labels
                             if not r.startswith(("node:", "ray.io/")) and r not in
                             ("CPU", "GPU", "memory", "object_store_memory"))
            parts.append(f"{n.node_id[:8]}{' (head)' if n.is_head else ''}: {', '.join(offered) or '-'}")
    return "; ".join(parts) or "no alive node"


@dataclass
class Group:
    """Venues that share a requirement: one node, one pool of writer processes."""

    requirement: str
    venues: list[str] = field(default_factory=list)
    node_id: str | None = None
    lost: list[str] = field(default_factory=list)      # nodes it ran on before, lost
    waiting: bool = False                               # its node is lost and no other node qualifies

    @property
    def label(self) -> str:
        """The name part of its actors: ``any``/the requirement, ``~N`` after N moves."""
        base = self.requirement or "any"
        return f"{base}~{len(self.lost)}" if self.lost else base


def group_venues(venues: list[str], placement: dict[str, str]) -> list[Group]:
    """Venues grouped by their placement requirement, in the order given."""
    groups: dict[str, Group] = {}
    for venue in venues:
        requirement = placement.get(venue) or ANYWHERE
        groups.setdefault(requirement, Group(requirement)).venues.append(venue)
    return list(groups.values())


def shards(items: list[Any], per_shard: int, auto: int) -> list[list[Any]]:
    """``items`` in contiguous shards of at most ``per_shard`` (0: ``auto``), sizes balanced."""
    if not items:
        return []
    count = math.ceil(len(items) / (per_shard or auto))
    size = math.ceil(len(items) / count)
    return [items[i:i + size] for i in range(0, len(items), size)]
