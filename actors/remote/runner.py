"""``archive``: the archive run as a detached actor, so it outlives the shell that launched it.

``python launch.py ray=cluster ray.detach=true ...`` joins the cluster, starts
:class:`ArchiveRunner` (named ``archive``, detached) on the orchestration node (the head, or the
node offering ``ray.orchestration``: never an arbitrary worker, whose loss would end the run),
waits until every socket is started and returns; the runner executes
:func:`actors.remote.archive.run_archive` in a thread (the same supervision, node watch and
shutdown as an attached run). ``python launch.py mode=stop ray=cluster`` asks it to stop like
Ctrl-C does: sockets close, every received row reaches the writers, finished periods are
sealed, the open period stays in its durable spool; then the runner ends.

If the runner's process dies, Ray starts it again (``max_restarts=-1``). The sockets, writers and
backup actors it had started die with it (Ray ends the actors a process owns); the new runner
waits until their names are free, then starts the run again from the same settings: each writer
recovers its durable spool first (no acknowledged row is lost), each socket reconnects and
records the interruption as a ``disconnect`` event. :func:`run_state` tells ``mode=status
ray=cluster`` whether the orchestration is running, starting again, or down.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any

import ray

from actors.logs import get_logger
from actors.remote import NAMESPACE
from actors.remote.options import POLICIES, orchestration_options

ARCHIVE = "archive"
RUN_ACTOR_PREFIXES = ("socket:", "writer:", "backup")     # the actors a run starts and owns
log = get_logger("archival")


@ray.remote(**POLICIES["runner"])
class ArchiveRunner:
    """One archive run in a detached actor (see module docstring)."""

    def __init__(self, settings: Any) -> None:
        from actors.remote.archive import run_archive

        self.settings = settings
        self.restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.started_at = time.time()
        self.stop_flag, self.started = threading.Event(), threading.Event()
        self.report: Any = None
        self.error: str | None = None
        if self.restarted:
            gone = wait_until_gone(RUN_ACTOR_PREFIXES)
            log.warning("the archive runner was restarted by Ray: starting the run again (writers recover "
                        f"their spools first){'' if gone else '; some actors of the old run were still listed'}")

        def run() -> None:
            try:
                self.report = run_archive(settings, self.stop_flag, on_started=lambda runs: self.started.set())
            except Exception as exc:      # e.g. a placement no node satisfies: said by wait_started
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                self.started.set()
        self.thread = threading.Thread(target=run, name="archive-run")
        self.thread.start()

    def wait_started(self, timeout_s: float = 300.0) -> str | None:
        """Block until the sockets run; the error that ended the run instead, if any."""
        self.started.wait(timeout_s)
        return self.error

    def status(self) -> dict[str, Any]:
        """``state`` (starting, running, stopping, ended), whether Ray restarted this runner, its
        node, and the run's last status line (its node's ``logs/live-status.json``)."""
        from actors.cli.console import read_live_status
        from actors.remote.placement import node_root

        state = ("stopping" if self.stop_flag.is_set() else "running") if self.started.is_set() else "starting"
        if not self.thread.is_alive() and self.started.is_set():
            state = "ended"
        live = read_live_status(node_root(self.settings.root)) or {}
        return {"state": state, "restarted": self.restarted, "since": self.started_at, "error": self.error,
                "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(), "line": live.get("line")}

    def stop(self, timeout_s: float = 900.0) -> dict[str, Any]:
        """Stop gracefully (seal finished periods, keep the open one's spool); the run's summary."""
        self.stop_flag.set()
        self.thread.join(timeout_s)
        if self.report is None:
            return {"ok": False, "summary": self.error or "the run did not end in time"}
        return {"ok": self.report.ok, "summary": self.report.summary()}


def wait_until_gone(prefixes: tuple[str, ...], timeout_s: float = 60.0) -> bool:
    """Wait until no actor named with one of ``prefixes`` is listed in the namespace (those of a
    runner that died are being ended by Ray); False if some still are after ``timeout_s``."""
    from ray.util import list_named_actors

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = [a["name"] for a in list_named_actors(all_namespaces=True)
                 if a.get("namespace") == NAMESPACE and a["name"].startswith(prefixes)]
        if not names:
            return True
        time.sleep(0.5)
    return False


def start_detached(settings: Any) -> str:
    """Start the detached run (``ray.detach=true``) on the orchestration node; a line saying how to stop it."""
    from actors.errors import ConfigError
    from actors.remote.starting import ensure_ray

    ensure_ray(settings)
    try:
        ray.get_actor(ARCHIVE, namespace=NAMESPACE)
        raise ConfigError("an archive run is already running in this cluster (python launch.py mode=stop "
                          "ray=cluster stops it)")
    except ValueError:
        pass
    runner = ArchiveRunner.options(name=ARCHIVE, namespace=NAMESPACE, lifetime="detached",
                                   **orchestration_options(settings.ray.orchestration)).remote(settings)
    error = ray.get(runner.wait_started.remote())
    if error:
        ray.kill(runner, no_restart=True)
        raise ConfigError(f"the detached archive run failed to start: {error}")
    return ("archiving in the cluster as the detached actor 'archive' (logs under storage.root/logs of each "
            "node); stop it with: python launch.py mode=stop ray=cluster")


def run_state(timeout_s: float = 10.0) -> str:
    """One line on the cluster's detached run, for ``mode=status ray=cluster`` (Ray joined already)."""
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        runner = ray.get_actor(ARCHIVE, namespace=NAMESPACE)
    except ValueError:
        return "no detached run in this cluster"
    try:
        status = ray.get(runner.status.remote(), timeout=timeout_s)
    except (GetTimeoutError, RayActorError) as exc:
        return f"orchestration down or restarting ({type(exc).__name__}; Ray restarts the runner on its node)"
    line = f"{status['state']} on node {status['node'][:8]}"
    if status.get("restarted"):
        line += f" (restarted by Ray at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(status['since']))} UTC)"
    if status.get("error"):
        line += f"; error: {status['error']}"
    return line + (f" — {status['line']}" if status.get("line") else "")


def stop_detached(settings: Any) -> tuple[bool, str]:
    """``mode=stop``: stop the detached run gracefully and remove it; (ok, summary line)."""
    from actors.errors import ConfigError
    from actors.remote.starting import ensure_ray

    ensure_ray(settings)
    try:
        runner = ray.get_actor(ARCHIVE, namespace=NAMESPACE)
    except ValueError:
        raise ConfigError("mode=stop: no detached archive run in this cluster") from None
    result = ray.get(runner.stop.remote())
    ray.kill(runner, no_restart=True)
    return bool(result.get("ok")), str(result.get("summary"))
