"""Tested the way users deploy (README "Run on a cluster"): every command a separate OS process.

``ray get-auth-token --generate`` and ``ray start --head`` (token authentication on), three
``ray start --address=...`` workers with the head's token in their environment, each with its own
``TICKARCHIVE_ROOT``/``TICKARCHIVE_NODE`` and resource (``asia`` twice, ``us``), then
``launch.py ray=cluster ray.detach=true`` with binance pinned to ``asia`` and bybit to ``us``.
A ``kill -9`` of the us node's raylet must not stop binance; ``mode=status ray=cluster`` answers;
a ``kill -9`` of the asia worker that runs binance (a worker, as the run's orchestration used to
be) moves binance to the other asia node and archiving goes on; a Ray Client restore from
another process returns exactly the rows of the files sealed there; ``mode=stop ray=cluster``
ends the run and the catalog lists every file of the surviving nodes.

This test runs its own cluster (not the session's Ray fixture), with its own ports and temp dir,
and kills exactly its own processes at the end (:mod:`deploy_cluster`).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from archive_reading import archive_files, read_channel
from deploy_cluster import DeployCluster

from actors.storage.catalog import Catalog
from actors.storage.layout import parse_relpath
from actors.venues import supported_venues

pytestmark = [pytest.mark.ray]

NS = 10**9
ROLLOVER_S = 2
RUN = ["source=sim", "placement.binance=asia", "placement.bybit=us", "archive.binance=[BTCUSDT]",
       "archive.bybit=[BTCUSDT]", *(f"archive.{v}=[]" for v in supported_venues() if v not in ("binance", "bybit")),
       f"storage.rollover={ROLLOVER_S}s", "storage.seal_grace=0.5s", "depth=10", "source.messages_per_s=20",
       "socket.backoff_min_s=0.2", "socket.backoff_max_s=1", "log.console=plain"]

RESTORE_CLIENT = """
import json, sys, ray
ray.init("ray://127.0.0.1:%d", namespace="tickarchive")
restore = ray.get_actor("restore", namespace="tickarchive")
start, end = int(sys.argv[1]), int(sys.argv[2])
table = ray.get(restore.load.remote("binance", "BTCUSDT", "trades", start, end))
print(json.dumps(sorted(table.column("trade_id").to_pylist())))
"""


def sealed(root: Path, exchange: str | None = None) -> dict[str, int]:
    """Sealed files under a node's root: relative key -> period start (ns)."""
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): parse_relpath(p.relative_to(root).as_posix()).period_start_ns
            for p in archive_files(root, exchange=exchange)}


def wait_for(what: str, check, timeout_s: float = 60.0, every_s: float = 0.5):
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for {what}"
        time.sleep(every_s)


def catalog_keys(root: Path, node: str | None = None) -> set[str]:
    """Keys the cluster's catalog (LanceDB under the head's root) lists, of one node if given."""
    return {r["key"] for r in Catalog(root).rows() if node is None or r["node"] == node}


