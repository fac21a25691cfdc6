"""Several Ray nodes on this machine (head + three raylets, in a subprocess: this process holds the
session's Ray): venues pinned by custom resource, per-node roots and backups, one catalog,
a node killed and returning, a restore over Ray Client. The checks are in cluster_scenario.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, free_port

pytestmark = [pytest.mark.ray, pytest.mark.s3]


def test_cluster_placement_per_node_roots_node_loss_and_client_restore(tmp_path, bucket_target):
    args = {"work": str(tmp_path), "endpoint": bucket_target.endpoint, "bucket": bucket_target.bucket,
            "client_port": free_port(), "tail_s": 5, "kill_at": 4, "return_at": 8}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("cluster_scenario.py")), json.dumps(args)],
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-6000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(figures, indent=1))
    assert figures["moves"] == 2 and figures["handed_over"]["calls"] > 0 and figures["restored_rows"] > 0


def test_detached_run_orchestration_on_the_head_survives_its_process_and_a_worker(tmp_path):
    """The runner and the catalog's owner live on the head; the runner's process killed: Ray restarts
    it and the run goes on; a worker lost: the other venue goes on; status says so; stop ends it."""
    args = {"work": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("runner_scenario.py")), json.dumps(args)],
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-6000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(figures, indent=1))
    assert figures["files_on_a"] > 0
