"""Shared fixtures: one Ray instance per test session (with a Ray Client port), loopback only."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")   # local test cluster: no token files
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "real"      # real recorded traffic (provenance: README.md there)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3fixtures import bucket_target, seaweed  # noqa: E402,F401  (fixtures)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real single-node Ray cluster on loopback (``ray start --head``) with a Ray Client port.

    Started once per session in its own process group and stopped with it. Yields
    ``{"address": "127.0.0.1:<gcs>", "client": "ray://127.0.0.1:<port>"}``.
    """
    gcs, client, metrics = free_port(), free_port(), free_port()
    ray_bin = Path(sys.executable).parent / "ray"
    logs = tmp_path_factory.mktemp("ray") / "ray-start.log"
    with open(logs, "w") as out:
        proc = subprocess.Popen(
            [str(ray_bin), "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
             f"--ray-client-server-port={client}", "--num-cpus=4", "--include-dashboard=false",
             "--disable-usage-stats", f"--metrics-export-port={metrics}",
             '--system-config={"metrics_report_interval_ms": 1000}'],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))
    info = {"address": f"127.0.0.1:{gcs}", "client": f"ray://127.0.0.1:{client}", "log": str(logs),
            "metrics": f"http://127.0.0.1:{metrics}/metrics"}
    deadline = time.time() + 90
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", client)) == 0:
                break
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"ray start failed: {open(logs).read()[-2000:]}")
        time.sleep(0.5)
    yield info
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def ray_session(ray_cluster):
    """This process connected to the session's Ray cluster as a driver."""
    import ray

    ray.init(address=ray_cluster["address"], namespace="tickarchive", log_to_driver=True,
             configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def binance_recording() -> Path:
    path = FIXTURES / "binance-usdm" / "btcusdt_20240808.gz"
    assert path.is_file(), f"missing fixture {path}"
    return path


@pytest.fixture()
def archive(tmp_path):
    """Three hours of trades and books, one row every 2 s, sealed hourly."""
    from actors.storage.layout import NS
    from writer_fixtures import T0, call_batches, make_core

    core = make_core(tmp_path, rollover_s=3600)
    seq = 0
    for i in range(3 * 60):
        seq += 1
        core.write("p1", seq, call_batches(i * 30, 30, T0 + i * 60 * NS, step_ns=2 * NS))
    core.seal_all()
    return tmp_path


@pytest.fixture(scope="session")
def real_archive(tmp_path_factory):
    """The real Binance recording's rows (6,547 depth-20 books, 21,313 trades, hour 2024-08-08:23) sealed
    into an archive by the real writer core, as the archiver writes them (no Ray): its root folder."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from actors.storage.catalog import Catalog
    from actors.storage.layout import NS
    from actors.storage.writer import SymbolStore
    from bench.recorded import SYMBOL, recorded_batches

    root = tmp_path_factory.mktemp("real-archive")
    core = SymbolStore(str(root), "binance", "perp", [SYMBOL], 20, 3600 * NS, "w1", Catalog(str(root)),
                            node="test")
    core.recover()
    batches = recorded_batches()
    events = batches[(SYMBOL, "events")]          # the replay's connect is stamped 0: keep the recorded ones
    batches[(SYMBOL, "events")] = events.filter(pc.greater(events.column("ts_local").cast(pa.int64()), 0))
    core.write("replay", 1, batches)
    core.seal_all()
    return root
