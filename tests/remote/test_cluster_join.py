"""ray=cluster against a real token-authenticated head (`ray start --head`, its own ports and HOME):
a missing or wrong token is one line at once; with the token a detached run outlives its shell
and mode=stop ends it."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from archive_reading import archive_files
from conftest import REPO, free_port

pytestmark = pytest.mark.ray


@pytest.fixture()
def token_head(tmp_path):
    """A head node with token authentication and a dashboard, on free loopback ports."""
    token = secrets.token_hex(32)
    gcs, dash = free_port(), free_port()
    env = {**os.environ, "HOME": str(tmp_path / "head-home"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    log = open(tmp_path / "head.log", "w")
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "ray") if (REPO / ".venv").exists() else os.path.join(os.path.dirname(sys.executable), "ray"),
         "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
         "--runtime-env-agent-port=0", "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.time() + 90
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", dash)) == 0:
                break
        assert proc.poll() is None and time.time() < deadline, open(tmp_path / "head.log").read()[-2000:]
        time.sleep(0.5)
    yield {"address": f"127.0.0.1:{gcs}", "dashboard_port": dash, "token": token}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def launch(tmp_path, head, *overrides, token=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(tmp_path / "client-home"), PYTHONPATH=str(REPO), **({"RAY_AUTH_TOKEN": token} if token else {}))
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "launch.py", "ray=cluster", f"ray.address={head['address']}",
                           f"ray.dashboard_port={head['dashboard_port']}", *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc, time.monotonic() - t


def test_token_errors_are_one_line_and_a_detached_run_stops_cleanly(tmp_path, token_head):
    root = tmp_path / "archive"
    sim = ["source=sim", "archive.binance=[BTCUSDT]", "archive.bybit=[]", "archive.hyperliquid=[]",
           "storage.rollover=1s", "storage.seal_grace=0.2s", f"storage.root={root}", "source.messages_per_s=50"]
    missing, seconds = launch(tmp_path, token_head, *sim)
    assert missing.returncode == 2 and seconds < 15, (seconds, missing.stderr[-1500:])
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()] and "requires a token" in missing.stderr
    wrong, _ = launch(tmp_path, token_head, *sim, token="0" * 64)
    assert wrong.returncode == 2 and "refused this machine's token" in wrong.stderr.strip(), wrong.stderr[-1500:]
    started, _ = launch(tmp_path, token_head, *sim, "ray.detach=true", token=token_head["token"])
    assert started.returncode == 0 and "mode=stop" in started.stdout, started.stderr[-3000:]
    deadline = time.monotonic() + 60            # the launching process is gone; the run goes on
    while len(archive_files(root, "trades")) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(archive_files(root, "trades")) >= 3
    stopped, _ = launch(tmp_path, token_head, "mode=stop", f"storage.root={root}", token=token_head["token"])
    assert stopped.returncode == 0 and stopped.stdout.startswith("archived "), stopped.stderr[-3000:]
    assert not list((root / ".spool").rglob("*.spool"))          # a sim run seals everything when stopped
    again, _ = launch(tmp_path, token_head, "mode=stop", f"storage.root={root}", token=token_head["token"])
    assert again.returncode == 2 and "no detached archive run" in again.stderr
