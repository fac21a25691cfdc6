"""``archive``: the archive run as a detached actor, so it outlives the shell that launched it.

``python launch.py ray=cluster ray.detach=true ...`` joins the cluster, starts
:class:`ArchiveRunner` (named ``archive``, detached) on the launching machine's node, waits
until every socket is started and returns; the runner executes
:func:`actors.remote.archive.run_archive` in a thread (the same supervision, node watch and
shutdown as an attached run). ``python launch.py mode=stop ray=cluster`` asks it to stop like
Ctrl-C does: sockets close, every received row reaches the writers, finished periods are
sealed, the open period stays in its durable spool; then the runner ends.
"""
from __future__ import annotations

import threading
from typing import Any

import ray

from actors.remote import NAMESPACE

ARCHIVE = "archive"


@ray.remote(num_cpus=0, max_restarts=0)
class ArchiveRunner:
    """One archive run in a detached actor (see module docstring)."""

    def __init__(self, settings: Any) -> None:
        from actors.remote.archive import run_archive

        self.stop_flag, self.started = threading.Event(), threading.Event()
        self.report: Any = None
        self.error: str | None = None

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

    def stop(self, timeout_s: float = 900.0) -> dict[str, Any]:
        """Stop gracefully (seal finished periods, keep the open one's spool); the run's summary."""
        self.stop_flag.set()
        self.thread.join(timeout_s)
        if self.report is None:
            return {"ok": False, "summary": self.error or "the run did not end in time"}
        return {"ok": self.report.ok, "summary": self.report.summary()}


def start_detached(settings: Any) -> str:
    """Start the detached run (``ray.detach=true``); a line saying how to stop it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from actors.errors import ConfigError
    from actors.remote.starting import ensure_ray

    ensure_ray(settings)
    try:
        ray.get_actor(ARCHIVE, namespace=NAMESPACE)
        raise ConfigError("an archive run is already running in this cluster (python launch.py mode=stop "
                          "ray=cluster stops it)")
    except ValueError:
        pass
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    runner = ArchiveRunner.options(name=ARCHIVE, namespace=NAMESPACE, lifetime="detached",
                                   scheduling_strategy=here).remote(settings)
    error = ray.get(runner.wait_started.remote())
    if error:
        ray.kill(runner)
        raise ConfigError(f"the detached archive run failed to start: {error}")
    return ("archiving in the cluster as the detached actor 'archive' (logs under storage.root/logs of each "
            "node); stop it with: python launch.py mode=stop ray=cluster")


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
    ray.kill(runner)
    return bool(result.get("ok")), str(result.get("summary"))
