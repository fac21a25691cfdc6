"""Orchestration of ``mode=archive``: sources, writers, sockets, supervision, shutdown.

The driver (``launch.py``) composes and validates the config, then calls
:func:`run_archive`. It starts the loopback venue servers for ``source=sim`` and
``source=replay`` in this process, creates one :class:`SymbolWriter` per symbol group and
one :class:`ExchangeSocket` per venue, and supervises them once a second (restarted actors
are started again). A finite run (``duration_s``, or the end of a replay) stops the
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
from actors.venues.base import Endpoints

log = get_logger("app")


@dataclass
class VenueRun:
    """Everything the driver holds for one venue during a run."""

    spec: VenueSpec
    endpoints: Endpoints
    venue_cfg: Any                # the venue's typed settings
    server: Any = None            # sim or replay server (loopback), if any
    server_thread: Any = None
    writers: dict[str, Any] = field(default_factory=dict)     # writer name -> handle
    writer_of: dict[str, str] = field(default_factory=dict)   # symbol -> writer name
    socket: Any = None
    restarting: bool = False


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
    venues: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """False when the final backup pass failed (the run itself stops on errors)."""
        return not self.backup or bool(self.backup.get("ok"))

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        text = (f"archived {self.rows} rows from {self.frames} frames in {self.seconds:.1f}s "
                f"({self.frames_per_s:.0f} msgs/s), sealed {max(self.files_sealed, len(self.files))} files")
        restarts = sum(self.socket_restarts.values())
        if restarts:
            text += f", {restarts} socket restart(s) (gaps recorded)"
        if self.backup:
            text += f"; backup: {self.backup.get('summary') or self.backup.get('error')}"
        return text


def ensure_ray(settings: Settings) -> None:
    """Connect to (or start) Ray unless this process already did."""
    import ray

    if ray.is_initialized():
        return
    from actors.remote import NAMESPACE

    opts = settings.ray
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": True}
    if opts.address:
        kwargs["address"] = opts.address
    else:   # always a fresh instance: never join a stale or foreign cluster found in /tmp/ray
        kwargs["address"] = "local"
        kwargs["include_dashboard"] = opts.dashboard
        if opts.num_cpus:
            kwargs["num_cpus"] = opts.num_cpus
    ray.init(**kwargs)


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
            endpoints = Endpoints(ws_base=vcfg.ws_base, rest_base=vcfg.rest_base)
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
        symbols = [s for s in spec.symbols if s in recorded]
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


def start_actors(settings: Settings, runs: list[VenueRun]) -> None:
    """Create the writers (one per symbol group) and one socket per venue."""
    from actors.remote import NAMESPACE, socket_name, writer_name
    from actors.remote.socket import ExchangeSocket
    from actors.remote.writer import SymbolWriter

    clock = "data" if settings.source == "replay" else "wall"
    for run in runs:
        spec = run.spec
        symbols = list(spec.symbols)
        step = settings.symbols_per_writer
        for i in range(0, len(symbols), step):
            group = symbols[i:i + step]
            name = writer_name(spec.name, spec.market, group)
            writer_id = name.replace(":", "_").replace("+", "_")
            handle = SymbolWriter.options(name=name, namespace=NAMESPACE, get_if_exists=True).remote(
                settings.root, spec.name, spec.market, group, settings.depth, settings.rollover_ns,
                settings.seal_grace_ns, writer_id, clock, settings.log_level)
            run.writers[name] = handle
            for sym in group:
                run.writer_of[sym] = name
        plans = get_venue(spec.name).plan_connections(run.venue_cfg, run.endpoints, symbols,
                                                      list(settings.channels), settings.depth)
        run.socket = ExchangeSocket.options(name=socket_name(spec.name), namespace=NAMESPACE,
                                            get_if_exists=True).remote(
            spec.name, run.venue_cfg, plans, settings.depth, run.writer_of, settings.socket,
            settings.source == "replay", settings.log_level, settings.root)


@dataclass
class Services:
    """The named service actors of a run."""

    restore: Any = None
    backup: Any = None            # None without a bucket

    def all(self) -> list[Any]:
        return [actor for actor in (self.restore, self.backup) if actor is not None]


def start_services(settings: Settings) -> Services:
    """The named ``restore`` actor and, when a bucket is configured, ``backup``."""
    from actors.remote.backup import start_backup_actor
    from actors.remote.restore import start_restore_actor
    from actors.venues import supported_venues

    backup = settings.backup_section()
    if backup.get("name") == "local" and not backup.get("endpoint"):
        from actors.backup import ensure_embedded      # one embedded S3 server, owned by this driver
        backup["endpoint"] = ensure_embedded(settings.root, str(backup.get("bucket") or "archives")).endpoint
    services = Services(restore=start_restore_actor(settings.root, backup, list(supported_venues()),
                                                    settings.log_level))
    if backup.get("name", "none") != "none":
        services.backup = start_backup_actor(settings.root, backup, settings.log_level)
    return services


def run_archive(settings: Settings, stop_flag: threading.Event | None = None,
                on_started=None) -> RunReport:
    """Run ``mode=archive`` until the duration is over, the replay is exhausted, or stop."""
    import ray

    from actors.cli.console import RunConsole
    from actors.restore.restorer import prepare_catalog

    console_level = {"json": "INFO", "plain": "INFO", "live": "WARNING"}[settings.console]
    setup_logging(settings.log_level, settings.root, "archival", console="json" if settings.console == "json"
                  else "plain", console_level=console_level)
    os.makedirs(settings.root, exist_ok=True)
    runs = plan_sources(settings)
    report = RunReport()
    stop_flag = stop_flag or threading.Event()
    interrupted = False
    services = Services()
    console: RunConsole | None = None
    started_at = time.monotonic()
    try:
        ensure_ray(settings)
        prepare_catalog(settings.root)          # a damaged catalog is rebuilt before anything seals into it
        start_actors(settings, runs)
        services = start_services(settings)
        ray.get([run.socket.ensure_started.remote() for run in runs])
        started_at = time.monotonic()        # duration_s counts from here, not from Ray's start-up
        log.info(f"archiving {sum(len(r.spec.symbols) for r in runs)} symbols on "
                 f"{', '.join(r.spec.name for r in runs)} from {settings.source} into {settings.root} "
                 f"(logs: {settings.root}/logs/)")
        console = RunConsole(settings.console, settings.status_every_s, settings.root)
        console.before = _snapshot(runs, services)    # rates of the first status line count from here
        if on_started is not None:
            on_started(runs)
        last_compact = last_view = time.monotonic()
        while not stop_flag.is_set():
            if settings.duration_s and time.monotonic() - started_at >= settings.duration_s:
                break
            if settings.source == "replay" and _replay_done(runs):
                break
            stop_flag.wait(0.5)
            _supervise(runs, report)
            if time.monotonic() - last_view >= console.interval_s:
                console.show(_snapshot(runs, services))
                last_view = time.monotonic()
            if time.monotonic() - last_compact >= settings.compact_every_s:
                _compact(settings)
                last_compact = time.monotonic()
        interrupted = stop_flag.is_set() and not settings.duration_s and settings.source == "live"
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if console is not None:
            console.close()
        report.seconds = time.monotonic() - started_at
        if any(run.socket is not None for run in runs):
            _shutdown(settings, runs, report, seal_everything=not interrupted)
        if services.backup is not None and not interrupted:   # a finite run ends with a verified backup
            try:
                result = ray.get(services.backup.run_once.remote(), timeout=600)
                log.info(f"final backup pass: {result.get('summary') or result.get('error')}")
                report.backup = result
            except Exception as exc:
                log.error(f"final backup pass failed: {exc}")
                report.backup = {"ok": False, "error": str(exc)}
        if not settings.ray.address:     # own local Ray: nothing outlives this run
            for actor in services.all():
                ray.kill(actor)
        from actors.backup import stop_embedded
        stop_embedded()
        for run in runs:
            if run.server_thread is not None:
                run.server_thread.stop()
    log.info(report.summary(), extra={"console": False})     # launch.py prints it on stdout
    return report


def _snapshot(runs: list[VenueRun], services: Services):
    """Socket, writer and backup stats right now (for the console)."""
    from actors.cli.console import Snapshot

    snap = Snapshot(at=time.monotonic())
    sockets = [run.socket for run in runs]
    for run, stats in zip(runs, _each(sockets, "stats", timeout=5, quiet=True)):
        snap.venues[run.spec.name] = stats
    snap.writers = _each([w for run in runs for w in run.writers.values()], "stats", timeout=5, quiet=True)
    if services.backup is not None:
        snap.backup = _each([services.backup], "stats", timeout=5, quiet=True)[0]
    return snap


def _supervise(runs: list[VenueRun], report: RunReport) -> None:
    """(Re)start each venue's socket; a socket process that died is restarted by Ray meanwhile."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    for run in runs:
        try:
            started = ray.get(run.socket.ensure_started.remote(), timeout=30)
        except (RayActorError, GetTimeoutError) as exc:     # dead or restarting: asked again next round
            if not run.restarting:
                log.warning(f"socket:{run.spec.name} is unavailable ({type(exc).__name__}); "
                            "waiting for Ray to restart it")
            run.restarting = True
            continue
        run.restarting = False
        if started:
            report.socket_restarts[run.spec.name] = report.socket_restarts.get(run.spec.name, 0) + 1
            log.warning(f"socket:{run.spec.name} was restarted; it subscribed again and recorded a gap")


