"""The fault families of the suite, each a function returning one row of the table.

``test_faults.py`` runs each at a reduced size in CI; ``fault_suite.py`` runs the full sizes.
A family runs its faults, judges the outcome against ground truth and records every check
that failed in ``FamilyResult.problems`` (so the table can show counts even for a failure).
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

from faultlib import (VENUES, DurableRecord, FamilyResult, expected_socket_restarts, fault_plan, judge_runs,
                      kill_loop, kill_targets, leftover_spools, run_with_script, sim_settings, slow_writer_script,
                      venue_fault_script)
from truth_check import Verdict, from_archive

def events_of(root, run) -> list:
    case = VENUES[run.spec.name]
    return [ev for sym in run.spec.symbols
            for ev in from_archive(root, run.spec.name, sym, case.book_key, case.trade_keys).events]


def _judge_into(result: FamilyResult, root: Path, runs: list) -> dict[str, Verdict]:
    """Judge every venue of a run into ``result`` (counts and problems)."""
    verdicts = judge_runs(root, runs)
    total = sum(verdicts.values(), Verdict())
    result.doubled = total.books_doubled + total.trades_doubled
    result.books_wrong = total.books_wrong
    result.unrecorded_gaps = total.unrecorded_gaps
    for name, v in verdicts.items():
        result.check(v.books > 50 and v.trades > 10, f"{name}: too little archived ({v.line()})")
        result.check((v.books_wrong, v.trades_wrong, v.unrecorded_gaps, v.books_doubled, v.trades_doubled)
                     == (0, 0, 0, 0, 0), f"{name}: {v.line()}; {v.examples[:3]}")
    result.details["verdicts"] = verdicts
    return verdicts


def _check_kills(result: FamilyResult, report, runs: list, killed: Counter, kills: int, kill_log: list) -> None:
    """Every kill happened, and each killed socket process restarted every venue it served once."""
    result.check(sum(killed.values()) == kills, f"killed {killed}, wanted {kills}")
    want = expected_socket_restarts(runs, kill_log)
    result.check(Counter(report.socket_restarts) == want,
                 f"socket restarts {report.socket_restarts} after socket kills that served {dict(want)}")


def _check_durable(result: FamilyResult, record: DurableRecord, root: Path) -> None:
    """Every row that was durable is in the final archive, and no spool is left behind."""
    result.acked_lost = record.lost()
    result.check(bool(record.rows) and result.acked_lost == 0, f"{result.acked_lost} durable rows missing")
    result.check(leftover_spools(root) == [], f"spools left after the run: {leftover_spools(root)}")


def venue_family(root: Path, venues: list[str], symbols_per_venue: int, kinds: tuple[str, ...], rounds: int,
                 spacing_s: float = 2.5, kills: int = 0, kill_venues: tuple[str, ...] = ("binance", "bybit"),
                 extra: tuple[str, ...] = ()) -> FamilyResult:
    """Every venue gets ``rounds`` x ``kinds`` simulator faults (and optionally ``kills`` kill -9s of the
    writers and sockets of ``kill_venues`` meanwhile). Checked: books = truth, no unrecorded gap,
    no durable row lost, each fault kind had its effect on every venue."""
    result = FamilyResult("venue faults" + (" + kill -9" if kills else ""))
    symbols = {v: list(VENUES[v].symbols[:symbols_per_venue]) for v in venues}
    plan = fault_plan(venues, kinds, rounds)
    record = DurableRecord(root)

    def script(runs):
        by_name = {run.spec.name: run for run in runs}
        killed: Counter = Counter()
        killer = None
        if kills:
            targets = kill_targets([by_name[v] for v in kill_venues])
            killer = threading.Thread(target=lambda: killed.update(kill_loop(targets, kills, 1.5, record, kill_log)))
            killer.start()
        injected = venue_fault_script(plan, spacing_s=spacing_s, warmup_s=1.5,
                                      on_step=lambda step: record.take())(runs)
        if killer is not None:
            killer.join()
        record.take()
        return injected, killed

    kill_log: list = []
    started = time.monotonic()
    report, runs, (injected, killed) = run_with_script(
        sim_settings(root, symbols, "storage.symbols_per_writer=1", *extra), script)
    result.seconds = time.monotonic() - started
    result.injected = sum(injected.values()) + sum(killed.values())
    result.details.update(injected=injected, killed=killed, report=report)
    result.check(sum(injected.values()) == sum(map(len, plan.values())), f"injected {injected} of {plan}")
    if kills:
        _check_kills(result, report, runs, killed, kills, kill_log)
    _check_durable(result, record, root)
    verdicts = _judge_into(result, root, runs)
    socket_killed = set(expected_socket_restarts(runs, kill_log))
    observed: Counter = Counter()          # per fault kind: the venues on which its effect was seen
    checked = []                           # venues whose socket process was not killed
    for run in runs:
        name = run.spec.name
        planned = {k for k, _ in plan[name]}
        killed_socket = name in socket_killed
        # a duplicated frame reached the client (the server sent it twice), killed socket or not
        if "duplicate_frames" in planned:
            result.check(run.server.frames_doubled > 0, f"{name}: no frame was sent twice")
            observed["duplicate_frames"] += run.server.frames_doubled > 0
        if "reorder_frames" in planned:        # (a swap pending when a socket is killed can be lost with it)
            result.check(killed_socket or run.server.frames_swapped > 0, f"{name}: no frame was sent after its successor")
            observed["reorder_frames"] += run.server.frames_swapped > 0
        if killed_socket:                # the client's own reactions may be lost with a killed process
            continue
        checked.append(name)
        disconnects = [ev.detail for ev in events_of(root, run) if ev.kind == "disconnect"]
        effects = {
            "oversized_frame": (lambda: any("1009" in d or "too big" in d for d in disconnects),
                                "oversized frame accepted"),
            "ack_then_silence": (lambda: any("stalled feed" in d for d in disconnects),
                                 "silence after the ack not noticed"),
        }
        for kind, (effect, problem) in effects.items():
            if kind in planned:
                seen = effect()
                result.check(seen, f"{name}: {problem}")
                observed[kind] += seen
        if "venue_restart" in planned:
            want = sum(1 + len(run.server.truth(sym).epochs) for sym in run.spec.symbols)
            # the restart reached the client: a new sequence epoch (in-band restarts, restarted ids) or,
            # where ids are times and go on (Hyperliquid, WOO X), the reconnect it forced
            case = VENUES[name]
            reconnected = any(sum(ev.kind == "connect" for ev in from_archive(root, name, sym, case.book_key,
                                                                             case.trade_keys).events) > 1
                              for sym in run.spec.symbols)
            seen = verdicts[name].epochs == want and (want > len(run.spec.symbols) or reconnected)
            result.check(seen, f"{name}: rows of {verdicts[name].epochs} venue sequences archived, the venue ran {want}"
                               f"{'' if want > len(run.spec.symbols) or reconnected else ' (and no reconnect)'}")
            observed["venue_restart"] += seen
    result.details.update(observed=observed, checked=checked)
    result.notes = f"{dict(injected)}" + (f", kill -9 {dict(killed)}" if kills else "")
    return result


def kill_family(root: Path, venues: list[str], kills: int, spacing_s: float = 1.5) -> FamilyResult:
    """kill -9 of writer and socket processes in turn; nothing durable may be lost, nothing doubled,
    every row lost in a killed socket accounted for by its restart gap."""
    result = FamilyResult("writer + socket kill -9")
    symbols = {v: list(VENUES[v].symbols) for v in venues}
    record = DurableRecord(root)

    kill_log: list = []

    def script(runs):
        time.sleep(1.5)
        killed = kill_loop(kill_targets(runs), kills, spacing_s, record, kill_log)
        time.sleep(2.0)
        record.take()
        return killed

    started = time.monotonic()
    report, runs, killed = run_with_script(sim_settings(root, symbols, "storage.symbols_per_writer=1"), script)
    result.seconds = time.monotonic() - started
    result.injected = sum(killed.values())
    result.details.update(killed=killed, report=report)
    _check_kills(result, report, runs, killed, kills, kill_log)
    _check_durable(result, record, root)
    _judge_into(result, root, runs)
    result.notes = f"{dict(killed)}, {len(record.rows)} durable rows recorded before the kills"
    return result


def slow_writer_family(root: Path, stopped_s: float, max_pending_rows: int = 200) -> FamilyResult:
    """SIGSTOP the writer for ``stopped_s``, then SIGCONT: the socket holds at most
    ``max_pending_rows`` (backpressure), nothing is lost, the connection stays up."""
    result = FamilyResult(f"slow writer (SIGSTOP {stopped_s:.0f} s)")
    settings = sim_settings(root, {"binance": ["BTCUSDT"]}, f"socket.max_pending_rows={max_pending_rows}")
    started = time.monotonic()
    record = DurableRecord(root)
    report, runs, seen = run_with_script(settings, slow_writer_script(stopped_s, record))
    result.seconds = time.monotonic() - started
    result.injected = 1
    result.details.update(seen=seen)
    result.check(seen["writer_pid_after"] == seen["writer_pid"], "the frozen writer was restarted, not resumed")
    result.check(max_pending_rows <= seen["peak_pending"] < 2 * max_pending_rows,
                 f"peak pending rows {seen['peak_pending']} (bound {max_pending_rows})")
    verdicts = _judge_into(result, root, runs)
    result.acked_lost = record.lost()
    result.check(result.acked_lost == 0, f"{result.acked_lost} durable rows missing")
    events = [(ev.kind, ev.detail) for ev in events_of(root, runs[0])]
    losses = [f"{kind}: {detail[:80]}" for kind, detail in events
              if kind in ("gap", "disconnect", "lost") and detail != "stopped"]
    result.check(not losses and verdicts["binance"].trades_missing == 0,
                 f"data lost during backpressure: {verdicts['binance'].trades_missing} trades, "
                 + (f"recorded as {losses[:1]} (F5)" if losses else "recorded by no event"))
    result.check(any(kind == "disconnect" and detail == "stopped" for kind, detail in events),
                 "the run's stop wrote no disconnect: the reader was stuck (F4)")
    result.notes = (f"peak pending rows {seen['peak_pending']} (bound {max_pending_rows}); socket process peak RSS "
                    f"{seen['socket_peak_rss_mb']:.0f} MB")
    return result


# ----------------------------------------------------------------------------- the bucket
class S3Faults:
    """botocore event hooks that answer the next requests of an operation with errors, as a
    flaky S3 endpoint does: ``503 SlowDown``, a dropped connection, or a body cut mid-stream."""

    def __init__(self, client) -> None:
        self.client, self.plan, self.injected = client, {}, Counter()
        client.meta.events.register("before-send.s3", self._before_send)
        client.meta.events.register("after-call.s3.GetObject", self._after_get)

    def add(self, operation: str, *faults: str) -> "S3Faults":
        self.plan.setdefault(operation, []).extend(faults)
        return self

    def _take(self, operation: str, kinds: tuple[str, ...]) -> str | None:
        faults = self.plan.get(operation) or []
        if faults and faults[0] in kinds:
            self.injected[faults[0]] += 1
            return faults.pop(0)
        return None

    def _before_send(self, request, event_name: str = "", **_):
        from botocore.awsrequest import AWSResponse
        from botocore.exceptions import ConnectionClosedError

        fault = self._take(event_name.rsplit(".", 1)[-1], ("slowdown", "reset"))
        if fault == "reset":
            raise ConnectionClosedError(endpoint_url=request.url)
        if fault == "slowdown":
            class Raw:
                def stream(self, **_):
                    yield b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, Raw())
        return None

    def _after_get(self, parsed, **_):
        if self._take("GetObject", ("cut",)) and "Body" in parsed:
            parsed["Body"] = _CutBody(parsed["Body"])


class _CutBody:
    """A response body that breaks after its first chunk (the connection dropped mid-download)."""

    def __init__(self, body) -> None:
        self.body = body

    def iter_chunks(self, size: int = 1024):
        yield self.body.read(min(size, 100))
        raise ConnectionResetError("connection reset by peer (injected mid-body)")


def _archive_periods(core, first: int, periods: int, t0: int) -> None:
    from actors.storage.layout import NS
    from writer_fixtures import call_batches

    for i in range(first, first + periods):
        core.write("p1", i + 1, call_batches(i * 20, 20, t0 + i * 2 * NS, step_ns=NS // 20))
    core.seal_all()


def bucket_family(workdir: Path, periods: int = 6, outages: int = 1, rounds: int = 1) -> FamilyResult:
    """The bucket goes down (SeaweedFS killed, then started again) during a backup pass and during
    a restore, and answers with injected errors (503 SlowDown, dropped connections, bodies cut
    mid-stream) during both: every file that was marked backed up verifies in the bucket, the
    next pass completes, every restored file equals the original, no partial file is left, and
    every failure is one line."""
    from actors.backup import Bucket, Target, reconcile
    from actors.backup.bucket import make_client
    from actors.backup.embedded import SeaweedS3
    from actors.restore.restorer import RestoreError, Restorer
    from actors.storage.catalog import Catalog
    from actors.storage.integrity import sha256_file
    from writer_fixtures import SYM, T0, make_core

    result = FamilyResult("bucket outage + S3 errors (backup, restore)")
    started = time.monotonic()
    server = SeaweedS3(workdir / "s3", buckets=("archives",)).start()
    target = Target("s3", server.endpoint, "archives", access_key="any", secret_key="any", workers=2)
    root = workdir / "archive"
    core = make_core(root, rollover_s=2)
    lines: list[str] = []
    try:
        def restart_bucket() -> None:
            """Start the killed server again and wait until it serves objects (its volumes come
            back after its S3 endpoint), as an operator retries once the bucket is back."""
            server.start()
            client, deadline = server.client(), time.monotonic() + 60
            keys = [o["Key"] for o in client.list_objects_v2(Bucket="archives").get("Contents", [])][:1]
            while keys and time.monotonic() < deadline:
                try:
                    client.get_object(Bucket="archives", Key=keys[0])["Body"].read()
                    return
                except Exception:
                    time.sleep(0.5)

        def verified_in_bucket() -> tuple[int, int]:
            """(files marked backed up, those whose object does not verify)."""
            client = server.client()
            marked = {r["key"]: r["backup_sha256"] for r in Catalog(str(root)).rows() if r["backed_up_at"]}
            bad = 0
            for rel, sha in marked.items():
                head = client.head_object(Bucket="archives", Key=rel)
                bad += head["Metadata"].get("sha256") != sha or head["ContentLength"] != (root / rel).stat().st_size
            return len(marked), bad

        for r in range(outages):                                     # backup: outage mid-pass
            _archive_periods(core, r * periods, periods, T0)
            marked_before = verified_in_bucket()[0] if r else 0
            done = []

            def kill_midway(n, nbytes):
                done.append(n)
                if len(done) == periods // 2:
                    server.kill()
            first = reconcile(str(root), target, Catalog(str(root)), progress=kill_midway)
            result.injected += 1
            lines.append(first.line())
            result.seen(first.failed > 0, f"backup outage {r}: the pass did not notice ({first.line()})")
            restart_bucket()
            marked, bad = verified_in_bucket()
            result.check(bad == 0 and marked == marked_before + first.uploaded,
                         f"backup outage {r}: {bad} of {marked} marked files do not verify "
                         f"(marked {marked - marked_before} in the pass, which verified {first.uploaded})")
            second = reconcile(str(root), target, Catalog(str(root)))
            lines.append(second.line())
            result.check(second.failed == 0, f"backup after outage {r}: {second.line()} {second.errors[:2]}")
        for r in range(rounds):                                      # backup: injected errors
            _archive_periods(core, (outages + r) * periods, periods, T0)
            client = make_client(target)
            # (no HEAD faults: an upload whose answer echoes our SHA-256 is verified without one)
            faults = S3Faults(client).add("PutObject", "slowdown", "reset", "slowdown", "reset", "slowdown", "reset",
                                          "slowdown")
            planned = len(faults.plan["PutObject"])
            summary = reconcile(str(root), target, Catalog(str(root)), client=client)
            result.injected += planned
            served = sum(faults.injected.values())      # errors a real request of the pass received
            result.check(summary.failed == 0 and summary.uploaded == 2 * periods,
                         f"backup with injected errors {dict(faults.injected)}: {summary.line()} {summary.errors[:2]}")
            result.seen(served == planned and summary.failed == 0, f"backup errors {r}: {served} of {planned} "
                        f"injected errors reached a request", faults=served)
        marked, bad = verified_in_bucket()
        files = {rel: sha256_file(root / rel) for rel in (p.relative_to(root).as_posix()
                                                          for p in root.rglob("*.parquet") if "/." not in str(p))}
        result.check(marked == len(files) and bad == 0, f"{marked} of {len(files)} files backed up, {bad} wrong")
        result.acked_lost = bad + sum(1 for rel in files if rel not in
                                      {r["key"] for r in Catalog(str(root)).rows() if r["backed_up_at"]})
        end = T0 + (outages + rounds) * periods * 2 * 10**9

        def restore_all(dest: Path, client=None, progress=None, workers: int = 1) -> list[str]:
            restorer = Restorer(dest, bucket=Bucket(target, client), workers=workers, venues=["binance"])
            out = []
            for channel in ("trades", "l2book", "events"):
                try:
                    out += restorer.restore("binance", SYM, channel, T0, end, depth=20 if channel == "l2book" else None,
                                            progress=progress)
                except RestoreError as exc:
                    if "no events data" not in str(exc) and "unknown symbol" not in str(exc):
                        raise
            return out

        def compare(dest: Path) -> int:
            """Restored files that differ from the originals; partial files left count too."""
            wrong = sum(1 for rel, sha in files.items() if (dest / rel).is_file() and sha256_file(dest / rel) != sha)
            return wrong + len([p for p in dest.rglob("*") if p.name.endswith(".restore")])

        restored_ok = 0
        for r in range(outages):                                     # restore: outage mid-restore
            dest = workdir / f"restore-outage-{r}"
            count = []

            def kill_during(nbytes):
                count.append(nbytes)
                if len(count) == 2:
                    server.kill()
            try:
                restore_all(dest, progress=kill_during)
                result.problems.append(f"restore outage {r}: the restore did not fail while the bucket was down")
            except RestoreError as exc:
                lines.append(str(exc))
                result.seen("\n" not in str(exc), f"restore outage {r}: a multi-line error: {exc}")
            result.injected += 1
            result.check(compare(dest) == 0, f"restore outage {r}: a wrong or partial file was left")
            restart_bucket()
            got = restore_all(dest)
            result.check(compare(dest) == 0 and all((dest / rel).is_file() for rel in files),
                         f"restore after outage {r}: files missing or wrong")
            restored_ok += len(got)
        for r in range(rounds):                                      # restore: injected errors
            dest = workdir / f"restore-errors-{r}"
            client = make_client(target)
            faults = S3Faults(client).add("GetObject", "slowdown", "reset", "slowdown")
            planned = len(faults.plan["GetObject"]) + 1
            restore_all(dest, client=client)                         # botocore retries these
            retried = sum(faults.injected.values())
            result.seen(retried == planned - 1, f"restore errors {r}: {retried} of {planned - 1} errors reached a "
                        "request", faults=retried)
            faults.add("GetObject", "cut")
            shutil_rmtree(dest)
            try:
                restore_all(dest, client=client)
                result.problems.append(f"restore errors {r}: a body cut mid-stream went unnoticed")
            except RestoreError as exc:
                lines.append(str(exc))
                result.seen("\n" not in str(exc) and ".parquet" in str(exc) and faults.injected["cut"] == 1,
                            f"restore errors {r}: the error does not name the file in one line: {exc}")
            result.injected += planned
            result.check(compare(dest) == 0, f"restore errors {r}: a wrong or partial file was left")
            restore_all(dest, client=client)
            result.check(compare(dest) == 0 and all((dest / rel).is_file() for rel in files),
                         f"restore errors {r}: files missing or wrong after the retry")
        result.books_wrong = None
        result.details.update(lines=lines, files=len(files))
        result.notes = (f"{len(files)} files; acknowledged = marked backed up (verified); "
                        f"errors seen: {' | '.join(line[:90] for line in lines[:4])}")
    finally:
        server.stop()
    result.seconds = time.monotonic() - started
    return result


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------- corruption
def _flip(path: Path, offset: int, nbytes: int = 16) -> None:
    data = bytearray(path.read_bytes())
    data[offset:offset + nbytes] = bytes(b ^ 0x5A for b in data[offset:offset + nbytes])
    path.write_bytes(bytes(data))


def corruption_family(workdir: Path, target, spool_frames: int = 3, parquet_files: int = 2,
                      catalogs: int = 1) -> FamilyResult:
    """Bytes flipped in spool frames, in sealed Parquet files (after a backup to ``target``) and
    garbage in the catalog. Spool damage costs exactly the damaged calls, reported as a ``lost``
    event; a damaged sealed file is refused by loads, never uploaded over its good copy, flagged
    by status and restored from the bucket; a damaged catalog is rebuilt from the files."""
    from actors.backup import Bucket, reconcile
    from actors.restore.loading import load_trades
    from actors.restore.restorer import Restorer, prepare_catalog
    from actors.storage.catalog import Catalog
    from actors.storage.integrity import DamagedFileError
    from actors.storage.layout import NS
    from archive_reading import read_channel
    from writer_fixtures import SYM, T0, call_batches, make_core

    result = FamilyResult("spool, Parquet and catalog corruption")
    started = time.monotonic()
    root = workdir / "archive"
    # spool: one open period of 40 calls, ``spool_frames`` of them damaged
    core = make_core(root, rollover_s=3600)
    calls = 12 * spool_frames + 4
    offsets = []
    for i in range(calls):
        spool = next((root / ".spool").rglob("*.spool"), None)
        offsets.append(spool.stat().st_size if spool else 0)
        core.write("p1", i + 1, call_batches(i * 10, 10, T0 + i * NS // 10))
    spool = next((root / ".spool").rglob("*.spool"))
    damaged_calls = [5 + 12 * k for k in range(spool_frames)]              # apart, never the last
    for seq in damaged_calls:
        _flip(spool, (offsets[seq - 1] + offsets[seq]) // 2)
    result.injected += len(damaged_calls)
    del core
    core = make_core(root, rollover_s=3600)
    lost = core.recovery.get("lost_calls", {}).get("p1", [])
    reported = sorted(s for a, b in lost for s in range(a, b + 1))
    result.seen(reported == damaged_calls, f"spool: damaged calls {damaged_calls}, reported lost {lost}",
                faults=len(set(reported) & set(damaged_calls)))
    for i in range(calls, calls + 20):                           # the writer goes on after recovery
        core.write("p1", i + 1, call_batches(i * 10, 10, T0 + i * NS // 10))
    core.seal_all()
    want = sorted(n for n in range((calls + 20) * 10) if n // 10 + 1 not in damaged_calls)
    got = sorted(map(int, read_channel(root, "trades", SYM).column("trade_id").to_pylist()))
    result.acked_lost = len(set(want) - set(got))
    result.doubled = len(got) - len(set(got))
    result.check(got == want, f"spool: {result.acked_lost} rows of undamaged calls lost, {result.doubled} doubled")
    events = read_channel(root, "events", SYM).to_pylist()
    result.check(any(e["kind"] == "lost" and "spool" in e["detail"] for e in events), "spool: no lost event")
    # Parquet: a second stream of sealed files, backed up, then damaged locally
    core2 = make_core(root, rollover_s=2, writer_id="w2")
    _archive_periods(core2, 100, max(parquet_files, 2), T0)
    assert reconcile(str(root), target, Catalog(str(root))).failed == 0
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet") if "/trades/" in str(p)
                   and "/." not in str(p))
    originals = {rel: (root / rel).read_bytes() for rel in files}
    before = load_trades(root, "binance", SYM, T0, T0 + 3600 * NS)
    broken = files[:parquet_files]
    for rel in broken:
        _flip(root / rel, len(originals[rel]) // 2)
    result.injected += len(broken)
    try:
        load_trades(root, "binance", SYM, T0, T0 + 3600 * NS)
        result.problems.append("parquet: a damaged file was loaded")
    except DamagedFileError as exc:
        result.check("\n" not in str(exc) and broken[0] in str(exc), f"parquet: unclear refusal: {exc}")
    summary = reconcile(str(root), target, Catalog(str(root)))
    result.seen(sorted(summary.damaged) == broken and summary.uploaded == 0,
                f"parquet: backup of damaged files: {summary.line()}", faults=len(set(summary.damaged) & set(broken)))
    where = Restorer(root).coverage("binance", SYM, T0, T0 + 3600 * NS, channels=["trades"]).column("where")
    result.check("damaged" in where.to_pylist(), f"parquet: status does not flag the damage: {where.to_pylist()}")
    Restorer(root, bucket=Bucket(target), venues=["binance"]).restore("binance", SYM, "trades", T0, T0 + 3600 * NS)
    result.check(all((root / rel).read_bytes() == originals[rel] for rel in broken),
                 "parquet: the good copies were not restored")
    result.check(load_trades(root, "binance", SYM, T0, T0 + 3600 * NS).equals(before), "parquet: rows differ")
    # catalog: garbage in every file of the LanceDB folder
    for _ in range(catalogs):
        rows_before = sorted((r["key"], r["sha256"]) for r in Catalog(str(root)).rows())
        for path in [p for p in (root / ".catalog").rglob("*") if p.is_file()]:
            path.write_bytes(os.urandom(max(64, path.stat().st_size)))
        result.injected += 1
        covered = Restorer(root).coverage("binance", SYM, T0, T0 + 3600 * NS, channels=["trades"]).num_rows
        result.check(covered > 0, "catalog: status reads nothing while the catalog is damaged")
        repaired = prepare_catalog(str(root))
        rows_after = sorted((r["key"], r["sha256"]) for r in Catalog(str(root)).rows())
        result.seen(bool(repaired.get("rebuilt")) and rows_after == rows_before,
                    f"catalog: rebuilt {repaired}, {len(rows_after)} rows of {len(rows_before)}")
    result.details.update(files=len(files))
    result.notes = (f"{len(damaged_calls)} spool frames → exactly those calls reported lost (a `lost` event); "
                    f"{len(broken)} sealed files refused, kept out of the bucket, restored; catalog rebuilt")
    result.seconds = time.monotonic() - started
    return result


# ----------------------------------------------------------------------------- bad inputs
def small_archive(root: Path, rows: int) -> Path:
    """One sealed hour of ``rows`` trades and books (the writer core), for requests to work on."""
    from writer_fixtures import T0, call_batches, make_core

    core = make_core(root, rollover_s=3600)
    core.write("p1", 1, call_batches(0, rows, T0))
    core.seal_all()
    return root


#: command lines that must each give one ``error:`` line (exit 2) before anything starts
BAD_OVERRIDES = [
    ["depth=7"], ["depth=abc"], ["depth=0"], ["mode=bogus"], ["storage.rollover=7s"], ["duration_s=forever"],
    ["duration_s=0"], ["archive.kraken=[XBTUSD]"], ["archive.binance=[../etc]"], ["archive.binance=BTCUSDT"],
    ["channels=[trades,quotes]"], ["nope=1"], ["source=bogus"], ["log_level=LOUD"], ["log.console=fancy"],
    ["socket.flush_ms=-1"], ["socket.backoff_min_s=40"], ["source.messages_per_s=-1"], ["source.seed=x"],
    ["+source.faults=[{at_s: 1, kind: explode}]"], ["source.faults=[{at_s: 1, kind: duplicate_frames, count: 0}]"],
    ["storage.root="], ["storage.root=/proc/tickarchive"], ["storage.symbols_per_writer=-1"],
    ["storage.seal_grace=x"], ["storage.compact_every=0s"], ["ray.num_cpus=abc"], ["replay.speed=-1"],
    ["source=replay"], ["source=replay", "replay.file=/nonexistent.gz"], ["backup=s3"],
    ["backup=s3", "backup.bucket=a"], ["backup=s3", "backup.bucket=ab1", "backup.workers=0"],
    ["backup=s3", "backup.bucket=ab1", "backup.endpoint=ftp://x"],
    ["backup=s3", "backup.bucket=ab1", "backup.retention.local_days=-1"], ["restore.channels=[quotes]"],
    ["restore.depth=abc"], ["venues.bybit.book_depth=7"], ["venues.binance.trade_stream=bookTicker"],
    ["archive.okx=[BTC-USDT-SWAP]", "venues.okx.ct_val=5"], ["mode=reindex", "storage.root=/nonexistent/tickarchive"],
]


def _accepted(argv: list[str]) -> bool:
    """True when the overrides compose and validate (the bad input was accepted)."""
    from actors.cli.config import load_settings

    try:
        load_settings(argv)
    except Exception:          # refused (whether in one line is judged when launch.main runs it)
        return False
    return True


def bad_inputs_family(workdir: Path, restore_actor=None) -> FamilyResult:
    """Every bad command line gives exactly one ``error:`` line and exit status 2; every bad API
    argument one clear exception (a ``TickarchiveError`` with a one-line message); the process (and
    the ``restore`` actor, when given) answers a good request afterwards."""
    import contextlib
    import io

    import launch
    from actors.errors import TickarchiveError
    from actors.quantpylib import load_trade_archives
    from actors.restore.loading import load_trades
    from actors.restore.restorer import Restorer
    from actors.restore.timerange import parse_range
    from actors.storage.layout import NS
    from actors.venues import get_venue
    from writer_fixtures import SYM, T0

    result = FamilyResult("bad inputs (CLI overrides, API arguments)")
    started = time.monotonic()
    root = small_archive(workdir / "archive", 50)
    root_arg = f"storage.root={root}"
    mode_args = [  # modes that run without Ray: their requests are checked when they run
        ["mode=restore", root_arg], ["mode=status", root_arg, "restore.exchange=binance", "restore.symbol=BTCUSDT"],
        ["mode=restore", root_arg, "restore.exchange=binance", "restore.symbol=BTCUSDT", "restore.start=garbage",
         "restore.end=2025-01-02"],
        ["mode=restore", root_arg, "restore.exchange=binance", "restore.symbol=BTCUSDT", "restore.start=2025-01-02",
         "restore.end=2025-01-01"],
        ["mode=status", root_arg, "restore.exchange=binance", "restore.symbol=NOPE", "restore.start=2025-01-05:00",
         "restore.end=2025-01-06:00"],
        ["mode=backup", root_arg, "backup=local", "backup.interval=soon"],
    ]
    lines = []
    for argv in BAD_OVERRIDES + mode_args:
        if not any(a.startswith("storage.root") for a in argv):
            argv = [*argv, root_arg]
        if not argv[0].startswith("mode=") and _accepted(argv):       # never start a (live) archive run
            result.injected += 1
            result.problems.append(f"{' '.join(argv)}: accepted")
            continue
        err, out = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                status = launch.main(argv)
        except BaseException as exc:   # a traceback would reach the user
            status = f"{type(exc).__name__}: {exc}"
        shown = [line for line in (err.getvalue() + out.getvalue()).splitlines()
                 if line.strip() and not line.startswith("{")]
        result.injected += 1
        ok = status == 2 and len(shown) == 1 and shown[0].startswith("error: ")
        result.seen(ok, f"{' '.join(argv)}: status {status}, output {shown[:3]}")
        lines.append(shown[0] if shown else "")
    restorer = Restorer(root, venues=["binance"])
    end = T0 + 3600 * NS
    api = {
        "unknown venue": lambda: restorer.load("kraken", SYM, "trades", T0, end),
        "unknown symbol": lambda: restorer.load("binance", "NOPE", "trades", T0, end),
        "unknown channel": lambda: restorer.load("binance", SYM, "quotes", T0, end),
        "start after end": lambda: restorer.load("binance", SYM, "trades", end, T0),
        "unreadable time": lambda: restorer.load("binance", SYM, "trades", "yesterday-ish", end),
        "time out of range": lambda: parse_range("1e30", "2e30"),
        "loader start after end": lambda: load_trades(root, "binance", SYM, end, T0),
        "quantpylib bad range": lambda: load_trade_archives("binance", SYM, "2025-13-01", end, root),
        "unknown venue module": lambda: get_venue("kraken"),
        "bad venue setting": lambda: get_venue("bybit").settings({"book_depth": 7}),
        "bad depth": lambda: get_venue("binance").validate(get_venue("binance").settings({}), [SYM], ["trades"], 7),
    }
    for name, call in api.items():
        result.injected += 1
        try:
            call()
            result.problems.append(f"API {name}: accepted")
        except TickarchiveError as exc:
            result.seen("\n" not in str(exc) and len(str(exc)) < 400, f"API {name}: not one line: {exc!r}")
            lines.append(str(exc))
        except Exception as exc:
            result.problems.append(f"API {name}: {type(exc).__name__} instead of a TickarchiveError: {exc}")
    good = restorer.load("binance", SYM, "trades", T0, end)
    result.check(good.num_rows == 50, f"a good request after the bad ones: {good.num_rows} rows")
    if restore_actor is not None:
        import ray

        for name, args in {"actor unknown symbol": ("binance", "NOPE", "trades", T0, end),
                           "actor bad range": ("binance", SYM, "trades", end, T0),
                           "actor unknown venue": ("kraken", SYM, "trades", T0, end)}.items():
            result.injected += 1
            try:
                ray.get(restore_actor.load.remote(*args), timeout=60)
                result.problems.append(f"{name}: accepted")
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
                result.seen(isinstance(cause, TickarchiveError) and "\n" not in str(cause),
                            f"{name}: {type(cause).__name__}: {str(cause)[:200]}")
        served = ray.get(restore_actor.load.remote("binance", SYM, "trades", T0, end), timeout=60)
        result.check(served.num_rows == 50, f"the restore actor after bad requests: {served.num_rows} rows")
    result.details.update(lines=lines)
    result.notes = f"{result.injected} bad inputs, each one line; e.g. `{lines[0]}`"
    result.seconds = time.monotonic() - started
    return result


# ----------------------------------------------------------------------------- secrets
def _env(**values: str | None):
    """Set (None: unset) environment variables for a ``with`` block."""
    import contextlib

    @contextlib.contextmanager
    def manager():
        saved = {k: os.environ.get(k) for k in values}
        try:
            for k, v in values.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return manager()


def logs_text(root: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((root / "logs").glob("*.log*")))


def secrets_family(workdir: Path, endpoint: str, bucket: str, backup_actor=None, marker: str | None = None,
                   archive: Path | None = None) -> FamilyResult:
    """With ``AWS_SECRET_ACCESS_KEY`` set to a marker: ``launch.py --cfg``, a backup (``mode=backup``,
    DEBUG logging) and the backup actor's stats never show it, nor does any log file under
    ``{root}/logs`` (``archive``: also an archive run's root, whose logs and actor stats the caller
    collected into ``{archive}/stats.txt``). ``backup_actor(root)`` starts the backup actor (and
    its catalog's owner) on the family's archive."""
    import contextlib
    import io
    import uuid

    import launch

    marker = marker or f"secret-marker-{uuid.uuid4().hex}"
    result = FamilyResult("no secret in logs, config or actor state")
    started = time.monotonic()
    root = small_archive(workdir / "archive", 20)
    places: dict[str, str] = {}
    if backup_actor is not None:
        import ray

        backup_actor = backup_actor(root)
        places["backup actor run_once"] = repr(ray.get(backup_actor.run_once.remote(), timeout=120))
        places["backup actor stats"] = repr(ray.get(backup_actor.stats.remote(), timeout=60))
        result.check("'ok': True" in places["backup actor run_once"],
                     f"the backup actor did not back up with the marked key: {places['backup actor run_once'][:300]}")
    common = [f"storage.root={root}", "backup=s3", f"backup.endpoint={endpoint}", f"backup.bucket={bucket}"]
    with _env(AWS_ACCESS_KEY_ID="AKFAULTSUITE", AWS_SECRET_ACCESS_KEY=marker, AWS_ENDPOINT_URL=None):
        for name, argv in {"--cfg": ["--cfg", *common], "mode=backup": ["mode=backup", "log_level=DEBUG", *common],
                           "bad credentials line": ["mode=backup", *common[:-1], "backup.bucket=nope-bucket"]}.items():
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = launch.main(argv)
            places[f"{name} (exit {status})"] = out.getvalue() + err.getvalue()
        uploaded = "uploaded 2 files" if backup_actor is None else "uploaded 0 files"     # the actor did it
        result.check(uploaded in places.get("mode=backup (exit 0)", ""), f"mode=backup with the marked key: {places}")
    places["logs"] = logs_text(root)
    if archive is not None:
        places["archive run logs"] = logs_text(archive)
        places["archive run stats"] = (archive / "stats.txt").read_text() if (archive / "stats.txt").exists() else ""
        result.check(bool(places["archive run stats"]), "no actor stats collected from the archive run")
    for place, text in places.items():
        result.injected += 1
        result.check(marker not in text, f"the secret shows in {place}")
        result.check("Traceback" not in text, f"a traceback in {place}")
    result.check(backup_actor is None or "upload<" in places["logs"],
                 f"the backup actor's log lines are not in {root / 'logs'}")
    result.details.update(places={k: len(v) for k, v in places.items()})
    result.notes = f"searched: {', '.join(f'{k} ({len(v)} chars)' for k, v in places.items())}"
    result.seconds = time.monotonic() - started
    return result


# ----------------------------------------------------------------------------- whole-archiver kills
def _tree(pid: int) -> set[int]:
    """``pid``, its descendants and every process in its process group (the archiver's Ray)."""
    procs: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                procs[int(entry.name)] = (int(fields[1]), int(fields[2]))      # ppid, pgid
            except (OSError, IndexError, ValueError):
                continue
    out = {pid} | {p for p, (_, pgid) in procs.items() if pgid == pid}
    grew = True
    while grew:
        more = {p for p, (ppid, _) in procs.items() if ppid in out} - out
        grew, out = bool(more), out | more
    return {p for p in out if p in procs}


def _launch(root: Path, seed: int, duration_s: float, log) -> "subprocess.Popen":
    import subprocess
    import sys

    from conftest import REPO
    from faultlib import IDLE_TIMEOUT_S

    args = [sys.executable, "launch.py", "source=sim", "archive.binance=[BTCUSDT,ETHUSDT]", "archive.bybit=[BTCUSDT]",
            *[f"archive.{v}=[]" for v in ("hyperliquid", "okx", "woox", "paradex")], "depth=10",
            "storage.rollover=2s", "storage.seal_grace=0.5s", f"storage.root={root}", f"source.seed={seed}",
            "source.messages_per_s=100", f"duration_s={duration_s}", "ray.dashboard=false",
            f"socket.idle_timeout_s={IDLE_TIMEOUT_S}", "log.console=plain", "log.status_every=1h"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def archiver_kill_family(workdir: Path, kills: int = 3, archive_s: float = 8.0) -> FamilyResult:
    """The whole archiver (driver, its Ray and every actor) is SIGKILLed ``kills`` times while it
    archives, and started again each time; a last run ends normally. Every row that was durable
    before a kill is in the final archive exactly once, and no spool is left."""
    import signal as signals
    import subprocess

    from faultlib import row_identity
    from archive_reading import read_channel

    result = FamilyResult("whole-archiver kill -9 + restart")
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "archive"
    record = DurableRecord(root)
    killed_pids = 0
    with open(workdir / "archiver-runs.log", "ab") as log:
        for run in range(kills):
            proc = _launch(root, seed=100 + run, duration_s=600, log=log)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and proc.poll() is None:
                if any(p.stat().st_size for p in root.glob(".spool/*/*.spool")):
                    break
                time.sleep(0.5)
            time.sleep(archive_s)
            result.check(proc.poll() is None, f"run {run}: the archiver exited early ({proc.returncode})")
            record.take()
            tree = _tree(proc.pid)
            for pid in sorted(tree):
                try:
                    os.kill(pid, signals.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(30)
            killed_pids += len(tree)
            time.sleep(1.0)
            alive = [pid for pid in tree if Path(f"/proc/{pid}").exists()
                     and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
            result.check(not alive, f"run {run}: processes alive after SIGKILL: {alive}")
            result.injected += 1
        spooled = [p for p in root.glob(".spool/*/*.spool") if p.stat().st_size]
        result.check(bool(spooled), "no spool left by the killed archivers (nothing to recover)")
        final = _launch(root, seed=200, duration_s=6, log=log)
        try:
            status = final.wait(300)
        except subprocess.TimeoutExpired:
            final.kill()
            status = "timeout"
        result.check(status == 0, f"the final run ended with {status} (see {workdir / 'archiver-runs.log'})")
    result.acked_lost = record.lost()
    result.check(result.acked_lost == 0, f"{result.acked_lost} rows durable before a kill are missing")
    result.check(leftover_spools(root) == [], f"spools left after the final run: {leftover_spools(root)}")
    counts: Counter = Counter()
    for venue, symbols in (("binance", ("BTCUSDT", "ETHUSDT")), ("bybit", ("BTCUSDT",))):
        for symbol in symbols:
            for channel in ("trades", "l2book", "events"):
                for row in read_channel(root, channel, symbol, venue).to_pylist():
                    counts[(venue, row_identity(channel, symbol, row))] += 1
    result.doubled = sum(n - 1 for n in counts.values() if n > 1)
    result.check(result.doubled == 0, f"{result.doubled} rows archived twice")
    result.details.update(durable=len(record.rows), rows=len(counts), killed_pids=killed_pids)
    result.notes = (f"{kills} kills ({killed_pids} processes: driver, Ray, actors), {len(record.rows)} rows durable "
                    f"before the kills, {len(counts)} rows archived; books not judged (the truth died with "
                    "the driver)")
    result.seconds = time.monotonic() - started
    return result


# ----------------------------------------------------------------------------- a full disk
def _fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the file system is full; the file."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 4096, 512):          # big blocks, then the last few KB
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def disk_full_family(workdir: Path, full_s: float = 10.0, size_mb: int = 256) -> FamilyResult:
    """A real tmpfs of ``size_mb`` as the archive root, filled up while the archiver runs and freed
    ``full_s`` later: writes fail and are re-sent, nothing is lost, nothing doubled, books stay
    true. Needs root (mount); the caller falls back to the RLIMIT_FSIZE variant otherwise."""
    import subprocess

    result = FamilyResult(f"disk full (tmpfs {size_mb} MB, full {full_s:.0f} s) then freed")
    started = time.monotonic()
    mount = workdir / "tmpfs"
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)], check=True)
    try:
        root = mount / "archive"
        record = DurableRecord(root)

        def script(runs) -> dict:
            time.sleep(3.0)
            record.take()
            filler = _fill(mount)
            time.sleep(full_s)
            failures = sum(run.socket_stats(timeout=30).write_failures for run in runs)
            free_while_full = os.statvfs(mount).f_bavail
            filler.unlink()
            time.sleep(4.0)
            record.take()
            return {"write_failures": failures, "free_blocks_while_full": free_while_full}

        settings = sim_settings(root, {"binance": ["BTCUSDT", "ETHUSDT"]})
        report, runs, seen = run_with_script(settings, script)
        result.injected = 1
        result.details.update(seen=seen)
        result.check(seen["write_failures"] > 0, f"the full disk failed no write ({seen})")
        result.acked_lost = record.lost()
        result.check(result.acked_lost == 0, f"{result.acked_lost} durable rows missing")
        result.check(leftover_spools(root) == [], f"spools left: {leftover_spools(root)}")
        verdicts = _judge_into(result, root, runs)
        losses = [ev.detail[:80] for ev in events_of(root, runs[0]) if ev.kind in ("gap", "disconnect", "lost")
                  and ev.detail != "stopped"]
        result.check(not losses and verdicts["binance"].trades_missing == 0,
                     f"data lost while the disk was full: {losses[:3]}")
        result.notes = f"{seen['write_failures']} failed writes re-sent; nothing lost"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    result.seconds = time.monotonic() - started
    return result


def disk_full_rlimit_family(workdir: Path, calls: int = 40, full_calls: int = 20) -> FamilyResult:
    """Without root: the delivery path (Outbox → ScheduledStore → spool) in this process under an
    RLIMIT_FSIZE that makes the spool's next appends fail (EFBIG, as on a full disk), lifted later:
    calls fail and are re-sent, nothing torn stays in the spool, every row is sealed exactly once."""
    import asyncio
    import resource
    import signal as signals

    from actors.feed.outbox import Outbox
    from actors.storage.sealing import ScheduledStore
    from archive_reading import read_channel
    from writer_fixtures import SYM, T0, call_batches, make_core

    result = FamilyResult("disk full (RLIMIT_FSIZE in one process) then freed")
    started = time.monotonic()
    root = workdir / "archive-rlimit"
    writer = ScheduledStore(make_core(root, rollover_s=3600), grace_ns=0, clock="data")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signals.signal(signals.SIGXFSZ, signals.SIG_IGN)

    async def send(name, producer, seq, batches):
        return await asyncio.to_thread(writer.write, producer, seq, batches)

    async def main() -> Outbox:
        outbox = Outbox("p1", ["w"], send, retry_min_s=0.02, retry_max_s=0.1)
        full_from, full_until = calls // 4, calls // 4 + full_calls
        for i in range(calls):
            if i == full_from:
                await outbox.drain(30)
                spool = next((root / ".spool").rglob("*.spool"))
                resource.setrlimit(resource.RLIMIT_FSIZE, (spool.stat().st_size + 500, hard))   # the disk fills up
            if i == full_until:
                await asyncio.sleep(0.5)
                result.check(outbox.failures > 0 and outbox.pending_rows > 0, "no write failed on the full disk")
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))                          # space is back
            outbox.put("w", call_batches(i * 10, 10, T0 + i * 10_000_000))
            await asyncio.sleep(0.01)
        result.check(await outbox.drain(30), "rows still pending after the disk was freed")
        return outbox

    try:
        outbox = asyncio.run(main())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signals.signal(signals.SIGXFSZ, previous)
    writer.seal_all()
    ids = [int(i) for i in read_channel(root, "trades", SYM).column("trade_id").to_pylist()]
    result.injected = 1
    result.acked_lost = len(set(range(calls * 10)) - set(ids))
    result.doubled = len(ids) - len(set(ids))
    result.check(sorted(ids) == list(range(calls * 10)), f"{result.acked_lost} rows lost, {result.doubled} doubled")
    result.check(not list((root / ".spool").rglob("*.spool")), "a spool was left after sealing")
    result.details.update(failures=outbox.failures)
    result.notes = f"{outbox.failures} failed calls re-sent (same sequence numbers); nothing lost or doubled"
    result.seconds = time.monotonic() - started
    return result
