"""Streaming readers of recorded exchange traffic (``tests/fixtures/real``), venue-neutral.

* hftbacktest collector ``*.gz``: one line per message, ``<receive time ns> <raw JSON>``.
* cryptofeed v3 capture ``*.jsonl.zst``: one JSON object per line with ``t`` in
  ``header | http | connect | send | recv``, ``conn``, ``ts`` (float seconds), ``data``.

Both yield :class:`Recorded` items one at a time; a recording is never loaded whole.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson


@dataclass(frozen=True)
class Recorded:
    """One recorded frame: receive time (ns), the payload text, and what kind of line it was."""

    ts_local: int
    payload: str
    kind: str = "recv"        # recv | send | http | connect | header
    conn: str = ""
    url: str = ""             # cryptofeed: the URL of an ``http`` or ``connect`` line


def open_text(path: str | Path) -> io.TextIOBase:
    """A text stream over a ``.gz``, ``.zst`` or plain file."""
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), encoding="utf-8")
    return open(path, "rt", encoding="utf-8")


def read_recording(path: str | Path) -> Iterator[Recorded]:
    """Every frame of a recording, in recorded order (format chosen by the file name)."""
    if str(path).endswith(".jsonl.zst") or str(path).endswith(".jsonl"):
        yield from _read_cryptofeed(path)
    else:
        yield from _read_hftbacktest(path)


def _read_hftbacktest(path: str | Path) -> Iterator[Recorded]:
    with open_text(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            ts, _, payload = line.partition(" ")
            yield Recorded(int(ts), payload)


def _read_cryptofeed(path: str | Path) -> Iterator[Recorded]:
    with open_text(path) as f:
        for line in f:
            if not line.strip():
                continue
            obj = orjson.loads(line)
            data = obj.get("data", "")
            if not isinstance(data, str):
                data = orjson.dumps(data).decode()
            ts = obj.get("ts")
            ts_ns = int(round(float(ts) * 1e9)) if ts is not None else 0
            yield Recorded(ts_ns, data, obj.get("t", "recv"), str(obj.get("conn", "")), str(obj.get("url") or obj.get("addr") or ""))


def first_lines(path: str | Path, n: int = 50) -> list[str]:
    """The first ``n`` lines (to sniff a recording's venue)."""
    out = []
    try:
        with open_text(path) as f:
            for line in f:
                out.append(line)
                if len(out) >= n:
                    break
    except (OSError, EOFError, ValueError):
        return []
    return out
