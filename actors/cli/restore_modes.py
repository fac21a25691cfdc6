"""``mode=restore``, ``mode=status`` and ``mode=reindex`` from the command line (no Ray needed;
with ``ray=cluster`` restore and status ask the cluster's ``restore`` actor).

    python launch.py mode=restore restore.exchange=binance restore.symbol=BTCUSDT \\
        restore.start=2025-01-05:22 restore.end=2025-01-06:02 [restore.channels=[l2book,trades]] [restore.depth=20]
    python launch.py mode=status restore.exchange=binance restore.symbol=BTCUSDT restore.start=... restore.end=...
    python launch.py mode=reindex [backup=s3 ...]
    python launch.py mode=export export.format=hftbacktest|nautilus|tardis restore.exchange=binance \
        restore.symbol=BTCUSDT restore.start=2025-01-05:22 restore.end=2025-01-06:02 export.out=btc.npz \
        [export.allow_gaps=true]

Errors (unknown venue or symbol, bad range, checksum mismatch) print one ``error:`` line and
exit with status 2.
"""
from __future__ import annotations

import sys
from pathlib import Path
from datetime import datetime, timezone

from actors.storage.catalog import Catalog
from actors.cli.config import Settings, plain
from actors.errors import ConfigError
from actors.venues import supported_venues
from actors.storage.layout import NS
from actors.restore.restorer import Restorer, RestoreError, bucket_from_section, reindex
from actors.restore.timerange import MAX_NS, RangeError, hour_list, parse_range


def _restorer(settings: Settings) -> Restorer:
    bucket = bucket_from_section(settings.backup_section(), settings.root)
    return Restorer(settings.root, bucket=bucket, workers=settings.restore.workers, venues=supported_venues())


def _request(settings: Settings) -> dict:
    section = plain(settings.restore)
    missing = [k for k in ("exchange", "symbol", "start", "end") if not section.get(k)]
    if missing:
        raise RestoreError(f"restore: missing {', '.join('restore.' + k for k in missing)} "
                           "(e.g. restore.exchange=binance restore.symbol=BTCUSDT "
                           "restore.start=2025-01-05:22 restore.end=2025-01-06:02)")
    return section


