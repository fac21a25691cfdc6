"""Clock frames: how a replay server tells the client the recorded receive time of what follows.

A replay server sends one binary frame (:func:`encode_clock`) before the frames it replays;
the feed connection reads it with :func:`decode_clock` and stamps the next rows with that
time instead of the wall clock, so a replayed capture lands in the archive at its original
hours. Live venues never send such a frame (the magic does not occur in their protocols).
"""
from __future__ import annotations

import struct

CLOCK_MAGIC = b"TACLK"
_CLOCK = struct.Struct("<q")


def encode_clock(ts_ns: int) -> bytes:
    """A binary clock frame: the recorded receive time of the frames that follow."""
    return CLOCK_MAGIC + _CLOCK.pack(ts_ns)


def decode_clock(data: bytes | bytearray) -> int | None:
    """The time in a clock frame, or None for any other frame."""
    if len(data) == len(CLOCK_MAGIC) + _CLOCK.size and data[:len(CLOCK_MAGIC)] == CLOCK_MAGIC:
        return _CLOCK.unpack_from(data, len(CLOCK_MAGIC))[0]
    return None
