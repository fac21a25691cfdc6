"""Orchestration of ``mode=archive``: sources, writers, sockets, supervision, shutdown.

The driver (``launch.py``) composes and validates the config, then calls
:func:`run_archive`. It starts the loopback venue servers for ``source=sim`` and
``source=replay`` in this process, starts the ``restore`` actor (the cluster's catalog owner),
places each group of venues on a node (:mod:`actors.remote.placement`) with its
:class:`~actors.remote.writer.WriterProcess` es and :class:`~actors.remote.socket.ExchangeSocket` s
(many symbols each), starts a backup actor per node holding files, and supervises them twice
a second (restarted sockets are started again; groups on a lost node move,
:mod:`actors.remote.failover`). A finite run (``duration_s``, or the end of a replay) stops the
sockets, drains every row to the writers and seals every period. Ctrl-C on an open-ended
live run drains and seals only the periods that are over; the open period stays in its
durable spool and continues when the archiver starts again.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from actors.cli.config import Settings, VenueSpec
from actors.venues import get_venue
from actors.logs import get_logger, setup_logging
from actors.errors import ConfigError
from actors.feed.venue_feed import VenueFeedStats
from actors.venues.base import Endpoints
from actors.remote.failover import NodeWatch
from actors.remote.starting import backup_section, ensure_ray, start_sockets, start_writers

log = get_logger("app")


@dataclass
class VenueRun:
    """Everything the driver holds for one venue during a run."""

    spec: VenueSpec
    endpoints: Endpoints
    venue_cfg: Any                # the venue's typed settings
    server: Any = None            # sim or replay server (loopback), if any
    server_thread: Any = None
    writers: dict[str, Any] = field(default_factory=dict)     # writer name -> handle (shared in a group)
    writer_of: dict[str, str] = field(default_factory=dict)   # symbol -> writer name
    sockets: dict[str, Any] = field(default_factory=dict)     # socket processes serving it (shared in a group)
    group: Any = None             # its placement group (actors.remote.placement.Group): the one record of its node

    @property
    def node_id(self) -> str | None:
        """Where its sockets and writers run: its group's node."""
        return self.group.node_id if self.group is not None else None

    @property
    def waiting(self) -> str:
        """Why it is not running (its node is lost and none qualifies), or ``""``."""
        if self.group is None or not self.group.waiting:
            return ""
        return f"node lost, waiting for a node with {self.group.requirement!r}"

    @property
    def socket(self) -> Any:
        """The first socket process serving the venue."""
        return next(iter(self.sockets.values()), None)

    def socket_stats(self, timeout: float = 60, quiet: bool = False) -> VenueFeedStats | None:
        """This venue's feed stats over its socket processes, merged (None if none answered)."""
        answers = _each(list(self.sockets.values()), "stats", timeout=timeout, quiet=quiet)
        return venue_stats(answers, self.spec.name)


def venue_stats(answers: list[Any], venue: str) -> VenueFeedStats | None:
    """One venue's part of socket stats answers (:class:`~actors.remote.socket.SocketStats`, None for
    a process that did not answer), merged, with the serving processes' ``pids``; None if none serves it."""
    serving = [a for a in answers if a is not None and venue in a.venues]
    if not serving:
        return None
    return VenueFeedStats.merged([a.venues[venue] for a in serving], pids=[a.pid for a in serving])