def run_restore(settings: Settings) -> int:
    """Restore the range's files with a progress bar and print their local paths."""
    from tqdm import tqdm

    if settings.ray.address:            # ray=cluster: the cluster's restore actor answers
        return _run_restore_in_cluster(settings)
    try:
        req = _request(settings)
        restorer = _restorer(settings)
        channels = list(req.get("channels") or ["l2book", "trades"])
        exchange, symbol, start, end = req["exchange"], str(req["symbol"]), str(req["start"]), str(req["end"])
        depth, market = req.get("depth"), req.get("market") or "perp"
        refs = [ref for channel in channels
                for ref in restorer.paths(exchange, symbol, channel, start, end, depth, market)]
        total = sum(r.size or 0 for r in refs if not r.local)
        with tqdm(total=total, unit="B", unit_scale=True, desc="restore", file=sys.stderr,
                  disable=total == 0) as bar:
            paths = restorer.restore_refs(refs, progress=bar.update)
        cells = restorer.hour_cells(exchange, symbol, start, end, list(dict.fromkeys([*channels, "events"])), depth,
                                    market)
    except (RestoreError, RangeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_paths(paths, req, f"under {settings.root}")
    _print_holes(restorer, cells, exchange, symbol, channels, start, end, depth, market)
    return 0


def _print_holes(restorer: Restorer, cells: dict, exchange: str, symbol: str, channels: list[str], start: str,
                 end: str, depth, market: str) -> None:
    """The range's hours without a file, and hours whose events record a hole (the coverage rule)."""
    from actors.restore.coverage import uncovered_hours
    from actors.restore.timerange import hours_between

    hours = hours_between(*parse_range(start, end))
    for channel in channels:
        stream = restorer.stream_key(exchange, symbol, channel, depth, market).id
        missing = uncovered_hours(cells, stream, hours)
        if missing:
            print(f"missing: no {channel} file anywhere for {len(missing)} hour(s): {hour_list(missing)}",
                  file=sys.stderr)
        holes = sorted(c.hour for c in cells.values() if c.stream == stream and c.gaps)
        if holes:
            print(f"gaps: {channel} rows may be missing around recorded gap/lost events in {len(holes)} hour(s): "
                  f"{hour_list(holes)}", file=sys.stderr)


def _run_restore_in_cluster(settings: Settings) -> int:
    from actors.remote.restore import RestoreClient

    try:
        req = _request(settings)
        client = RestoreClient(settings)
        paths = [path for channel in req.get("channels") or ["l2book", "trades"]
                 for path in client.restore(req["exchange"], str(req["symbol"]), channel, str(req["start"]),
                                            str(req["end"]), req.get("depth"), req.get("market") or "perp")]
    except (RestoreError, RangeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_paths(paths, req, "on the restore actor's node")
    return 0


def _print_paths(paths: list[str], req: dict, where: str) -> None:
    for path in paths:
        print(path)
    print(f"{len(paths)} file(s) for {req['exchange']} {req['symbol']} are local {where}", file=sys.stderr)


def run_status(settings: Settings) -> int:
    """Coverage of one stream hour by hour, or (no ``restore.symbol``) every stream of the archive."""
    if not settings.ray.address and not Catalog(settings.root).healthy():
        print(f"warning: the catalog in {settings.root}/.catalog is unreadable; figures below come from the "
              "files themselves (python launch.py mode=reindex rebuilds it)", file=sys.stderr)
    if not settings.restore.symbol:
        return run_overview(settings)
    try:
        req = _request(settings)
        channels = list(dict.fromkeys([*(req.get("channels") or ["l2book", "trades"]), "events"]))
        if settings.ray.address:        # ray=cluster: the whole cluster's catalog, files and bucket
            from actors.remote.restore import RestoreClient
            source = RestoreClient(settings)
        else:
            source = _restorer(settings)
        table = source.coverage(req["exchange"], str(req["symbol"]), str(req["start"]), str(req["end"]),
                                channels=channels, depth=req.get("depth"), market=req.get("market") or "perp")
    except (RestoreError, RangeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = table.to_pylist()
    print_table([("stream", "<44"), ("hour (UTC)", "<16"), ("rows", ">10"), ("bytes", ">12"), ("where", "<8"),
                 ("gaps", ">5"), ("disconn", ">7")],
                [(r["stream"], _hour(r["hour"]), r["rows"], r["bytes"], r["where"], r["gaps"], r["disconnects"])
                 for r in rows])
    if not rows:
        print("(no archived files in this range)")
    return 0


def print_table(columns: list[tuple[str, str]], rows: list[tuple]) -> None:
    """A plain fixed-width table: ``columns`` are (title, format spec such as ``<16`` or ``>10``)."""
    header = " ".join(f"{title:{spec}}" for title, spec in columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        print(" ".join(f"{value:{spec}}" for value, (_, spec) in zip(row, columns)))


def run_overview(settings: Settings) -> int:
    """Every stream: first/last hour, rows in the last hour, missing hours, gaps, backup state; live health."""
    from actors.cli.console import read_live_status
    from actors.cli.plot import write_plot
    from actors.restore.overview import archive_overview, coverage_grid

    req = settings.restore
    start_ns = end_ns = None
    if req.start or req.end:
        start_ns, end_ns = parse_range(req.start or "0", req.end or str(MAX_NS))
    filters = dict(exchange=req.exchange, symbol=req.symbol, start_ns=start_ns, end_ns=end_ns)
    catalog = Catalog(settings.root)
    if settings.ray.address:            # ray=cluster: the cluster's catalog, and its detached run's state
        from actors.remote.restore import RestoreClient
        from actors.remote.runner import run_state
        from actors.restore.overview import StreamStatus

        try:
            streams = [StreamStatus(**st) for st in RestoreClient(settings).overview(**filters)]
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"cluster archive: {len(streams)} stream(s); archiver: {run_state()}")
    else:
        streams = archive_overview(settings.root, catalog, **filters)
        live = read_live_status(settings.root)
        print(f"archive {settings.root}: {len(streams)} stream(s); archiver: "
              + (f"running (pid {live['pid']}) — {live['line']}" if live else "not running"))
    print_table([("stream", "<40"), ("first hour", "<16"), ("last hour", "<16"), ("rows last h", ">11"),
                 ("missing h", ">9"), ("gaps", ">5"), ("disconn", ">7"), ("where", "<7")],
                [(st.stream, _hour(st.first_hour), _hour(st.last_hour), st.rows_last_hour, st.missing_hours,
                  st.gaps, st.disconnects, st.where) for st in streams])
    if not streams:
        print("(no archived streams" + (" match the filters" if req.exchange or req.symbol or start_ns else "") + ")")
    if settings.status_plot:
        path = write_plot(coverage_grid(settings.root, catalog, **filters), settings.status_plot,
                          f"tickarchive coverage of {Path(settings.root).name}")
        print(f"coverage picture: {path.absolute()}", file=sys.stderr)
    return 0


def _hour(value) -> str:
    if hasattr(value, "timestamp"):
        value = int(value.timestamp()) * NS
    return f"{datetime.fromtimestamp(value / NS, tz=timezone.utc):%Y-%m-%d %H:00}"


def run_reindex(settings: Settings) -> int:
    """Rebuild the catalog from the local tree and (if configured) the bucket."""
    from tqdm import tqdm

    try:
        bucket = bucket_from_section(settings.backup_section(), settings.root)
        with tqdm(unit="file", desc="reindex", file=sys.stderr) as bar:
            result = reindex(settings.root, Catalog(settings.root), bucket, progress=bar.update)
    except (RestoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"reindexed {result['files']} files ({result['remote_only']} only in the bucket) "
          f"into {settings.root}/.catalog")
    for key in result["unreadable"]:
        print(f"unreadable (not indexed): {key}", file=sys.stderr)
    return 1 if result["unreadable"] else 0


def run_export(settings: Settings) -> int:
    """Export one stream's range to hftbacktest, a Nautilus catalog or Tardis CSV, hour by hour."""
    from actors.export import ExportError, export

    try:
        req = _request(settings)
        summary = export(settings.root, settings.export.format.value, req["exchange"], str(req["symbol"]),
                         str(req["start"]), str(req["end"]), settings.export.out, req.get("depth"),
                         req.get("market") or "perp", settings.export.allow_gaps, restorer=_restorer(settings))
    except (RestoreError, RangeError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for channel, hours in summary.missing_hours.items():
        print(f"missing: no {channel} file for {len(hours)} hour(s), not exported: {hour_list(hours)}",
              file=sys.stderr)
    print(summary.line())
    return 0
