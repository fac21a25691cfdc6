"""Node loss during a run: :class:`NodeWatch`, called by the driver's supervision loop.

* A group whose node is dead (``ray.nodes()``) moves to another eligible node: its old socket
  and writer actors are killed, new ones start there (names ``...~N`` after N moves), and the
  new sockets record a ``gap`` event per symbol (rows received but not acknowledged on the lost
  node are gone; everything acknowledged is in its spools). A node backup actor is started
  there too. With no eligible node the group waits (logged once, shown in the status line as
  ``waiting``) and starts as soon as one joins.
* A node that joins after a loss runs :func:`actors.remote.writer.hand_over_spools`: the
  spools it holds for streams now written elsewhere are handed, call by call with their
  original producer and sequence numbers, to the current writers (exactly once), then deleted.
  A lost node restarted with the same ``TICKARCHIVE_ROOT`` thus gets its acknowledged rows
  sealed. The driver waits for hand-overs in progress before the final seal.
"""
from __future__ import annotations

import time
from typing import Any

import ray

from actors.logs import get_logger
from actors.remote.placement import Group, choose_node, nodes_from_ray

log = get_logger("app")


class NodeWatch:
    """Follows node deaths and arrivals for one run (see module docstring)."""

    def __init__(self, settings: Any, groups: list[Group], runs: list[Any], every_s: float = 2.0) -> None:
        self.settings, self.groups, self.every_s = settings, groups, every_s
        self.runs = {run.spec.name: run for run in runs}
        self.services: Any = None
        self.known = {n.node_id for n in nodes_from_ray(ray.nodes()) if n.alive}
        self.handovers: list[Any] = []
        self.last = time.monotonic()

    def check(self, report: Any) -> None:
        """Move groups off dead nodes; hand over spools on nodes that joined (at most every ``every_s``)."""
        if time.monotonic() - self.last < self.every_s:
            return
        self.last = time.monotonic()
        nodes = nodes_from_ray(ray.nodes())
        alive = {n.node_id for n in nodes if n.alive}
        for group in self.groups:
            if group.node_id not in alive:
                self._move(group, nodes, report)
        for node_id in sorted(alive - self.known):
            self._hand_over(node_id)
        self.known |= alive

    def _move(self, group: Group, nodes: list[Any], report: Any) -> None:
        from actors.remote.starting import start_sockets, start_writers

        runs = [self.runs[v] for v in group.venues]
        load: dict[str, int] = {}
        for other in self.groups:
            load[other.node_id] = load.get(other.node_id, 0) + 1
        node = choose_node(nodes, group.requirement, load=load)
        if node is None:
            if not group.waiting:
                log.error(f"node {str(group.node_id)[:8]} lost: {', '.join(group.venues)} waiting for a node "
                          f"advertising {group.requirement!r}")
                group.waiting = True          # the runs' ``waiting`` says so (VenueRun reads its group)
            return
        for run in runs:
            for handle in [*run.sockets.values(), *run.writers.values()]:
                try:
                    ray.kill(handle, no_restart=True)
                except Exception:     # already gone with its node
                    pass
            run.sockets, run.writers, run.writer_of = {}, {}, {}
        if str(group.node_id) not in group.lost:
            group.lost.append(str(group.node_id))
        old, group.node_id, group.waiting = group.node_id, node.node_id, False
        start_writers(self.settings, group.label, runs, node.node_id)
        start_sockets(self.settings, group.label, runs, node.node_id, resumed=True)
        self._backup_on(node.node_id, lost=old)
        report.moves.append({"venues": list(group.venues), "from": old, "to": node.node_id, "at_ns": time.time_ns()})
        log.warning(f"node {str(old)[:8]} lost: {', '.join(group.venues)} moved to node {node.node_id[:8]} "
                    "(gap recorded; its spools are handed over when it comes back)")

    def _backup_on(self, node_id: str, lost: str | None = None) -> None:
        """A backup actor on ``node_id`` (none for the ``lost`` node any more), when a bucket is set."""
        if self.services is None or not self.services.backups:
            return
        self.services.backups.pop(lost, None)
        if node_id in self.services.backups:
            return
        from actors.remote.starting import backup_section
        from actors.remote.backup import start_backup_actor

        here = ray.get_runtime_context().get_node_id()
        self.services.backups[node_id] = start_backup_actor(self.settings.root, backup_section(self.settings),
                                                            self.settings.log_level, node_id=node_id,
                                                            driver_node=node_id == here)

    def _hand_over(self, node_id: str) -> None:
        from actors.remote.options import on_node
        from actors.remote.writer import hand_over_spools

        streams = [(venue, self.runs[venue].spec.market, symbol, self.runs[venue].writer_of[symbol])
                   for group in self.groups if group.lost and group.node_id != node_id
                   for venue in group.venues for symbol in self.runs[venue].writer_of]
        if not streams:
            return
        log.info(f"node {node_id[:8]} joined: handing its unsealed spools of {len(streams)} moved stream(s) over")
        self._backup_on(node_id)         # it may hold files sealed before it was lost
        self.handovers.append(hand_over_spools.options(**on_node(node_id)).remote(
            self.settings.root, streams, self.settings.depth, self.settings.rollover_ns))

    def finish(self, timeout_s: float = 300.0, report: Any = None) -> dict[str, int]:
        """Wait for the hand-overs in progress; their totals (calls, rows)."""
        total = {"streams": 0, "calls": 0, "rows": 0}
        for ref in self.handovers:
            try:
                for key, value in ray.get(ref, timeout=timeout_s).items():
                    total[key] = total.get(key, 0) + value
            except Exception as exc:
                log.error(f"spool hand-over failed (the spools stay on their node): {exc}")
        self.handovers = []
        if total["calls"]:
            log.info(f"handed over {total['calls']} call(s), {total['rows']} rows from returning nodes' spools")
        return total
