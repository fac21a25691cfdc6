"""Recovering a writer's spool folder: after a crash, on restart, or on a node its streams left.

:func:`recover` runs three named steps over a :class:`~actors.storage.writer.SymbolStore`:

1. :func:`scan_spools` reads every spool of the folder (damaged stretches skipped, torn tails
   truncated so appends follow valid frames) and registers the calls they hold;
2. :func:`settle_calls` decides, by one rule (:func:`acknowledged`), which calls the producers
   were told are durable, restores the watermarks and names the acknowledged calls whose frames
   are gone (*lost*: only possible when a spool was damaged);
3. :func:`record_loss` writes a ``lost`` event into each damaged period, so the archive says so.

It also commits what the folder's seal journal (:mod:`actors.storage.journal`) still names: files
renamed into place whose catalog commit a crash cut short.

For a node that comes back after its streams moved elsewhere, :func:`unsealed_calls` lists the
acknowledged rows its spools still hold, call by call, to be handed to the streams' current
writers, and :func:`discard_spools` deletes the folder afterwards.
"""
from __future__ import annotations

import glob
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa

from actors.logs import get_logger
from actors.storage.footer import calls_in, ranges
from actors.storage.layout import newest_files
from actors.storage.spool import SpoolFile, encode_frame, fsync_dir, read_frames, scan_spool

if TYPE_CHECKING:
    from actors.storage.writer import SymbolStore

log = get_logger("writer")

WATERMARKS = "watermarks.json"


@dataclass
class Call:
    """One write call as the spools hold it: its part count, the parts seen, the periods it spans."""

    parts: int
    seen: set[int] = field(default_factory=set)
    periods: set[int] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return len(self.seen) == self.parts


@dataclass
class SpoolScan:
    """What :func:`scan_spools` found."""

    spools: int = 0
    frames: int = 0
    damaged_bytes: int = 0
    damage: dict[int, list[tuple[int, int]]] = field(default_factory=dict)   # period -> damaged stretches
    last_ts: dict[int, int] = field(default_factory=dict)                    # period -> newest ts before damage


def recover(core: "SymbolStore") -> dict[str, Any]:
    """Load the watermarks and every spool left in the core's folder (see module docstring).

    Returns ``{"spools", "frames", "damaged_bytes", "lost_calls", "journal"}``; never raises for bad
    files on disk.
    """
    persisted = load_watermarks(core)
    scan = scan_spools(core)
    lost = settle_calls(core, persisted, damaged=bool(scan.damage))
    if scan.damage:
        sizes = {period: core.spools[period].size for period in scan.damage}
        inside = {period: stretches for period, stretches in scan.damage.items()     # not just a torn tail
                  if lost or any(end < sizes[period] for _, end in stretches)}
        if inside:
            record_loss(core, inside, scan.last_ts, lost)
    core.pending_records = core.journal.pending(core.root) + core.pending_records
    if scan.spools:
        log.info(f"recovered {scan.spools} spool(s), {scan.frames} frames", extra={"writer": core.writer_id})
    return {"spools": scan.spools, "frames": scan.frames, "damaged_bytes": scan.damaged_bytes, "lost_calls": lost,
            "journal": len(core.pending_records)}


def scan_spools(core: "SymbolStore") -> SpoolScan:
    """Step 1: open every spool for appending and register the calls, times and trade ids it holds."""
    scan = SpoolScan()
    for spool_path in sorted(glob.glob(os.path.join(core.spool_dir, "*.spool"))):
        try:
            period = int(Path(spool_path).stem)
        except ValueError:
            log.error(f"ignoring {spool_path}: not a spool of this writer", extra={"writer": core.writer_id})
            continue
        found = scan_spool(spool_path)
        if found.damaged:
            scan.damage[period] = found.damaged
            scan.damaged_bytes += found.damaged_bytes
            log.error(f"spool {spool_path}: skipped {found.damaged_bytes} damaged bytes at "
                      f"{', '.join(f'{a}-{b}' for a, b in found.damaged)} ({len(found.frames)} valid frames kept)",
                      extra={"writer": core.writer_id})
        core.spools[period] = SpoolFile(spool_path).open(valid_size=found.valid_end)
        scan.spools += 1
        scan.frames += len(found.frames)
        for frame in found.frames:
            call = core.calls.setdefault(frame.call, Call(frame.parts))
            call.seen.add(frame.part)
            call.periods.add(period)
            core.see(frame.batches)
            top = max_ts(frame.batches.values())
            if top is not None:
                scan.last_ts[period] = max(scan.last_ts.get(period, top), top)
    return scan


