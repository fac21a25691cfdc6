"""Starting the archive's actors: Ray itself, the writer and socket processes of a placement
group on its node, and the backup configuration the actors take. Used by the archive run
(:mod:`actors.remote.archive`), node-loss failover (:mod:`actors.remote.failover`) and the
restore actor; it imports none of them.
"""
from __future__ import annotations

from typing import Any

from actors.cli.config import Settings
from actors.errors import ConfigError
from actors.remote.options import on_node
from actors.venues import get_venue


def ensure_ray(settings: Settings) -> None:
    """Connect to (or start) Ray unless this process already did."""
    import ray

    if ray.is_initialized():
        return
    from actors.remote import NAMESPACE

    from actors.remote.joining import check_cluster

    opts = settings.ray
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": True}
    if opts.address:
        kwargs["address"] = check_cluster(opts.address, opts.dashboard_port)
    else:   # always a fresh instance: never join a stale or foreign cluster found in /tmp/ray
        kwargs["address"] = "local"
        kwargs["include_dashboard"] = opts.dashboard
        if opts.num_cpus:
            kwargs["num_cpus"] = opts.num_cpus
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"ray=cluster: cannot join the Ray cluster at {kwargs['address']} "
                          f"({' '.join(str(exc).split())[:200]}); is it running, and is this machine's "
                          "token (RAY_AUTH_TOKEN) the head's?") from None


def start_writers(settings: Settings, group: str, runs: list[Any], node_id: str | None) -> None:
    """The group's writer processes (``storage.symbols_per_writer`` symbols each, 0 = automatic)."""
    from actors.remote import NAMESPACE, writer_name
    from actors.remote.placement import AUTO_SYMBOLS_PER_WRITER, shards
    from actors.remote.writer import WriterProcess

    clock = "data" if settings.source == "replay" else "wall"
    streams = [(run.spec.name, run.spec.market, sym) for run in runs for sym in run.spec.symbols]
    by_name = {run.spec.name: run for run in runs}
    for index, chunk in enumerate(shards(streams, settings.symbols_per_writer, AUTO_SYMBOLS_PER_WRITER)):
        name = writer_name(group, index)
        handle = WriterProcess.options(name=name, namespace=NAMESPACE, get_if_exists=True,
                                       **on_node(node_id)).remote(
            settings.root, chunk, settings.depth, settings.rollover_ns, settings.seal_grace_ns, name, clock,
            settings.log_level)
        for venue, _, symbol in chunk:
            by_name[venue].writers[name] = handle
            by_name[venue].writer_of[symbol] = name


def start_sockets(settings: Settings, group: str, runs: list[Any], node_id: str | None,
                  resumed: bool = False) -> None:
    """The group's socket processes (``socket.symbols_per_process`` symbols each, 0 = automatic)."""
    from actors.remote import NAMESPACE, socket_name
    from actors.remote.placement import AUTO_SYMBOLS_PER_SOCKET, shards
    from actors.remote.socket import ExchangeSocket, VenueShard

    by_name = {run.spec.name: run for run in runs}
    streams = [(run.spec.name, sym) for run in runs for sym in run.spec.symbols]
    for index, chunk in enumerate(shards(streams, settings.socket.symbols_per_process, AUTO_SYMBOLS_PER_SOCKET)):
        name = socket_name(group, index)
        parts = []
        for venue in dict.fromkeys(v for v, _ in chunk):
            run, symbols = by_name[venue], [s for v, s in chunk if v == venue]
            plans = get_venue(venue).plan_connections(run.venue_cfg, run.endpoints, symbols,
                                                      list(settings.channels), settings.depth)
            parts.append(VenueShard(venue, run.venue_cfg, plans, {s: run.writer_of[s] for s in symbols}))
        handle = ExchangeSocket.options(name=name, namespace=NAMESPACE, get_if_exists=True,
                                        **on_node(node_id)).remote(
            name, parts, settings.depth, settings.socket, settings.source == "replay", settings.log_level,
            settings.root, resumed)
        for part in parts:
            by_name[part.venue].sockets[name] = handle


def backup_section(settings: Settings) -> dict[str, Any]:
    """The backup config as the actors take it (an embedded S3 server started for ``backup=local``)."""
    backup = settings.backup_section()
    if backup.get("name") == "local" and not backup.get("endpoint"):
        from actors.backup import ensure_embedded      # one embedded S3 server, owned by this driver
        backup["endpoint"] = ensure_embedded(settings.root, str(backup.get("bucket") or "archives")).endpoint
    return backup
