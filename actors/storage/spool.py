"""Write-ahead spool files: append-only, checksummed frames of Arrow batches, fsynced per write.

One spool file holds one writer's rows for one period (all its streams). A frame is one
part of one ``write`` call::

    MAGIC(4) | body length (u32) | crc32 of body (u32) | body
    body = header length (u32) | header JSON | Arrow IPC stream of each batch, back to back

The header names the producer, its call sequence number, the part index and part count
(a call whose rows span two periods has one part per period), and the (symbol, channel,
length) of every batch. Batches come back in their channel's record schema of today: frames
spooled by an older version (a trade without ``trade_type``) are conformed as they are read.

Damage is found by the length and CRC checks. :func:`read_frames` skips a damaged stretch
and resynchronises on the next valid frame (magic, plausible length, matching CRC), so one
bad frame never costs the frames after it; it reports every damaged stretch. A torn tail
(crash or full disk during a write) is such a stretch at the end: :meth:`SpoolFile.open`
truncates it so later appends follow valid frames, and :meth:`SpoolFile.append` undoes a
write that failed part-way (truncating back to the last whole frame) before it raises.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field

import orjson
import pyarrow as pa

from actors.errors import TickarchiveError
from actors.feed.records import SCHEMAS, conform

MAGIC = b"TASP"
MAX_FRAME_BYTES = 1 << 31
_HEAD = struct.Struct("<4sII")
_U32 = struct.Struct("<I")


@dataclass
class Frame:
    """One decoded spool frame."""

    producer: str
    seq: int
    part: int
    parts: int
    batches: dict[tuple[str, str], pa.RecordBatch]

    @property
    def call(self) -> tuple[str, int]:
        return (self.producer, self.seq)


def encode_frame(producer: str, seq: int, part: int, parts: int,
                 batches: dict[tuple[str, str], pa.RecordBatch]) -> bytes:
    """The bytes of one frame (see module docstring)."""
    payloads, streams = [], []
    for (symbol, channel), batch in batches.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        buf = sink.getvalue()
        payloads.append(buf)
        streams.append([symbol, channel, buf.size])
    header = orjson.dumps({"producer": producer, "seq": seq, "part": part, "parts": parts,
                           "streams": streams})
    body = b"".join([_U32.pack(len(header)), header, *[p.to_pybytes() for p in payloads]])
    return _HEAD.pack(MAGIC, len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes) -> Frame:
    (hlen,) = _U32.unpack_from(body, 0)
    header = orjson.loads(body[4:4 + hlen])
    offset = 4 + hlen
    batches = {}
    for symbol, channel, size in header["streams"]:
        reader = pa.ipc.open_stream(pa.py_buffer(body[offset:offset + size]))
        table = reader.read_all()
        batch = table.combine_chunks().to_batches()
        batch = batch[0] if batch else pa.RecordBatch.from_pylist([], schema=table.schema)
        batches[(symbol, channel)] = conform(batch, channel) if channel in SCHEMAS else batch
        offset += size
    return Frame(header["producer"], header["seq"], header["part"], header["parts"], batches)


class SpoolError(TickarchiveError, OSError):
    """An append could not be made durable; the spool was left as it was before the call."""


@dataclass
class SpoolScan:
    """What :func:`scan_spool` found in one spool file."""

    frames: list[Frame]
    valid_end: int                  # offset after the last valid frame (appends go there)
    size: int
    damaged: list[tuple[int, int]] = field(default_factory=list)   # [start, end) stretches skipped

    @property
    def damaged_bytes(self) -> int:
        return sum(end - start for start, end in self.damaged)


def _frame_at(data: bytes, offset: int) -> tuple[Frame, int] | None:
    """The valid frame starting at ``offset`` and the offset after it, or None."""
    if offset + _HEAD.size > len(data):
        return None
    magic, length, crc = _HEAD.unpack_from(data, offset)
    start = offset + _HEAD.size
    if magic != MAGIC or length > len(data) - start:
        return None
    body = data[start:start + length]
    if zlib.crc32(body) != crc:
        return None
    try:
        return _decode_body(body), start + length
    except (pa.ArrowInvalid, ValueError, KeyError, TypeError, IndexError):
        return None


def scan_spool(path: str) -> SpoolScan:
    """Every valid frame of a spool file, skipping (and reporting) damaged stretches."""
    with open(path, "rb") as f:
        data = f.read()
    scan = SpoolScan([], 0, len(data))
    offset = 0
    while offset < len(data):
        found = _frame_at(data, offset)
        if found is not None:
            frame, offset = found
            scan.frames.append(frame)
            scan.valid_end = offset
            continue
        resync = data.find(MAGIC, offset + 1)
        while resync != -1 and _frame_at(data, resync) is None:
            resync = data.find(MAGIC, resync + 1)
        end = len(data) if resync == -1 else resync
        scan.damaged.append((offset, end))
        offset = end
    return scan


def read_frames(path: str) -> tuple[list[Frame], int, int]:
    """All valid frames of a spool file, the offset after the last one, and the file size."""
    scan = scan_spool(path)
    return scan.frames, scan.valid_end, scan.size


class SpoolFile:
    """An open spool for appending; every :meth:`append` is durable when it returns."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self.size = 0

    def open(self, valid_size: int | None = None) -> "SpoolFile":
        """Open for appending (created if missing); truncate a torn tail to ``valid_size``."""
        new = not os.path.exists(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if valid_size is not None and os.fstat(self._fd).st_size > valid_size:
            os.ftruncate(self._fd, valid_size)
            os.fsync(self._fd)
        self.size = os.fstat(self._fd).st_size
        if new:
            fsync_dir(os.path.dirname(self.path))
        return self

    def append(self, frame: bytes) -> None:
        """Write and fsync one frame; on failure truncate back and raise :class:`SpoolError`."""
        view = memoryview(frame)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:
            self._undo()
            raise SpoolError(exc.errno, f"spool append to {self.path} failed ({exc.strerror}); "
                                        "the call was not acknowledged and will be re-sent") from exc
        self.size += len(frame)

    def _undo(self) -> None:
        """Cut a partly written frame so the file ends with whole frames again."""
        try:
            os.ftruncate(self._fd, self.size)
            os.fsync(self._fd)
        except OSError:     # recovery skips the torn stretch anyway (resync on the next frame)
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def fsync_dir(path: str) -> None:
    """Make a rename/creation/removal in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