def acknowledged(seq: int, persisted: int, newest_complete: int) -> bool:
    """The one rule for "its producer was told this call is durable": at or below the saved
    watermark, or older than a complete call of the same producer (a producer sends one call at a
    time, so only its newest call can be unacknowledged)."""
    return seq <= persisted or seq < newest_complete


def settle_calls(core: "SymbolStore", persisted: dict[str, int], damaged: bool) -> dict[str, list[list[int]]]:
    """Step 2: watermarks from the complete calls; the acknowledged calls lost to damage, as runs per producer.

    An acknowledged call with parts missing keeps the parts that are left (they are sealed); a
    torn tail alone (damage only at the end) is a call in flight at a crash, never acknowledged.
    """
    core.watermarks = dict(persisted)
    newest_complete: dict[str, int] = {}
    for (producer, seq), call in core.calls.items():
        if call.complete:
            newest_complete[producer] = max(newest_complete.get(producer, 0), seq)
    lost: dict[str, list[int]] = {}
    for (producer, seq), call in sorted(core.calls.items()):
        if acknowledged(seq, persisted.get(producer, 0), newest_complete.get(producer, 0)) and not call.complete:
            if damaged:
                lost.setdefault(producer, []).append(seq)
            call.seen = set(range(call.parts))
        if call.complete and seq > core.watermarks.get(producer, 0):
            core.watermarks[producer] = seq
    if damaged:             # acknowledged calls of which no frame is left at all
        for producer, top in newest_complete.items():
            seen = {seq for (p, seq) in core.calls if p == producer}
            floor = persisted.get(producer, min(seen) - 1)
            lost.setdefault(producer, []).extend(s for s in range(floor + 1, top) if s not in seen)
    return {p: ranges(sorted(set(seqs))) for p, seqs in lost.items() if seqs}


def record_loss(core: "SymbolStore", damage: dict[int, list[tuple[int, int]]], last_ts: dict[int, int],
                lost_calls: dict[str, list[list[int]]]) -> None:
    """Step 3: a ``lost`` event per symbol into each damaged period, spooled like any other call."""
    from actors.feed.records import StreamBuffers

    calls = "; ".join(f"{p} calls {', '.join(f'{a}-{b}' if a != b else str(a) for a, b in r)}"
                      for p, r in lost_calls.items()) or "no acknowledged call identified"
    seqs = [s for r in lost_calls.values() for pair in r for s in pair]
    for period, stretches in sorted(damage.items()):
        nbytes = sum(b - a for a, b in stretches)
        detail = f"spool damage: {nbytes} bytes unreadable in {len(stretches)} stretch(es); lost {calls}"
        sink = StreamBuffers()
        for symbol in sorted(core.symbols):
            sink.event(symbol, last_ts.get(period, period), "", "lost", detail,
                       min(seqs) if seqs else None, max(seqs) if seqs else None)
        producer = f"recovery-{uuid.uuid4().hex[:12]}"
        core.spool(period).append(encode_frame(producer, 1, 0, 1, sink.take()))
        core.calls[(producer, 1)] = Call(1, {0}, {period})


def load_watermarks(core: "SymbolStore") -> dict[str, int]:
    """The saved watermarks; rebuilt from the newest sealed files when missing or unreadable."""
    path = os.path.join(core.spool_dir, WATERMARKS)
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                return {str(k): int(v) for k, v in orjson.loads(f.read()).items()}
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError, OSError) as exc:
            aside = f"{path}.corrupt-{time.time_ns()}"
            os.replace(path, aside)
            log.error(f"{path} is unreadable ({exc}); moved to {aside}, rebuilding the watermarks "
                      "from the spool frames and the sealed files", extra={"writer": core.writer_id})
    elif not glob.glob(os.path.join(core.spool_dir, "*.spool")):
        return {}
    return watermarks_from_sealed(core)