@dataclass
class RunReport:
    """What a finished run did (printed by launch.py, asserted by tests)."""

    seconds: float = 0.0
    frames: int = 0
    rows: int = 0
    files: list[dict] = field(default_factory=list)     # sealed at the end of the run
    files_sealed: int = 0                                # sealed during the whole run
    started_ns: int = field(default_factory=time.time_ns)
    socket_restarts: dict[str, int] = field(default_factory=dict)   # venue -> socket processes restarted
    backup: dict = field(default_factory=dict)           # the final backup pass, if any
    moves: list[dict] = field(default_factory=list)      # venues moved off a lost node
    handed_over: dict = field(default_factory=dict)      # spool calls/rows handed over by returning nodes
    venues: dict[str, VenueFeedStats] = field(default_factory=dict)
    finite: bool = False                                 # duration_s or a replay: every venue must deliver

    @property
    def silent_venues(self) -> dict[str, str]:
        """Venues of a finite run that delivered no market row, with why (refused, silent, ...)."""
        from actors.cli.console import venue_state

        if not self.finite:
            return {}
        return {venue: venue_state(st) for venue, st in sorted(self.venues.items()) if not st.market_rows}

    @property
    def ok(self) -> bool:
        """False when the final backup pass failed or a venue of a finite run delivered no market row
        (the run itself stops on errors)."""
        return (not self.backup or bool(self.backup.get("ok"))) and not self.silent_venues

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        text = (f"archived {self.rows} rows from {self.frames} frames in {self.seconds:.1f}s "
                f"({self.frames_per_s:.0f} msgs/s), sealed {max(self.files_sealed, len(self.files))} files")
        restarts = sum(self.socket_restarts.values())
        if restarts:
            text += f", {restarts} socket restart(s) (gaps recorded)"
        if self.moves:
            text += f", {len(self.moves)} move(s) off lost nodes"
        if self.backup:
            text += f"; backup: {self.backup.get('summary') or self.backup.get('error')}"
        for venue, state in self.silent_venues.items():
            text += f"; error: {venue} delivered no market data ({state})"
        return text


def plan_sources(settings: Settings) -> list[VenueRun]:
    """Decide endpoints per venue and start loopback servers for sim/replay (no Ray yet)."""
    from actors.venues.sim.server import ServerThread

    runs: list[VenueRun] = []
    if settings.source == "replay":
        return [_plan_replay(settings)]
    for spec in settings.venues:
        venue = get_venue(spec.name)
        vcfg = spec.cfg
        if settings.source == "live":
            endpoints = venue.live_endpoints(vcfg)
            runs.append(VenueRun(spec, endpoints, vcfg))
            continue
        server = venue.make_sim_server(list(spec.symbols), settings.sim_section(), settings.depth)
        thread = ServerThread(server)
        thread.start()
        endpoints = Endpoints(ws_base=server.ws_base, rest_base=server.rest_base)
        runs.append(VenueRun(spec, endpoints, vcfg, server=server, server_thread=thread))
    return runs


def _plan_replay(settings: Settings) -> VenueRun:
    from actors.venues import supported_venues
    from actors.venues.sim.server import ServerThread

    path = settings.replay_file
    for name in supported_venues():
        venue = get_venue(name)
        if not venue.recording_matches(path):
            continue
        try:
            spec = settings.venue(name)
        except ConfigError:
            raise ConfigError(f"replay.file: the recording is {name} data but archive.{name} names no "
                              f"symbols (recording holds: {', '.join(sorted(venue.recording_symbols(path)))})")
        recorded = venue.recording_symbols(path)
        symbols = [s for s in spec.symbols if venue.recorded(s, recorded)]
        if not symbols:
            raise ConfigError(f"replay.file: archive.{name}={list(spec.symbols)} names none of the recording's "
                              f"symbols ({', '.join(sorted(recorded))})")
        vcfg = venue.replay_settings(spec.cfg, path)
        server = venue.make_replay_server(path, settings.replay_speed, symbols)
        thread = ServerThread(server)
        thread.start()
        endpoints = Endpoints(ws_base=server.ws_base, rest_base=server.rest_base)
        narrowed = VenueSpec(name=name, market=spec.market, symbols=tuple(symbols), cfg=vcfg)
        return VenueRun(narrowed, endpoints, vcfg, server=server, server_thread=thread)
    raise ConfigError(f"replay.file: {path!r} is not a recording of a supported venue")


