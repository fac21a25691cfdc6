"""The ``restore`` actor on the session's real Ray cluster, in-cluster and over Ray Client."""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pytest

from actors.storage.layout import HOUR_NS, NS
from actors.remote.restore import start_restore_actor
from writer_fixtures import SYM, T0

pytestmark = pytest.mark.ray


def test_restore_actor_in_cluster_and_over_ray_client(archive, ray_session, ray_cluster):  # noqa: F811
    import ray

    actor = start_restore_actor(str(archive), None, ["binance"])
    start, end = T0 + 600 * NS, T0 + HOUR_NS + 300 * NS
    table = ray.get(actor.load.remote("binance", SYM, "trades", start, end))
    ts = table.column("ts_local").cast(pa.int64()).to_numpy()
    assert table.num_rows > 0 and ts.min() >= start and ts.max() < end
    code = f"""
import json, ray, pyarrow as pa
for attempt in range(3):   # the client server occasionally fails to spawn its per-client server
    try:
        ray.init({ray_cluster['client']!r}, namespace="tickarchive")
        break
    except ConnectionError:
        if attempt == 2:
            raise
actor = ray.get_actor("restore", namespace="tickarchive")
table = ray.get(actor.load.remote("binance", {SYM!r}, "trades", {start}, {end}))
print(json.dumps({{"rows": table.num_rows, "ids": table.column("trade_id").to_pylist()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    remote = json.loads(out.stdout.strip().splitlines()[-1])
    assert remote["rows"] == table.num_rows
    assert remote["ids"] == table.column("trade_id").to_pylist()
    ray.kill(actor)
