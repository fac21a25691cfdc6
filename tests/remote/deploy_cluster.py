"""A Ray cluster started the way README "Run on a cluster" tells users to: ``ray get-auth-token
--generate``, ``ray start --head`` and ``ray start --address=...`` workers as separate OS processes,
token authentication on, each node with its own ``TICKARCHIVE_ROOT``/``TICKARCHIVE_NODE`` and
resources. Loopback only, every port free-picked, Ray's temp dir and ``HOME`` (where the token
lives) under the test's tmp dir: nothing touches ``~/.ray`` or another Ray on this machine.

Every process started here carries one marker variable in its environment (Ray's daemons and
workers inherit it), so :meth:`DeployCluster.cleanup` kills exactly this cluster's processes,
never another test's (no ``ray stop``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from conftest import REPO, free_port

RAY = str(Path(sys.executable).parent / "ray")
MARKER = "TICKARCHIVE_DEPLOY_TEST"
# the head notices a dead raylet within ~2 s instead of Ray's default ~12 s (README "Node loss")
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
               "RAY_health_check_failure_threshold": "3"}


@dataclass
class Node:
    """One ``ray start`` of the cluster."""

    name: str                     # TICKARCHIVE_NODE
    root: Path                    # TICKARCHIVE_ROOT
    resources: dict[str, float]
    node_manager_port: int
    node_id: str = ""

    def raylet(self) -> tuple[int, list[str]] | None:
        """(pid, argv) of this node's raylet (found by its ``--node_manager_port``), None once gone."""
        flag = f"--node_manager_port={self.node_manager_port}"
        for pid, argv in _processes():
            if argv and argv[0].endswith("/raylet") and flag in argv:
                return pid, argv
        return None

    def raylet_argv(self) -> list[str]:
        found = self.raylet()
        return found[1] if found else []