def start_actors(settings: Settings, runs: list[VenueRun]) -> list[Any]:
    """Place each group of venues on a node; start its writer processes, then its venues' sockets.

    Returns the groups (:class:`actors.remote.placement.Group`) with the node each runs on.
    """
    import ray

    from actors.remote.placement import choose_node, describe_nodes, group_venues, nodes_from_ray

    nodes = nodes_from_ray(ray.nodes())
    here = ray.get_runtime_context().get_node_id()
    by_name = {run.spec.name: run for run in runs}
    load: dict[str, int] = {}
    groups = group_venues(list(by_name), dict(settings.placement))
    for group in groups:
        node = choose_node(nodes, group.requirement, prefer=here, load=load)
        if node is None:
            raise ConfigError(f"placement.{group.venues[0]}: no alive Ray node advertises "
                              f"{group.requirement!r} (nodes: {describe_nodes(nodes)})")
        load[node.node_id] = load.get(node.node_id, 0) + 1
        group_runs = [by_name[v] for v in group.venues]
        group.node_id = node.node_id
        for run in group_runs:
            run.group = group
        start_writers(settings, group.label, group_runs, node.node_id)
        start_sockets(settings, group.label, group_runs, node.node_id)
    return groups


@dataclass
class Services:
    """The named service actors of a run."""

    restore: Any = None
    backups: dict[str, Any] = field(default_factory=dict)   # node id -> its backup actor; none without a bucket

    @property
    def backup(self) -> Any:
        """The backup actor of the driver's node (or the first one)."""
        return next(iter(self.backups.values()), None)

    def all(self) -> list[Any]:
        return [actor for actor in (self.restore, *self.backups.values()) if actor is not None]


def start_restore(settings: Settings) -> Any:
    """The named ``restore`` actor (the cluster's catalog owner), before anything seals."""
    from actors.remote.restore import start_restore_actor
    from actors.venues import supported_venues

    return start_restore_actor(settings.root, backup_section(settings), list(supported_venues()),
                               settings.log_level, settings.compact_every_s, settings.ray.orchestration)


def start_backups(settings: Settings, runs: list[VenueRun]) -> dict[str, Any]:
    """One backup actor per node that holds files (the driver's node first), when a bucket is set."""
    import ray

    from actors.remote.backup import start_backup_actor

    backup = backup_section(settings)
    if backup.get("name", "none") == "none":
        return {}
    here = ray.get_runtime_context().get_node_id()
    nodes = list(dict.fromkeys([here, *(run.node_id for run in runs if run.node_id)]))
    return {node: start_backup_actor(settings.root, backup, settings.log_level, node_id=node, driver_node=node == here)
            for node in nodes}


def run_archive(settings: Settings, stop_flag: threading.Event | None = None,
                on_started=None) -> RunReport:
    """Run ``mode=archive`` until the duration is over, the replay is exhausted, or stop."""
    import ray

    from actors.cli.console import RunConsole

    console_level = {"json": "INFO", "plain": "INFO", "live": "WARNING"}[settings.console]
    setup_logging(settings.log_level, settings.root, "archival", console="json" if settings.console == "json"
                  else "plain", console_level=console_level)
    os.makedirs(settings.root, exist_ok=True)
    runs = plan_sources(settings)
    report = RunReport(finite=bool(settings.duration_s) or settings.source == "replay")
    stop_flag = stop_flag or threading.Event()
    interrupted = False
    services = Services()
    watch: NodeWatch | None = None
    console: RunConsole | None = None
    started_at = time.monotonic()
    try:
        ensure_ray(settings)
        services.restore = start_restore(settings)     # owns the catalog (rebuilt first if damaged)
        watch = NodeWatch(settings, start_actors(settings, runs), runs)
        services.backups = start_backups(settings, runs)
        watch.services = services
        ray.get([socket.ensure_started.remote() for socket, _ in _sockets(runs).values()])
        started_at = time.monotonic()        # duration_s counts from here, not from Ray's start-up
        log.info(f"archiving {sum(len(r.spec.symbols) for r in runs)} symbols on "
                 f"{', '.join(r.spec.name for r in runs)} from {settings.source} into {settings.root} "
                 f"(logs: {settings.root}/logs/)")
        console = RunConsole(settings.console, settings.status_every_s, settings.root)
        console.before = _snapshot(runs, services)    # rates of the first status line count from here
        if on_started is not None:
            on_started(runs)
        last_view = time.monotonic()
        restarting: set[str] = set()        # socket processes waiting for Ray's restart
        while not stop_flag.is_set():
            if settings.duration_s and time.monotonic() - started_at >= settings.duration_s:
                break
            if settings.source == "replay" and _replay_done(runs):
                break
            stop_flag.wait(0.5)
            watch.check(report)
            _supervise(runs, report, restarting)
            if time.monotonic() - last_view >= console.interval_s:
                console.show(_snapshot(runs, services))
                last_view = time.monotonic()
        interrupted = stop_flag.is_set() and not settings.duration_s and settings.source == "live"
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if console is not None:
            console.close()
        report.seconds = time.monotonic() - started_at
        if watch is not None:       # spools handed over by nodes that came back, before the last seal
            report.handed_over = watch.finish()
        if any(run.sockets for run in runs):
            _shutdown(settings, runs, report, seal_everything=not interrupted)
        if services.backups and not interrupted:   # a finite run ends with a verified backup of every node
            report.backup = _final_backup(list(services.backups.values()))
        if not settings.ray.address:     # own local Ray: nothing outlives this run
            for actor in services.all():
                ray.kill(actor)
        from actors.backup import stop_embedded
        stop_embedded()
        for run in runs:
            if run.server_thread is not None:
                run.server_thread.stop()
    for venue, state in report.silent_venues.items():
        log.error(f"{venue} delivered no market data during this run ({state}); see the venue's log lines above")
    log.info(report.summary(), extra={"console": False})     # launch.py prints it on stdout
    return report


