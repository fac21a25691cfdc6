"""One table of how each actor and task of a run is scheduled and restarted, each with its reason.

Every ``@ray.remote`` of :mod:`actors.remote` takes its options from :data:`POLICIES`, and every
placement on a node goes through :func:`on_node` (hard node affinity) or
:func:`orchestration_options` (the head, or the node named by ``ray.orchestration``).
"""
from __future__ import annotations

from typing import Any

import ray

POLICIES: dict[str, dict[str, Any]] = {
    # The run's orchestration. Restarted when its process dies; it then starts the run again
    # (writers recover their spools first). Its calls are not retried: stop() is said once.
    "runner": dict(num_cpus=0, max_restarts=-1),
    # Owns the catalog: restarted, and a call in flight is retried (every method is idempotent:
    # upserts by key, marks by key, lookups); several callers at once.
    "restore": dict(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=8),
    # Holds one venue's connections: restarted; calls are not retried (stats and stop are cheap
    # to ask again, and the feed resumes from the writers' recent trade ids after a restart).
    "socket": dict(num_cpus=0, max_restarts=-1),
    # Makes rows durable: restarted, and the write in flight is retried; a write is idempotent
    # by (producer, seq), so a retried batch is never stored twice.
    "writer": dict(num_cpus=0, max_restarts=-1, max_task_retries=-1),
    # Backs one node up: restarted; answers stats and pokes while a pass runs.
    "backup": dict(num_cpus=0, max_restarts=-1, max_concurrency=4),
    # A returned node's spools and journal, committed once: retried (recovery is idempotent).
    "hand_over": dict(num_cpus=0, max_retries=3),
    # Reading a file or a node's name on a given node: cheap, asked again by the caller.
    "fetch": dict(num_cpus=0),
}


def on_node(node_id: str | None) -> dict[str, Any]:
    """Options pinning an actor or task to one node (none when ``node_id`` is None)."""
    if node_id is None:
        return {}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)}


def orchestration_options(requirement: str | None) -> dict[str, Any]:
    """Options pinning an orchestration actor (runner, ``restore``) to its node
    (:func:`actors.remote.placement.orchestration_node`: the head, or ``ray.orchestration``'s)."""
    from actors.errors import ConfigError
    from actors.remote.placement import describe_nodes, nodes_from_ray, orchestration_node

    nodes = nodes_from_ray(ray.nodes())
    node = orchestration_node(nodes, requirement)
    if node is None:
        raise ConfigError(f"ray.orchestration={requirement}: no alive Ray node offers it (nodes: "
                          f"{describe_nodes(nodes)})" if requirement else "ray=cluster: the cluster has no alive head node")
    return on_node(node.node_id)
