"""The full fault-injection suite: every fault family at full size, one table.

    python tests/faults/fault_suite.py [--workdir DIR] [--only FAMILY ...] [--quick]

Runs outside pytest (one Ray instance of its own, its own SeaweedFS; the whole-archiver family
starts ``launch.py`` archivers with their own Ray and kills them). Prints a Markdown table (one
row per fault family: faults injected, acknowledged rows lost, rows doubled, book rows ≠ truth,
unrecorded gaps, result), the problems of any failed family, and the command that reruns each
row alone. Exit status 1 when a family failed. ``--quick`` uses the CI sizes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(HERE)]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

#: the key every process of the suite (and its Ray workers) holds, never to be seen anywhere
MARKER = f"secret-marker-{uuid.uuid4().hex}"
os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = "AKFAULTSUITE", MARKER

import families  # noqa: E402
from faultlib import ALL_KINDS, NEW_KINDS, VENUES, FamilyResult, table  # noqa: E402

FAMILIES = ("venue", "kill", "archiver", "slow", "disk", "bucket", "corruption", "inputs", "secrets")


def run_family(name: str, work: Path, quick: bool, s3) -> FamilyResult:
    """One family at its full (or ``quick``: CI) size."""
    if name == "venue":
        return families.venue_family(work / "archive", list(VENUES), 1 if quick else 2,
                                     NEW_KINDS if quick else ALL_KINDS, rounds=1 if quick else 2,
                                     spacing_s=2.0 if quick else 2.5, kills=4 if quick else 0)
    if name == "kill":
        return families.kill_family(work / "archive", ["binance", "hyperliquid"], kills=6 if quick else 24,
                                    spacing_s=1.0)
    if name == "archiver":
        return families.archiver_kill_family(work, kills=1 if quick else 3)
    if name == "slow":
        return families.slow_writer_family(work / "archive", stopped_s=5.0 if quick else 60.0)
    if name == "disk":
        if os.geteuid() == 0:
            return families.disk_full_family(work, full_s=5.0 if quick else 15.0)
        result = families.disk_full_rlimit_family(work)
        result.notes += "; not root: no tmpfs could be mounted, RLIMIT_FSIZE in one process instead"
        return result
    if name == "bucket":
        return families.bucket_family(work, periods=4 if quick else 8, outages=1 if quick else 2,
                                      rounds=1 if quick else 2)
    if name == "corruption":
        from actors.backup import Target

        bucket = f"c-{uuid.uuid4().hex[:10]}"
        s3.client().create_bucket(Bucket=bucket)
        target = Target("s3", s3.endpoint, bucket, access_key="any", secret_key="any", workers=4)
        return families.corruption_family(work, target, spool_frames=3 if quick else 6,
                                          parquet_files=2 if quick else 4, catalogs=1 if quick else 2)
    if name == "inputs":
        from actors.remote.restore import RestoreActor

        actor = RestoreActor.options(name=f"restore-suite-{uuid.uuid4().hex[:8]}", namespace="tickarchive").remote(
            str(work / "archive"), None, ["binance"])
        return families.bad_inputs_family(work, restore_actor=actor)
    if name == "secrets":
        return secrets(work, s3)
    raise ValueError(name)


def secrets(work: Path, s3) -> FamilyResult:
    """An archive run backing up with the marked key (its actors inherit it), every actor's stats
    collected while it runs, then the secrets family over it all."""
    import ray

    from actors.remote import NAMESPACE
    from actors.remote.backup import BackupActor
    from faultlib import run_with_script, sim_settings

    bucket = f"s-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    archive = work / "archive-run"

    def collect(runs) -> None:
        time.sleep(6.0)
        stats = []
        for run in runs:
            stats += [repr(ray.get(h.stats.remote(), timeout=60)) for h in [*run.sockets.values(), *run.writers.values()]]
        stats.append(repr(ray.get(ray.get_actor("backup", namespace=NAMESPACE).stats.remote(), timeout=60)))
        from ray._private.worker import global_worker
        from ray.util.state import list_actors

        dashboard = f"http://{global_worker.node.address_info['webui_url']}"     # this instance's, by address
        stats.append(repr(list_actors(address=dashboard, detail=True, limit=1000, timeout=60)))
        (archive / "stats.txt").write_text("\n".join(stats))

    settings = sim_settings(archive, {"binance": ["BTCUSDT"], "bybit": ["BTCUSDT"]}, "backup=s3",
                            f"backup.endpoint={s3.endpoint}", f"backup.bucket={bucket}", "backup.interval=2s")
    report, _, _ = run_with_script(settings, collect)
    def backup_actor(root):
        from actors.remote.restore import RestoreActor

        owner = RestoreActor.options(name=f"catalog-suite-{uuid.uuid4().hex[:8]}", namespace=NAMESPACE).remote(
            str(root), None, ["binance"])
        return BackupActor.options(name=f"backup-suite-{uuid.uuid4().hex[:8]}", namespace=NAMESPACE).remote(
            str(root), {"name": "s3", "endpoint": s3.endpoint, "bucket": bucket, "interval": "1h"},
            catalog_owner=owner)
    result = families.secrets_family(work, s3.endpoint, bucket, backup_actor=backup_actor, marker=MARKER,
                                     archive=archive)
    result.check(bool(report.backup.get("ok")), f"the archive run's final backup with the marked key: {report.backup}")
    suite_logs = sorted(work.parent.rglob("logs/*.log*")) + sorted(work.parent.rglob("archiver-runs.log"))
    text = "".join(p.read_text(errors="replace") for p in suite_logs)
    result.injected += 1
    result.check(MARKER not in text, "the secret shows in a log file of the suite's runs")
    result.notes += f"; and {len(suite_logs)} log files of every run of the suite (all ran with the key)"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the runs write (default: a new temp folder)")
    parser.add_argument("--only", nargs="*", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--quick", action="store_true", help="the CI sizes")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fault-suite-")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    import ray

    from actors.backup.embedded import SeaweedS3
    from actors.remote import NAMESPACE

    started = time.monotonic()
    ray.init(address="local", namespace=NAMESPACE, include_dashboard=True, log_to_driver=False,   # (state API)
             configure_logging=False)
    s3 = SeaweedS3(work / "seaweed").start()
    results: list[FamilyResult] = []
    try:
        for name in args.only:
            t0 = time.monotonic()
            print(f"== {name} ...", flush=True)
            try:
                result = run_family(name, work / name, args.quick, s3)
            except Exception as exc:
                result = FamilyResult(name, problems=[f"crashed: {type(exc).__name__}: {exc}"],
                                      notes=traceback.format_exc(limit=3).replace("\n", " ")[-300:])
            result.seconds = time.monotonic() - t0
            results.append(result)
            print(f"== {name}: {'PASS' if result.ok else 'FAIL'} in {result.seconds:.0f}s "
                  f"{'; '.join(result.problems)[:2000]}", flush=True)
    finally:
        s3.stop()
        ray.shutdown()
    wall = time.monotonic() - started
    command = f"python tests/faults/fault_suite.py{' --quick' if args.quick else ''}"
    print()
    print(table(results))
    print()
    for result, name in zip(results, args.only):
        print(f"- {result.family} ({result.seconds:.0f} s): `{command} --only {name}`")
    print(f"\nwall time {wall:.0f} s; work folder {work}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
