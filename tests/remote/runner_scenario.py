"""A detached run on a head + two workers (in a subprocess; see test_cluster.py): the runner and the
catalog's owner live on the head; the runner's process is killed and Ray restarts it, which takes
the run back; a worker dies and the other venue goes on sealing; mode=status ray=cluster says
what the orchestration is doing; mode=stop ends the run and the catalog lists every file."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from actors.cli.config import load_settings
from actors.remote.runner import ARCHIVE, run_state, start_detached, stop_detached
from actors.storage.catalog import Catalog, as_ns_ints
from actors.storage.layout import NS
from actors.venues import supported_venues
from cluster_scenario import node_args, rel_paths

REPO = Path(__file__).resolve().parents[2]


def sealed_since(root: Path, since_ns: int, exchange: str) -> int:
    """Files of ``exchange`` the cluster's catalog (on the head) lists as sealed after ``since_ns``."""
    rows = as_ns_ints(Catalog(str(root)).all()).to_pylist()
    return sum(1 for r in rows if r["exchange"] == exchange and r["sealed_at"] > since_ns)


def wait_for(condition, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.25)
    return time.monotonic() - started


def main() -> None:
    args = json.loads(sys.argv[1])
    work = Path(args["work"])
    cluster = Cluster(initialize_head=True, head_node_args={
        **node_args(work, "head", "head_node"), "include_dashboard": False,
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                           "health_check_failure_threshold": 3}})
    workers = {name: cluster.add_node(**node_args(work, name, res)) for name, res in (("a", "venue_a"), ("b", "venue_b"))}
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="tickarchive", log_to_driver=False)
    head_id = ray.get_runtime_context().get_node_id()
    common = [f"ray.address={cluster.address}", f"storage.root={work / 'driver'}"]
    settings = load_settings([
        "source=sim", "archive.binance=[BTCUSDT]", "archive.bybit=[BTCUSDT]",
        *(f"archive.{v}=[]" for v in supported_venues() if v not in ("binance", "bybit")),
        "placement.binance=venue_a", "placement.bybit=venue_b", "storage.rollover=2s", "storage.seal_grace=0.5s",
        "source.messages_per_s=50", "socket.backoff_min_s=0.2", "socket.backoff_max_s=1", "ray.detach=true",
        "log.console=json", *common])
    figures: dict = {}
    head_root = work / "head"
    try:
        start_detached(settings)
        runner = ray.get_actor(ARCHIVE, namespace="tickarchive")
        first = ray.get(runner.status.remote(), timeout=30)
        assert first["node"] == head_id and not first["restarted"], first   # the orchestration is on the head
        restore = ray.get_actor("restore", namespace="tickarchive")
        restore_node = ray.get(restore.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
        assert restore_node == head_id, restore_node                       # the catalog's owner too
        wait_for(lambda: sealed_since(head_root, 0, "binance") > 0 and sealed_since(head_root, 0, "bybit") > 0,
                 60, "first files of both venues")

        # the runner's process dies: Ray restarts it on the head, and it takes the run back
        kill_ns = time.time_ns()
        os.kill(first["pid"], signal.SIGKILL)
        figures["resumed_after_s"] = wait_for(
            lambda: sealed_since(head_root, kill_ns + NS, "binance") > 0 and sealed_since(head_root, kill_ns + NS,
                                                                                          "bybit") > 0,
            90, "files sealed by the restarted run")
        again = ray.get(runner.status.remote(), timeout=30)
        assert again["restarted"] and again["node"] == head_id and again["pid"] != first["pid"], again
        assert "restarted by Ray" in run_state(), run_state()

        # worker b (bybit's only node) dies: binance goes on sealing on node a
        loss_ns = time.time_ns()
        cluster.remove_node(workers["b"], allow_graceful=False)
        figures["binance_after_loss_s"] = wait_for(
            lambda: sealed_since(head_root, loss_ns + 2 * NS, "binance") >= 2, 60, "binance files after b's loss")
        status = subprocess.run([sys.executable, "launch.py", "mode=status", "ray=cluster",
                                 f"ray.address={cluster.address}", f"storage.root={work / 'status'}"], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr[-2000:]
        assert "archiver: running on node" in status.stdout and "binance/perp/trades/BTCUSDT" in status.stdout, \
            status.stdout[-2000:]

        ok, summary = stop_detached(settings)
        figures["summary"] = summary
        assert ok or "bybit" in summary, summary            # bybit's node never came back: said, not hidden
        try:
            ray.get_actor(ARCHIVE, namespace="tickarchive")
            raise AssertionError("the runner is still there after mode=stop")
        except ValueError:
            pass
        catalog = {r["key"] for r in as_ns_ints(Catalog(str(head_root)).all()).to_pylist()}
        on_a = rel_paths(work / "a")
        assert on_a and on_a <= catalog, sorted(on_a - catalog)[:5]     # every file of the surviving worker
        figures["files_on_a"] = len(on_a)
        print(json.dumps(figures))
    finally:
        for name in ("restore", ARCHIVE):
            try:
                ray.kill(ray.get_actor(name, namespace="tickarchive"), no_restart=True)
            except Exception:
                pass
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