def test_readme_cluster_commands_survive_worker_loss(tmp_path):
    cluster = DeployCluster(tmp_path)
    t0 = time.monotonic()
    clock: dict[str, float] = {}

    def mark(event: str) -> None:
        clock[event] = round(time.monotonic() - t0, 1)
        print(f"[{clock[event]:6.1f}s] {event}", flush=True)
    try:
        cluster.start_head({"archive_head": 1})
        cluster.add_workers({"asia-1": {"asia": 1}, "asia-2": {"asia": 1}, "us-1": {"us": 1}})
        cluster.resolve_node_ids()
        mark("cluster up (head + 3 workers, token auth)")
        head_root = cluster.nodes["head"].root
        # token auth is on: a shell without the head's token is told so in one line
        refused = cluster.launch(*RUN, "ray.detach=true", env=cluster.base_env(tmp_path / "home-stranger"), timeout=60)
        assert refused.returncode == 2 and "requires a token and none is set here" in refused.stderr, refused.stderr

        started = cluster.launch(*RUN, "ray.detach=true")
        assert started.returncode == 0, started.stderr[-4000:]
        assert "detached actor 'archive'" in started.stdout, started.stdout
        mark("launch.py ray=cluster ray.detach=true returned")

        actors = {a["name"]: a for a in cluster.state("actors") if a.get("state") == "ALIVE" and a.get("name")}
        placed = {name: cluster.node_of(actors[name]["node_id"]) for name in ("archive", "restore",
                                                                             "socket:asia:0", "socket:us:0")}
        print("placement:", placed)
        # the run's orchestration lives on the head: on a worker, that worker's loss would end the run
        assert placed["restore"] == "head" and placed["archive"] == "head", \
            f"orchestration off the head ({placed}): losing that worker would end the whole run"
        assert placed["socket:us:0"] == "us-1" and placed["socket:asia:0"] in ("asia-1", "asia-2"), placed
        first_asia = placed["socket:asia:0"]
        other_asia = ({"asia-1", "asia-2"} - {first_asia}).pop()
        for name in (first_asia, "us-1"):
            wait_for(f"a first sealed file on {name}", lambda: sealed(cluster.nodes[name].root), 60)
        mark("first files sealed on both venues' nodes")

        def binance_sealed_after(node: str, since_s: float) -> set[str]:
            """binance files of ``node`` whose period began after ``since_s``, once all are catalogued."""
            new = {k for k, start in sealed(cluster.nodes[node].root, "binance").items() if start > since_s * NS}
            return new if new and new <= catalog_keys(head_root, node) else set()

        # 1. the node running bybit dies: binance goes on sealing on its node, status answers
        killed_us = cluster.kill_raylet("us-1")
        mark("kill -9 raylet of us-1 (bybit)")
        new_binance = wait_for("binance files sealed (and catalogued) after the us node's death",
                               lambda: binance_sealed_after(first_asia, killed_us), 45)
        mark(f"binance sealed {len(new_binance)} file(s) on {first_asia} after the kill")
        hours = [time.strftime("%Y-%m-%d:%H", time.gmtime(time.time() + d)) for d in (-3600, 3600)]
        status = cluster.launch_in_background("mode=status", "restore.exchange=binance", "restore.symbol=BTCUSDT",
                                              f"restore.start={hours[0]}", f"restore.end={hours[1]}")
        overview = cluster.launch_in_background("mode=status")

        # 2. a worker holding a venue dies (where the run's runner could have lived): binance moves on
        killed_asia = cluster.kill_raylet(first_asia)
        mark(f"kill -9 raylet of {first_asia} (binance)")
        moved = wait_for(f"binance files sealed on {other_asia} after {first_asia}'s death",
                         lambda: binance_sealed_after(other_asia, killed_asia), 60)
        mark(f"binance sealed {len(moved)} file(s) on {other_asia}")
        runner = cluster.actor("archive")
        assert runner["state"] == "ALIVE" and cluster.node_of(runner["node_id"]) == "head", runner
        out, err = status.communicate(timeout=120)
        assert status.returncode == 0, err[-3000:]
        streams = {line.split()[0]: int(line.split()[3]) for line in out.splitlines() if line.startswith("binance/")}
        assert {"binance/perp/trades/BTCUSDT", "binance/perp/l2book/BTCUSDT_depth10"} <= set(streams), out
        assert streams["binance/perp/l2book/BTCUSDT_depth10"] > 0, out
        out, err = overview.communicate(timeout=120)      # every stream of the cluster, from its catalog
        assert overview.returncode == 0, err[-3000:]
        listed = {line.split()[0] for line in out.splitlines() if line.startswith(("binance/", "bybit/"))}
        assert listed == {f"{v}/perp/{c}" for v in ("binance", "bybit")
                          for c in ("l2book/BTCUSDT_depth10", "trades/BTCUSDT")}, out
        mark("mode=status ray=cluster answered (one stream, and every stream)")

        # 3. a Ray Client restore from another process: the rows of the files sealed on the survivor
        wait_for(f"a binance trades file sealed on {other_asia}",     # books may seal before the first trades file
                 lambda: any("/trades/" in k for k in sealed(cluster.nodes[other_asia].root, "binance")), 60)
        survivor = sealed(cluster.nodes[other_asia].root, "binance")
        trade_files = sorted(k for k in survivor if "/trades/" in k)
        start_ns = min(survivor[k] for k in trade_files)
        end_ns = max(survivor[k] for k in trade_files) + ROLLOVER_S * NS
        truth = sorted(read_channel(cluster.nodes[other_asia].root, "trades", "BTCUSDT", "binance")
                       .column("trade_id").to_pylist())
        for _ in range(3):     # Ray Client's per-client server start fails now and then on a loaded machine
            client = cluster.run([sys.executable, "-c", RESTORE_CLIENT % cluster.client_port, str(start_ns),
                                  str(end_ns)], cluster.client_env(), timeout=120)
            if client.returncode == 0 or not any(text in client.stderr for text in (
                    "Starting Ray client server failed", "Initialization failure from server")):
                break
            time.sleep(2.0)
        assert client.returncode == 0, client.stderr[-3000:]
        restored = json.loads(client.stdout.strip().splitlines()[-1])
        assert truth and restored == truth, (len(restored), len(truth))
        mark(f"Ray Client restore returned {len(restored)} binance trades")

        # 4. mode=stop: the run ends, and every file of the surviving nodes is in the catalog
        stopped = cluster.launch("mode=stop", timeout=240)
        assert stopped.returncode == 0, (stopped.stdout[-2000:], stopped.stderr[-4000:])
        print("mode=stop:", stopped.stdout.strip())
        mark("mode=stop ray=cluster returned")
        files = set(sealed(cluster.nodes[other_asia].root))
        listed = catalog_keys(head_root, other_asia)
        assert files and files == listed, (sorted(files - listed)[:5], sorted(listed - files)[:5])
        assert set(sealed(head_root)) <= catalog_keys(head_root), "files on the head the catalog does not list"
    finally:
        killed = cluster.cleanup()
        mark(f"cleanup: {len(killed)} processes of this cluster killed")
        print("timings:", json.dumps({**cluster.timings, **clock}))
    assert not cluster.leftovers(), "processes of the test cluster survived the cleanup"