def _snapshot(runs: list[VenueRun], services: Services):
    """Socket, writer and backup stats right now (for the console)."""
    from actors.cli.console import Snapshot

    snap = Snapshot(at=time.monotonic())
    for run in runs:
        snap.venues[run.spec.name] = VenueFeedStats(waiting=run.waiting) if run.waiting else \
            run.socket_stats(timeout=5, quiet=True) or VenueFeedStats()
    snap.writers = [st for st in _each(list(_writers(runs).values()), "stats", timeout=5, quiet=True) if st is not None]
    if services.backup is not None:
        snap.backup = _each([services.backup], "stats", timeout=5, quiet=True)[0]
    return snap


def _supervise(runs: list[VenueRun], report: RunReport, restarting: set[str]) -> None:
    """(Re)start every socket process; one that died is restarted by Ray meanwhile (``restarting``)."""
    import ray
    from ray.exceptions import ActorUnschedulableError, GetTimeoutError, RayActorError

    for name, (socket, venues) in _sockets(runs).items():
        try:
            started = ray.get(socket.ensure_started.remote(), timeout=30)
        except (RayActorError, ActorUnschedulableError, GetTimeoutError) as exc:   # dead, restarting, node lost
            if name not in restarting:
                log.warning(f"{name} is unavailable ({type(exc).__name__}); waiting for Ray to restart it")
            restarting.add(name)
            continue
        restarting.discard(name)
        if started:
            for venue in venues:
                report.socket_restarts[venue] = report.socket_restarts.get(venue, 0) + 1
            log.warning(f"{name} was restarted; it subscribed again and recorded a gap ({', '.join(venues)})")


def _sockets(runs: list[VenueRun]) -> dict[str, tuple[Any, list[str]]]:
    """Every socket process of the run by name, with the venues it serves."""
    out: dict[str, tuple[Any, list[str]]] = {}
    for run in runs:
        for name, handle in run.sockets.items():
            out.setdefault(name, (handle, []))[1].append(run.spec.name)
    return out


def _replay_done(runs: list[VenueRun]) -> bool:
    """True once every recorded frame was sent and the socket has received all of them."""
    for run in runs:
        if not run.server.finished.is_set():
            return False
        stats = run.socket_stats()
        if stats is None or stats.frames < run.server.frames_sent:
            return False
    return True


def _quiesce_sim(runs: list[VenueRun], timeout_s: float = 15.0) -> None:
    """Stop the simulators and wait until the sockets read every frame they sent.

    Without this, frames in flight when the sockets close would count as sent (ground truth)
    but never be received: a finite sim run ends with exactly what was sent.
    """
    import ray

    sims = [run for run in runs if run.server is not None and hasattr(run.server, "halt")]
    for run in sims:
        run.server.halt()        # returns once no market step is still sending
    deadline = time.monotonic() + timeout_s
    while sims and time.monotonic() < deadline:
        try:
            stats = [venue_stats(ray.get([s.stats.remote() for s in run.sockets.values()], timeout=10),
                                 run.spec.name) for run in sims]
        except Exception:        # a socket restarting: its frames in flight are a recorded gap
            time.sleep(0.2)
            continue
        if all(st is not None and st.frames_on_open_connections >= run.server.call(run.server.sent_on_open_sessions)
               for st, run in zip(stats, sims)):
            return
        time.sleep(0.1)