def _replay_done(runs: list[VenueRun]) -> bool:
    """True once every recorded frame was sent and the socket has received all of them."""
    import ray

    for run in runs:
        if not run.server.finished.is_set():
            return False
        stats = ray.get(run.socket.stats.remote())
        if stats["frames"] < run.server.frames_sent:
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
            stats = ray.get([run.socket.stats.remote() for run in sims], timeout=10)
        except Exception:        # a socket restarting: its frames in flight are a recorded gap
            time.sleep(0.2)
            continue
        if all(st["frames_on_open_connections"] >= run.server.call(run.server.sent_on_open_sessions)
               for st, run in zip(stats, sims)):
            return
        time.sleep(0.1)


def _shutdown(settings: Settings, runs: list[VenueRun], report: RunReport, seal_everything: bool) -> None:
    import ray

    if settings.source == "sim":
        _quiesce_sim(runs)
    sockets = [run.socket for run in runs if run.socket is not None]
    for run, stats in zip(runs, _each(sockets, "stats")):
        report.frames += stats.get("frames", 0)
        report.venues[run.spec.name] = stats
    if not all(_each(sockets, "stop", timeout=180, default=False)):
        log.error("some rows could not be handed to the writers before the timeout")
    for run, stats in zip(runs, _each(sockets, "stats")):
        report.rows += stats.get("sent_rows", 0)
        report.venues[run.spec.name] = stats or report.venues.get(run.spec.name, {})
    writers = [h for run in runs for h in run.writers.values()]
    method = "seal_all" if seal_everything else "seal_due"
    report.files = [rec for batch in _each(writers, method, timeout=600, default=[]) for rec in batch]
    report.files_sealed = _sealed_since(settings.root, report.started_ns, writers)
    _compact(settings)
    for actor in sockets + writers:
        ray.kill(actor)


def _sealed_since(root: str, started_ns: int, writers: list[Any]) -> int:
    """Files sealed during this run: the catalog's count (writer counters restart with a writer)."""
    from actors.storage.catalog import Catalog, ts_literal

    try:
        return Catalog(root).query(f"sealed_at >= {ts_literal(started_ns)}", columns=["key"]).num_rows
    except Exception as exc:
        log.warning(f"catalog unreadable, counting sealed files from the writers: {exc}")
        return sum(st.get("files", 0) for st in _each(writers, "stats"))


def _each(actors: list[Any], method: str, timeout: float = 60, default: Any = None,
          quiet: bool = False) -> list[Any]:
    """Call ``method`` on every actor at once; an actor that fails gives ``default`` (logged unless quiet)."""
    import ray

    refs = [getattr(actor, method).remote() for actor in actors]
    out = []
    for ref in refs:
        try:
            out.append(ray.get(ref, timeout=timeout))
        except Exception as exc:
            if not quiet:
                log.error(f"{method} failed on an actor: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
            out.append({} if default is None else default)
    return out


def _compact(settings: Settings) -> None:
    from actors.storage.catalog import Catalog

    try:
        Catalog(settings.root).optimize()
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