def watermarks_from_sealed(core: "SymbolStore") -> dict[str, int]:
    """Highest call per producer in the footers of the core's newest sealed files."""
    marks: dict[str, int] = {}
    for stream in core.streams():
        for path in newest_files(core.root, stream):
            try:
                calls = calls_in(path)
            except Exception as exc:      # a damaged file: reported by reindex/backup
                log.warning(f"cannot read the footer of {path}: {exc}", extra={"writer": core.writer_id})
                continue
            for producer, seq in calls:
                marks[producer] = max(marks.get(producer, 0), seq)
    return marks


def save_watermarks(core: "SymbolStore", max_producers: int = 1000) -> None:
    """Persist the watermarks (the oldest producers, restarted sockets, go first beyond ``max_producers``)."""
    if len(core.watermarks) > max_producers:
        core.watermarks = dict(sorted(core.watermarks.items(), key=lambda kv: kv[1])[-max_producers:])
    path = os.path.join(core.spool_dir, WATERMARKS)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(core.watermarks))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def max_ts(batches) -> int | None:
    """Newest ``ts_local`` (ns) of some batches, None when they hold no rows."""
    import pyarrow.compute as pc

    tops = [pc.max(b.column("ts_local").cast(pa.int64())).as_py() for b in batches if b.num_rows]
    return max(tops) if tops else None


def unsealed_calls(core: "SymbolStore") -> list[tuple[str, int, dict[tuple[str, str], pa.RecordBatch]]]:
    """The acknowledged rows a recovered core still holds only in its spools, call by call.

    For a node that comes back after its streams moved to another node: every complete call in
    the spools, in ``(producer, seq)`` order, its parts of several periods joined, without the
    streams whose sealed file in this root already holds the call (a seal cut short by the
    crash). Handing these calls to the stream's current writer (same producer and sequence
    number, so a repeated hand-over is dropped there) puts every row in the archive once.
    Call :func:`recover` first.
    """
    calls: dict[tuple[str, int], dict[tuple[str, str], list[pa.RecordBatch]]] = {}
    for period, spool in sorted(core.spools.items()):
        held: dict[str, set] = {}
        for stream in core.streams():
            path = os.path.join(core.root, stream.relpath(period, core.rollover_ns))
            if os.path.exists(path):
                held[stream.channel] = calls_in(path)
        seen: set[tuple[str, int, int]] = set()
        frames, _, _ = read_frames(spool.path)
        for frame in frames:
            call = core.calls.get(frame.call)
            ident = (frame.producer, frame.seq, frame.part)
            if call is None or not call.complete or ident in seen:
                continue
            seen.add(ident)
            for (symbol, channel), batch in frame.batches.items():
                if frame.call not in held.get(channel, ()):
                    calls.setdefault(frame.call, {}).setdefault((symbol, channel), []).append(batch)
    return [(producer, seq, {key: parts[0] if len(parts) == 1 else pa.concat_batches(parts)
                             for key, parts in batches.items()})
            for (producer, seq), batches in sorted(calls.items())]


def sealed_in_spools(core: "SymbolStore") -> list[str]:
    """Relative paths of the files already sealed for the periods the core's spools still hold
    (a seal whose spool a crash left behind): their catalog rows must exist before the spools go."""
    out = []
    for period in sorted(core.spools):
        for stream in core.streams():
            rel = stream.relpath(period, core.rollover_ns)
            if os.path.exists(os.path.join(core.root, rel)):
                out.append(rel)
    return out


def discard_spools(core: "SymbolStore") -> None:
    """Delete a core's spools, watermarks and journal (after :func:`unsealed_calls` were handed over
    and the journal's files committed)."""
    for spool in core.spools.values():
        spool.close()
    core.spools.clear()
    shutil.rmtree(core.spool_dir, ignore_errors=True)
    fsync_dir(os.path.dirname(core.spool_dir))

