"""The spool under faults: a full disk, damaged frames, a garbage watermarks file.

Each case is a data-loss defect found by a fault probe: rows acknowledged to the socket must
all come back after sealing and after a restart, and what cannot come back is reported.
"""
from __future__ import annotations

import os
import resource
import signal

import orjson
import pytest

from actors.storage.layout import NS
from actors.storage.spool import SpoolError, read_frames
from archive_reading import read_channel
from writer_fixtures import SYM, T0, call_batches, make_core, trade_ids


@pytest.fixture()
def file_size_limit():
    """Set the soft RLIMIT_FSIZE of this process (a write past it fails with EFBIG, mid-frame)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(nbytes: int | None) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft if nbytes is None else nbytes, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


def spool_path(root):
    return next((root / ".spool").rglob("*.spool"))


def test_failed_append_leaves_the_spool_as_it_was(tmp_path, file_size_limit):
    """Disk full mid-frame: the error names the cause, nothing torn stays, later rows survive."""
    core = make_core(tmp_path)
    assert core.write("p1", 1, call_batches(0, 10, T0))
    path = spool_path(tmp_path)
    good_size = path.stat().st_size
    file_size_limit(good_size + 100)             # room for part of the next frame only
    with pytest.raises(SpoolError) as failed:
        core.write("p1", 2, call_batches(10, 10, T0 + NS))
    file_size_limit(None)                        # space is back
    message = str(failed.value)
    assert str(path) in message and "File too large" in message, message
    assert path.stat().st_size == good_size, "a torn frame was left in the spool"
    assert core.watermarks["p1"] == 1, "a failed call must not be acknowledged"
    assert core.write("p1", 2, call_batches(10, 10, T0 + NS))          # the socket's retry
    assert core.write("p1", 3, call_batches(20, 10, T0 + 2 * NS))
    frames, valid, size = read_frames(str(path))[:3]
    assert valid == size and len(frames) == 3
    del core                                     # restart: recovery sees every acknowledged call
    core = make_core(tmp_path)
    assert core.watermarks["p1"] == 3
    core.seal_all()
    assert sorted(map(int, trade_ids(tmp_path))) == list(range(30))


def test_damaged_frame_is_skipped_and_reported_not_the_rest(tmp_path):
    """16 bytes flipped in frame 5 of 10: the other 9 calls are sealed, the loss is an event."""
    core = make_core(tmp_path)
    offsets = []
    for i in range(10):
        offsets.append(spool_path(tmp_path).stat().st_size if i else 0)
        assert core.write("p1", i + 1, call_batches(i * 10, 10, T0 + i * NS // 2))
    path = spool_path(tmp_path)
    data = bytearray(path.read_bytes())
    middle = (offsets[4] + offsets[5]) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))
    del core
    core = make_core(tmp_path)
    report = core.recovery
    assert report["damaged_bytes"] == offsets[5] - offsets[4], report
    assert report["lost_calls"] == {"p1": [[5, 5]]}, report
    core.seal_all()
    want = [n for n in range(100) if not 40 <= n < 50]
    assert sorted(map(int, trade_ids(tmp_path))) == want
    events = read_channel(tmp_path, "events", SYM).to_pylist()
    lost = [e for e in events if e["kind"] == "lost"]
    assert len(lost) == 1 and "spool" in lost[0]["detail"] and (lost[0]["seq_from"], lost[0]["seq_to"]) == (5, 5)


def test_damaged_tail_after_valid_frames_is_reported(tmp_path):
    core = make_core(tmp_path)
    for i in range(3):
        core.write("p1", i + 1, call_batches(i * 10, 10, T0 + i * NS))
    path = spool_path(tmp_path)
    with open(path, "ab") as f:
        f.write(os.urandom(333))                 # garbage after the last frame (e.g. a torn write)
    del core
    core = make_core(tmp_path)
    assert core.recovery["damaged_bytes"] == 333 and core.recovery["lost_calls"] == {}
    assert core.write("p1", 4, call_batches(30, 10, T0 + 3 * NS))
    core.seal_all()
    assert sorted(map(int, trade_ids(tmp_path))) == list(range(40))


def test_garbage_watermarks_are_rebuilt_from_the_spool(tmp_path):
    core = make_core(tmp_path)
    for i in range(5):
        core.write("p1", i + 1, call_batches(i * 10, 10, T0 + i * NS))
    core.seal_due(T0 + 11 * NS, 0)               # watermarks.json is written at a seal
    for i in range(5, 8):
        core.write("p1", i + 1, call_batches(i * 10, 10, T0 + 11 * NS + i * NS))
    marks = tmp_path / ".spool" / "w1" / "watermarks.json"
    assert orjson.loads(marks.read_bytes()) == {"p1": 5}
    marks.write_bytes(b"\x00garbage{{{")
    del core
    core = make_core(tmp_path)                   # no exception: rebuilt from frames and sealed footers
    assert core.watermarks["p1"] == 8
    assert not core.write("p1", 3, call_batches(20, 10, T0 + 2 * NS)), "a re-send of a sealed call"
    assert not core.write("p1", 8, call_batches(70, 10, T0 + 18 * NS))
    core.seal_all()
    assert sorted(map(int, trade_ids(tmp_path))) == list(range(80))
    assert any(p.name.startswith("watermarks.json.corrupt") for p in marks.parent.iterdir())


def test_garbage_watermarks_with_everything_sealed_come_from_the_footers(tmp_path):
    core = make_core(tmp_path)
    for i in range(5):
        core.write("p1", i + 1, call_batches(i * 10, 10, T0 + i * NS))
    core.seal_all()
    (tmp_path / ".spool" / "w1" / "watermarks.json").write_text("[1, 2")
    del core
    core = make_core(tmp_path)
    assert core.watermarks == {"p1": 5}
    assert not core.write("p1", 5, call_batches(40, 10, T0 + 4 * NS)), "Ray's retry of the last call"
