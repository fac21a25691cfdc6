"""A real multi-node Ray cluster on this machine, run in its own process (the pytest process
already holds the session's Ray): ``python cluster_scenario.py '<json args>'``.

Head + three worker raylets (``ray.cluster_utils.Cluster``), each started with its own
``TICKARCHIVE_ROOT``/``TICKARCHIVE_NODE`` and a custom resource: ``a1`` and ``a2`` advertise
``venue_a`` (binance is pinned there), ``b`` advertises ``venue_b`` (bybit). The simulators run in
this driver. At ``kill_at`` seconds the node holding binance is killed (SIGKILL, no grace); at
``return_at`` a node with the same root and name joins again; then node ``b``, the only one
offering ``venue_b``, is killed (bybit waits, and says so) and comes back. The run is stopped
(``tail_s`` after the last move), then everything is checked against the simulators' truth, a restore runs
through Ray Client from a separate process, and one JSON line of figures is printed last.
Any failed check raises (non-zero exit, traceback on stderr).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "any")          # SeaweedFS accepts any key; nodes inherit them
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "any")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import boto3  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from actors.cli.config import load_settings  # noqa: E402
from actors.remote.archive import run_archive  # noqa: E402
from actors.storage.catalog import Catalog, as_ns_ints  # noqa: E402
from actors.venues import supported_venues  # noqa: E402
from archive_reading import archive_files, read_channel  # noqa: E402

NS = 10**9
BINANCE, BYBIT = ["BTCUSDT", "ETHUSDT"], ["BTCUSDT"]


def node_args(work: Path, name: str, resource: str) -> dict:
    return {"num_cpus": 1, "resources": {resource: 1},
            "env_vars": {"TICKARCHIVE_ROOT": str(work / name), "TICKARCHIVE_NODE": name}}


def rel_paths(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in archive_files(root)} if root.is_dir() else set()


def trades(roots: list[Path], venue: str, symbol: str) -> list[str]:
    ids: list[str] = []
    for root in roots:
        if archive_files(root, "trades", symbol, venue):
            ids += read_channel(root, "trades", symbol, venue).column("trade_id").to_pylist()
    return ids


def main() -> None:
    args = json.loads(sys.argv[1])
    work = Path(args["work"])
    cluster = Cluster(initialize_head=True, head_node_args={
        **node_args(work, "head", "head_node"), "include_dashboard": False,
        "ray_client_server_port": args["client_port"],
        **({} if args.get("ray_health_defaults") else      # faster node-death detection than Ray's default
           {"_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                               "health_check_failure_threshold": 3}})})
    workers = {name: cluster.add_node(**node_args(work, name, res))
               for name, res in (("a1", "venue_a"), ("a2", "venue_a"), ("b", "venue_b"))}
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="tickarchive", log_to_driver=False)
    nodes_by_id = {n.node_id: name for name, n in workers.items()}
    settings = load_settings([
        "source=sim", f"archive.binance=[{','.join(BINANCE)}]", f"archive.bybit=[{','.join(BYBIT)}]",
        *(f"archive.{v}=[]" for v in supported_venues() if v not in ("binance", "bybit")),
        "placement.binance=venue_a", "placement.bybit=venue_b", "depth=10", "storage.rollover=2s",
        "storage.seal_grace=0.5s", f"storage.root={work / 'driver'}", "source.messages_per_s=100",
        "source.record_truth=true", "socket.flush_ms=100", "socket.backoff_min_s=0.2", "socket.backoff_max_s=1",
        "backup=s3", f"backup.endpoint={args['endpoint']}",
        f"backup.bucket={args['bucket']}", f"ray.address={cluster.address}", "log.console=json"])
    seen: dict = {}
    started, result, stop = threading.Event(), {}, threading.Event()

    def archive() -> None:      # the run in a thread: Ray adds nodes only from the main thread
        try:
            result["report"] = run_archive(settings, stop_flag=stop,
                                           on_started=lambda runs: (seen.update(runs=runs), started.set()))
        finally:
            started.set()
    thread = threading.Thread(target=archive)
    thread.start()
    started.wait(300)
    runs = seen["runs"]
    binance = next(r for r in runs if r.spec.name == "binance")
    seen["placed"] = {r.spec.name: nodes_by_id.get(r.node_id) for r in runs}
    time.sleep(args["kill_at"])
    victim = nodes_by_id[binance.node_id]
    seen["victim"], seen["kill_ns"] = victim, time.time_ns()
    cluster.remove_node(workers[victim], allow_graceful=False)
    deadline = time.monotonic() + 60
    while binance.node_id == workers[victim].node_id and time.monotonic() < deadline:
        time.sleep(0.1)
    seen["moved_after_s"] = (time.time_ns() - seen["kill_ns"]) / NS
    seen["moved_to"] = nodes_by_id.get(binance.node_id)
    time.sleep(max(0.0, args["return_at"] - args["kill_at"] - seen["moved_after_s"]))
    workers[victim] = cluster.add_node(**node_args(work, victim, "venue_a"))
    seen["returned_ns"] = time.time_ns()
    # node b is the only one offering venue_b: bybit waits (and says so) until b is back
    bybit = next(r for r in runs if r.spec.name == "bybit")
    time.sleep(1.0)
    seen["b_kill_ns"] = time.time_ns()
    cluster.remove_node(workers["b"], allow_graceful=False)
    deadline = time.monotonic() + 60
    while not bybit.waiting and time.monotonic() < deadline:
        time.sleep(0.1)
    seen["bybit_waiting"] = bybit.waiting
    time.sleep(1.0)
    workers["b"] = cluster.add_node(**node_args(work, "b", "venue_b"))
    seen["b_returned_ns"] = time.time_ns()
    deadline = time.monotonic() + 60
    while bybit.node_id != workers["b"].node_id and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(args["tail_s"])          # rows after both nodes came back
    stop.set()                          # a simulator run stopped by the flag seals everything
    thread.join()
    report = result["report"]
    runs = {r.spec.name: r for r in seen["runs"]}
    roots = {name: work / name for name in ("head", "a1", "a2", "b")}
    victim, survivor = seen["victim"], ({"a1", "a2"} - {seen["victim"]}).pop()

    # placement: each venue on its own kind of node, and binance moved to the other venue_a node
    assert seen["placed"]["bybit"] == "b" and seen["placed"]["binance"] == victim, seen["placed"]
    assert seen["moved_to"] == survivor and len(report.moves) == 2, report.moves
    assert [m["venues"] for m in report.moves] == [["binance"], ["bybit"]]
    assert "waiting for a node with 'venue_b'" in seen["bybit_waiting"], seen["bybit_waiting"]
    # per-node roots: every node's files were written on that node, nothing anywhere else
    files = {name: rel_paths(root) for name, root in roots.items()}
    assert not files["head"] and not rel_paths(work / "driver"), "files written off their venue's nodes"
    assert files["b"] and all(r.startswith("bybit/") for r in files["b"])
    assert files[victim] and files[survivor] and all(r.startswith("binance/") for r in files[victim] | files[survivor])
    all_files = [r for name in files for r in files[name]]
    assert len(all_files) == len(set(all_files)), "one key written on two nodes"
    # one catalog, on the head, lists every node's files with the node that wrote them
    catalog = as_ns_ints(Catalog(str(roots["head"])).all()).to_pylist()
    assert {r["key"] for r in catalog} == set(all_files)
    assert {r["node"] for r in catalog if r["exchange"] == "bybit"} == {"b"}
    assert {r["node"] for r in catalog if r["key"] in files[victim]} == {victim}
    # each node's backup actor uploaded its node's files to the bucket, verified and marked
    s3 = boto3.client("s3", endpoint_url=args["endpoint"], region_name="us-east-1",
                      aws_access_key_id="any", aws_secret_access_key="any")
    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args["bucket"])
            for o in page.get("Contents", [])}
    assert set(all_files) <= keys, sorted(set(all_files) - keys)[:5]
    assert report.ok and all(r["backed_up_at"] for r in catalog), report.backup
    # bybit: its only node lost and back: a gap, nothing acknowledged before lost, nothing doubled
    bybit_truth = {f"{t.trade_id:08x}-sim": t for t in runs["bybit"].server.truth("BTCUSDT").trades}
    bybit_ids = trades([roots["b"]], "bybit", "BTCUSDT")
    assert len(bybit_ids) == len(set(bybit_ids)) and set(bybit_ids) <= set(bybit_truth)
    before_b = {i for i, t in bybit_truth.items() if t.sent_ns < seen["b_kill_ns"] - NS}
    after_b = {i for i, t in bybit_truth.items() if t.sent_ns > report.moves[1]["at_ns"] + 2 * NS}
    assert before_b and not before_b - set(bybit_ids), f"{len(before_b - set(bybit_ids))} bybit trades lost"
    assert after_b and not after_b - set(bybit_ids), "bybit trades after its node came back missing"
    assert [e for e in read_channel(roots["b"], "events", "BTCUSDT", "bybit").to_pylist()
            if e["kind"] == "gap" and e["ts_local"] >= seen["b_kill_ns"]], "no bybit gap event"
    # binance: a gap after the kill; everything sent a second before it present exactly once
    kill_ns, figures = seen["kill_ns"], {}
    for symbol in BINANCE:
        ids = trades([roots[victim], roots[survivor]], "binance", symbol)
        doubled = [i for i, n in Counter(ids).items() if n > 1]
        assert not doubled, f"{symbol}: doubled trades {doubled[:5]}"
        truth = {str(t.trade_id): t for t in runs["binance"].server.truth(symbol).trades}
        before = {i for i, t in truth.items() if t.sent_ns < kill_ns - NS}
        after = {i for i, t in truth.items() if t.sent_ns > seen["returned_ns"] + 2 * NS}
        assert before and not before - set(ids), f"{symbol}: {len(before - set(ids))} acknowledged trades lost"
        assert after and not after - set(ids), f"{symbol}: trades after the move missing"
        events = read_channel(roots[survivor], "events", symbol, "binance").to_pylist()
        gaps = [e for e in events if e["kind"] == "gap" and e["ts_local"] >= kill_ns]
        assert gaps, f"{symbol}: no gap event after the kill"
        figures[symbol] = {"trades": len(ids), "sent_before_kill": len(before),
                           "lost_in_gap": len(set(truth) - set(ids))}
    assert report.handed_over.get("calls", 0) > 0, report.handed_over
    assert not list((roots[victim] / ".spool").rglob("*.spool")), "the returned node's spool was not sealed"
    # a restore through Ray Client, from another process, of streams written on node b: its books
    # from the bucket, its trades (made "sealed, not backed up yet") copied from node b itself
    from actors.remote.catalog import RemoteCatalog
    trade_keys = sorted(r for r in files["b"] if "/trades/" in r)
    for key in trade_keys:
        s3.delete_object(Bucket=args["bucket"], Key=key)
    unbacked = [dict(row, backed_up_at=None, backup_sha256=None) for row in RemoteCatalog().get_many(trade_keys).values()]
    RemoteCatalog().upsert(unbacked)
    client_code = f"""
