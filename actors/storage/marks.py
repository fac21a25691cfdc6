"""Which recorded events say that rows may be missing, counted per events file at seal.

The coverage rule (:mod:`actors.restore.coverage`) counts, per stream-hour, the *holes* (``gap``
and ``lost`` events: a sequence break, a stale or crossed book, a damaged spool frame) and the
``disconnect`` events of the symbol. So that a status over a year of files reads no events file,
each sealed events file's catalog row carries its counts per event channel (``marks``:
``{"l2book": [holes, disconnects], "": [...]}``, ``""`` meaning the whole symbol).
"""
from __future__ import annotations

from collections import Counter

import orjson
import pyarrow as pa

HOLE_KINDS = ("gap", "lost")          # rows may be missing around these events
DISCONNECT_KINDS = ("disconnect",)


def event_marks(events: pa.Table) -> str:
    """The ``marks`` of an events file's rows (JSON; ``{}`` when it holds neither kind)."""
    holes: Counter[str] = Counter()
    disconnects: Counter[str] = Counter()
    for channel, kind in zip(events.column("channel").to_pylist(), events.column("kind").to_pylist()):
        if kind in HOLE_KINDS:
            holes[channel or ""] += 1
        elif kind in DISCONNECT_KINDS:
            disconnects[channel or ""] += 1
    return orjson.dumps({c: [holes[c], disconnects[c]] for c in sorted(set(holes) | set(disconnects))}).decode()


def decode_marks(marks: str | None) -> dict[str, list[int]] | None:
    """``marks`` as a dict; None when the row has none (sealed before marks were recorded)."""
    return None if marks is None else orjson.loads(marks)