@dataclass
class DeployCluster:
    """Head + workers on loopback, started and stopped as separate processes (see module docstring)."""

    work: Path
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    gcs_port: int = field(default_factory=free_port)
    client_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    token: str = ""
    nodes: dict[str, Node] = field(default_factory=dict)
    started: list[subprocess.Popen] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # Ray's temp dir: short, as its unix socket paths must stay under 108 bytes (tmp_path is too deep)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tkdeploy-", dir="/tmp")))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def home(self) -> Path:
        """The head machine's HOME (holds ``.ray/auth_token``)."""
        return self.work / "home-head"

    def base_env(self, home: Path) -> dict[str, str]:
        """The environment of a user's shell on one of the machines: no test-session Ray settings."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RAY_", "TICKARCHIVE_")) and k not in ("PYTEST_CURRENT_TEST",)}
        home.mkdir(parents=True, exist_ok=True)
        env.update({"HOME": str(home), MARKER: self.marker, "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"})
        return env

    def client_env(self) -> dict[str, str]:
        """Another machine's shell that exported the head's token (README "every worker node")."""
        return {**self.base_env(self.work / "home-client"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def run(self, argv: list[str], env: dict[str, str], timeout: float = 180, **kw) -> subprocess.CompletedProcess:
        """One command a user types, in its own process group (its daemons stay in it)."""
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              start_new_session=True, **kw)

    def _ray_start(self, node: Node, env: dict[str, str], head: bool) -> None:
        ports = [f"--node-manager-port={node.node_manager_port}", f"--object-manager-port={free_port()}",
                 f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                 f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
        role = ([ "--head", f"--port={self.gcs_port}", f"--ray-client-server-port={self.client_port}",
                  f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1"] if head
                else [f"--address={self.address}"])
        argv = [RAY, "start", *role, "--node-ip-address=127.0.0.1", "--num-cpus=1",
                f"--resources={json.dumps(node.resources)}", f"--temp-dir={self.temp_dir / node.name}",
                "--disable-usage-stats", *ports]
        env = {**env, "TICKARCHIVE_ROOT": str(node.root), "TICKARCHIVE_NODE": node.name}
        t0 = time.monotonic()
        done = self.run(argv, env)
        assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        self.timings[f"ray start {node.name}"] = round(time.monotonic() - t0, 1)
        self.nodes[node.name] = node

    def start_head(self, resources: dict[str, float]) -> None:
        """``ray get-auth-token --generate`` then ``ray start --head`` (token auth on, fast health checks)."""
        env = self.base_env(self.home)
        made = self.run([RAY, "get-auth-token", "--generate"], env, timeout=60)
        assert made.returncode == 0, made.stderr[-2000:]
        self.token = (self.home / ".ray" / "auth_token").read_text().strip()
        assert self.token and self.token in made.stdout, made.stdout[-500:]
        self._ray_start(Node("head", self.work / "head", resources, free_port()), {**env, **FAST_HEALTH}, head=True)

    def add_workers(self, workers: dict[str, dict[str, float]]) -> None:
        """``ray start --address=...`` per worker (name -> resources), at once as separate machines would:
        the head's token in the environment, its own root and name."""
        from concurrent.futures import ThreadPoolExecutor

        def start(name: str) -> None:
            env = {**self.base_env(self.work / f"home-{name}"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
            self._ray_start(Node(name, self.work / name, workers[name], free_port()), env, head=False)
        with ThreadPoolExecutor(len(workers)) as pool:
            list(pool.map(start, workers))

    def launch_argv(self, *overrides: str) -> list[str]:
        return [sys.executable, "launch.py", *overrides, "ray=cluster", f"ray.address={self.address}",
                f"ray.dashboard_port={self.dashboard_port}", f"storage.root={self.work / 'launch'}"]

    def launch(self, *overrides: str, timeout: float = 240, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
        """``python launch.py ... ray=cluster ray.address=...`` from the head machine's shell (or ``env``'s)."""
        return self.run(self.launch_argv(*overrides), env or self.base_env(self.home), timeout=timeout)

    def launch_in_background(self, *overrides: str) -> subprocess.Popen:
        """The same, not waited for (its own process group; output in pipes)."""
        return subprocess.Popen(self.launch_argv(*overrides), env=self.base_env(self.home), cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def state(self, kind: str) -> list[dict]:
        """``ray list <kind> --format json`` (Ray's state API, through the head's dashboard)."""
        done = self.run([RAY, "list", kind, f"--address=http://127.0.0.1:{self.dashboard_port}", "--format=json",
                         "--limit=10000"], self.client_env(), timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    def resolve_node_ids(self) -> None:
        """Each node's Ray node id (its raylet's ``--node_id``), checked against ``ray list nodes``."""
        for node in self.nodes.values():
            argv = node.raylet_argv()
            assert argv, f"no raylet process for node {node.name}"
            node.node_id = next(a.split("=", 1)[1] for a in argv if a.startswith("--node_id="))
        alive = {row["node_id"] for row in self.state("nodes") if row.get("state") == "ALIVE"}
        assert {n.node_id for n in self.nodes.values()} <= alive, (alive, self.nodes)

    def actor(self, name: str) -> dict:
        """The named actor's row in ``ray list actors`` (the alive one if several)."""
        rows = sorted((a for a in self.state("actors") if a.get("name") == name),
                      key=lambda a: a.get("state") != "ALIVE")
        assert rows, f"no actor named {name!r}"
        return rows[0]

    def node_of(self, node_id: str) -> str | None:
        """The name of the node with this Ray node id."""
        return next((n.name for n in self.nodes.values() if n.node_id == node_id), None)

    def kill_raylet(self, name: str) -> float:
        """``kill -9`` of a node's raylet; the wall time (s since epoch) of the kill."""
        found = self.nodes[name].raylet()
        assert found, f"no raylet found for node {name}"
        os.kill(found[0], signal.SIGKILL)
        return time.time()

    def leftovers(self) -> list[int]:
        """Pids still carrying this cluster's marker."""
        return [pid for pid, _ in _processes() if _has_marker(pid, self.marker)]

    def cleanup(self) -> list[int]:
        """SIGKILL every process carrying this cluster's marker (daemons, workers, drivers); their pids."""
        killed: list[int] = []
        for _ in range(3):            # a dying raylet may still be spawning: look again
            mine = self.leftovers()
            for pid in mine:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            if not mine:
                break
            time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return killed


def _processes():
    """(pid, argv) of every process of this user that can be read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        yield int(entry.name), [a.decode(errors="replace") for a in argv if a]


def _has_marker(pid: int, marker: str) -> bool:
    try:
        return f"{MARKER}={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