def _shutdown(settings: Settings, runs: list[VenueRun], report: RunReport, seal_everything: bool) -> None:
    import ray

    if settings.source == "sim":
        _quiesce_sim(runs)
    sockets = [socket for socket, _ in _sockets(runs).values()]
    for run in runs:
        stats = run.socket_stats() or VenueFeedStats()
        report.frames += stats.frames
        report.venues[run.spec.name] = stats
    if not all(_each(sockets, "stop", timeout=180, default=False)):
        log.error("some rows could not be handed to the writers before the timeout")
    for run in runs:
        stats = run.socket_stats()
        report.rows += stats.sent_rows if stats is not None else 0
        report.venues[run.spec.name] = stats if stats is not None else report.venues.get(run.spec.name, VenueFeedStats())
    writers = list(_writers(runs).values())
    method = "seal_all" if seal_everything else "seal_due"
    report.files = [rec for batch in _each(writers, method, timeout=600, default=[]) for rec in batch]
    report.files_sealed = _sealed_since(report.started_ns, writers)
    _compact()
    for actor in sockets + writers:
        ray.kill(actor)


def _final_backup(backups: list[Any]) -> dict[str, Any]:
    """One reconcile pass on every node's backup actor at once; one result (ok only if all are)."""
    results = _each(backups, "run_once", timeout=600, default={"ok": False, "error": "backup actor failed"})
    for result in results:
        log.info(f"final backup pass: {result.get('summary') or result.get('error')}")
    if len(results) == 1:
        return results[0]
    return {"ok": all(r.get("ok") for r in results), "nodes": results,
            "summary": " | ".join(str(r.get("summary") or r.get("error")) for r in results)}


def _writers(runs: list[VenueRun]) -> dict[str, Any]:
    """Every writer process of the run by name (venues of a group share them)."""
    return {name: handle for run in runs for name, handle in run.writers.items()}


def _sealed_since(started_ns: int, writers: list[Any]) -> int:
    """Files sealed during this run: the catalog's count (writer counters restart with a writer)."""
    from actors.remote.catalog import RemoteCatalog
    from actors.storage.catalog import ts_literal

    try:
        return RemoteCatalog().query(f"sealed_at >= {ts_literal(started_ns)}", columns=["key"]).num_rows
    except Exception as exc:
        log.warning(f"catalog unreadable, counting sealed files from the writers: {exc}")
        return sum(st.files for st in _each(writers, "stats") if st is not None)


def _each(actors: list[Any], method: str, timeout: float = 60, default: Any = None,
          quiet: bool = False) -> list[Any]:
    """Call ``method`` on every actor at once; an actor that fails gives ``default`` (None unless given;
    logged unless quiet)."""
    import ray

    refs = [getattr(actor, method).remote() for actor in actors]
    out = []
    for ref in refs:
        try:
            out.append(ray.get(ref, timeout=timeout))
        except Exception as exc:
            if not quiet:
                log.error(f"{method} failed on an actor: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
            out.append(default)
    return out


def _compact() -> None:
    """Compact the cluster's catalog now (its owner also does it every ``storage.compact_every``)."""
    from actors.remote.catalog import RemoteCatalog

    try:
        RemoteCatalog().optimize()
    except Exception as exc:  # compaction is an optimisation; never stop archiving for it
        log.warning(f"catalog compaction failed: {exc}")


def install_sigint(stop_flag: threading.Event) -> None:
    """First Ctrl-C stops gracefully (drain + seal); a second one exits at once."""
    def handler(signum, frame):
        if stop_flag.is_set():
            raise KeyboardInterrupt
        log.info("stopping: draining sockets and sealing (Ctrl-C again to abort)")
        stop_flag.set()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
