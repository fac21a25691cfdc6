"""Write-ahead spool files: append-only, checksummed frames of Arrow batches, fsynced per write.

One spool file holds one writer's rows for one period (all its streams). A frame is one
part of one ``write`` call::

    MAGIC(4) | body length (u32) | crc32 of body (u32) | body
    body = header length (u32) | header JSON | Arrow IPC stream of each batch, back to back

The header names the producer, its call sequence number, the part index and part count
(a call whose rows span two periods has one part per period), and the (symbol, channel,
length) of every batch. A torn tail (crash during a write) fails the length or CRC check;
:func:`read_frames` stops there and reports the offset, and :meth:`SpoolFile.open`
truncates the file to it so later appends follow valid frames.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import Iterator

import orjson
import pyarrow as pa

MAGIC = b"TASP"
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
        batches[(symbol, channel)] = batch[0] if batch else pa.RecordBatch.from_pylist([], schema=table.schema)
        offset += size
    return Frame(header["producer"], header["seq"], header["part"], header["parts"], batches)


def read_frames(path: str) -> tuple[list[Frame], int, int]:
    """All valid frames of a spool file, the offset after the last one, and the file size."""
    frames: list[Frame] = []
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset + _HEAD.size <= len(data):
        magic, length, crc = _HEAD.unpack_from(data, offset)
        start = offset + _HEAD.size
        body = data[start:start + length]
        if magic != MAGIC or len(body) != length or zlib.crc32(body) != crc:
            break
        try:
            frames.append(_decode_body(body))
        except (pa.ArrowInvalid, ValueError, KeyError):
            break
        offset = start + length
    return frames, offset, len(data)


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
        view = memoryview(frame)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.size += len(frame)

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


def iter_frames(paths: list[str]) -> Iterator[Frame]:
    for path in paths:
        yield from read_frames(path)[0]