import json, ray
ray.init("ray://127.0.0.1:{args['client_port']}", namespace="tickarchive")
restore = ray.get_actor("restore", namespace="tickarchive")
trades = ray.get(restore.load.remote("bybit", "BTCUSDT", "trades", 0, 2**62))
books = ray.get(restore.load.remote("bybit", "BTCUSDT", "l2book", 0, 2**62, 10))
print(json.dumps([sorted(trades.column("trade_id").to_pylist()), books.num_rows]))
"""
    for _ in range(3):      # Ray Client's per-client server start fails now and then on a loaded machine
        client = subprocess.run([sys.executable, "-c", client_code], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        if client.returncode == 0 or not any(text in client.stderr for text in (
                "Starting Ray client server failed", "Initialization failure from server")):
            break
        time.sleep(2.0)
    assert client.returncode == 0, client.stderr[-2000:]
    restored, book_rows = json.loads(client.stdout.strip().splitlines()[-1])
    assert restored == sorted(trades([roots["b"]], "bybit", "BTCUSDT")) and restored
    assert book_rows == read_channel(roots["b"], "l2book", "BTCUSDT", "bybit").num_rows > 0
    assert set(trade_keys) <= rel_paths(roots["head"]), "trades not copied from node b"
    # mode=status with ray=cluster, from another process: the whole cluster's coverage
    hour = time.strftime("%Y-%m-%d:%H", time.gmtime(time.time() - 3600)), time.strftime("%Y-%m-%d:%H", time.gmtime(time.time() + 3600))
    status = subprocess.run([sys.executable, "launch.py", "mode=status", "ray=cluster", f"ray.address={cluster.address}",
                             f"storage.root={work / 'status'}", "restore.exchange=bybit", "restore.symbol=BTCUSDT",
                             f"restore.start={hour[0]}", f"restore.end={hour[1]}"],
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    status_rows = sum(int(line.split()[3]) for line in status.stdout.splitlines() if "/trades/" in line or
                      line.split()[:1] and "trades" in line.split()[0])
    assert status_rows == len(restored), status.stdout[-2000:]
    print(json.dumps({"moved_after_s": round(seen["moved_after_s"], 2), "moves": len(report.moves),
                      "bybit_lost_in_gap": len(set(bybit_truth) - set(bybit_ids)),
                      "handed_over": report.handed_over, "files": {k: len(v) for k, v in files.items()},
                      "restored_rows": len(restored), "binance": figures, "summary": report.summary()}))
    ray.kill(ray.get_actor("restore", namespace="tickarchive"))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
