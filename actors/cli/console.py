"""What the operator sees while archiving: a live table on a terminal, a short status line otherwise.

The driver collects a :class:`Snapshot` (socket, writer and backup stats) every few seconds and
hands it to a :class:`RunConsole`: ``live`` redraws a ``rich`` table in place (venues:
connected, reconnects, msgs/s, lag; writers: rows/s, open spool; files sealed; backup
backlog), ``plain`` prints one line every ``status_every`` seconds (CI, ``nohup``, containers),
``json`` prints nothing extra (the JSON log lines are the console). Warnings and errors are
logged as they happen in every mode.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.feed.venue_feed import VenueFeedStats
    from actors.storage.writer import WriterStats

STATUS_FILE = "live-status.json"


@dataclass
class Snapshot:
    """Counters at one moment (``at``: monotonic seconds)."""

    at: float
    venues: dict[str, "VenueFeedStats"] = field(default_factory=dict)   # venue -> its feed stats
    writers: list["WriterStats"] = field(default_factory=list)          # one per writer process
    backup: dict[str, Any] | None = None


@dataclass
class VenueRow:
    venue: str
    connected: str
    reconnects: int
    msgs_per_s: float
    lag_ms: float | None
    rows_per_s: float
    pending_rows: int


def _rate(now: float, before: float | None, seconds: float) -> float:
    return max(0.0, (now - before) / seconds) if before is not None and seconds > 0 else 0.0


def venue_rows(now: Snapshot, before: Snapshot | None) -> list[VenueRow]:
    """Per venue figures, rates over the time since ``before``."""
    seconds = now.at - before.at if before else 0.0
    rows = []
    for venue, st in sorted(now.venues.items()):
        old = before.venues.get(venue) if before else None
        rows.append(VenueRow(venue, venue_state(st), max(0, st.connects - len(st.connected)),
                             _rate(st.frames, old.frames if old else None, seconds),
                             None if st.lag_s is None else st.lag_s * 1000.0,
                             _rate(st.sent_rows, old.sent_rows if old else None, seconds),
                             st.pending_rows))
    return rows


SILENT_AFTER = 3          # connections in a row without a market row before a venue shows as silent


def venue_state(st: "VenueFeedStats") -> str:
    """``1/1``, or why the venue is not delivering: ``waiting`` (its node is lost, none eligible),
    ``refused (HTTP 400)`` (every connection refused), ``0/1 silent`` (acknowledged, no market data)."""
    conns = st.connected
    if st.waiting:
        return "waiting"
    if st.refused and not any(conns):
        return f"refused ({st.refused[0]})"
    text = f"{sum(conns)}/{len(conns)}"
    if st.silent_reconnects >= SILENT_AFTER:
        text += " silent"
    return text


def totals(now: Snapshot, before: Snapshot | None) -> dict[str, float]:
    """Writers together: rows/s, open spool bytes, files sealed; backup backlog."""
    seconds = now.at - before.at if before else 0.0
    rows = sum(w.rows for w in now.writers)
    old_rows = sum(w.rows for w in before.writers) if before else None
    return {"writers": len(now.writers), "rows_per_s": _rate(rows, old_rows, seconds),
            "spool_mb": sum(w.spool_bytes for w in now.writers) / 1e6,
            "files": sum(w.files for w in now.writers),
            "backlog": (now.backup or {}).get("backlog", 0) if now.backup else -1}


def status_line(now: Snapshot, before: Snapshot | None) -> str:
    """One line: each venue's state, then the writers and the backup."""
    parts = []
    for row in venue_rows(now, before):
        lag = f" lag {max(0.0, row.lag_ms):.0f}ms" if row.lag_ms is not None else ""
        again = f" reconnects {row.reconnects}" if row.reconnects else ""
        parts.append(f"{row.venue} {row.connected} {row.msgs_per_s:.0f} msg/s{lag}{again}")
    t = totals(now, before)
    tail = (f"writers {t['writers']}: {t['rows_per_s']:.0f} rows/s, spool {t['spool_mb']:.1f} MB, "
            f"{t['files']:.0f} files sealed")
    if t["backlog"] >= 0:
        tail += f", backup backlog {t['backlog']:.0f}"
    return f"{time.strftime('%H:%M:%S')} " + " | ".join(parts + [tail])


def status_table(now: Snapshot, before: Snapshot | None):
    """The live view as a ``rich`` table."""
    from rich.table import Table

    table = Table(title="tickarchive", title_justify="left", expand=False)
    for column in ("venue", "connected", "reconnects", "msgs/s", "lag ms", "rows/s", "pending rows"):
        table.add_column(column, justify="left" if column == "venue" else "right")
    for row in venue_rows(now, before):
        table.add_row(row.venue, row.connected, str(row.reconnects), f"{row.msgs_per_s:,.0f}",
                      "-" if row.lag_ms is None else f"{row.lag_ms:,.0f}", f"{row.rows_per_s:,.0f}",
                      f"{row.pending_rows:,}")
    t = totals(now, before)
    table.caption = (f"{t['writers']} writers: {t['rows_per_s']:,.0f} rows/s, open spool {t['spool_mb']:.1f} MB, "
                     f"{t['files']:.0f} files sealed" + (f", backup backlog {t['backlog']:.0f}" if t["backlog"] >= 0 else ""))
    table.caption_justify = "left"
    return table


class RunConsole:
    """Shows snapshots in the chosen mode (see module docstring)."""

    def __init__(self, mode: str, every_s: float = 10.0, root: str | None = None) -> None:
        self.mode, self.every_s = mode, every_s
        self.status_path = Path(root) / "logs" / STATUS_FILE if root else None
        self.before: Snapshot | None = None
        self.last_line = 0.0
        self.live = None
        if mode == "live":
            from rich.console import Console
            from rich.live import Live

            self.live = Live(console=Console(file=sys.stderr), refresh_per_second=2, transient=False)
            self.live.start()

    @property
    def interval_s(self) -> float:
        """How often the driver should collect a snapshot."""
        return 2.0 if self.mode == "live" else self.every_s

    def show(self, now: Snapshot) -> None:
        if self.status_path is not None:          # what mode=status shows about a running archiver
            write_live_status(self.status_path, status_line(now, self.before), self.interval_s)
        if self.mode == "live" and self.live is not None:
            self.live.update(status_table(now, self.before))
        elif self.mode == "plain":
            print(status_line(now, self.before), file=sys.stderr, flush=True)
        self.before = now

    def close(self) -> None:
        """End of the run: the live view stops and ``mode=status`` no longer says it is running."""
        if self.live is not None:
            self.live.stop()
            self.live = None
        if self.status_path is not None:
            try:
                status = json.loads(self.status_path.read_text())
                write_live_status(self.status_path, status["line"], status["interval_s"], ended=True)
            except (OSError, ValueError, KeyError):
                pass


def write_live_status(path: Path, line: str, interval_s: float, ended: bool = False) -> None:
    """The running archiver's latest status line, for ``mode=status`` (replaced atomically;
    ``ended``: the run is over, its last line kept)."""
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"at": time.time(), "pid": os.getpid(), "interval_s": interval_s, "line": line,
                                   "ended": ended}))
        os.replace(tmp, path)
    except OSError:
        pass


def read_live_status(root: str) -> dict[str, Any] | None:
    """The running archiver's status, or None when none has reported recently (or its run ended)."""
    try:
        status = json.loads((Path(root) / "logs" / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if status.get("ended"):
        return None
    fresh = time.time() - float(status.get("at", 0)) <= 3 * float(status.get("interval_s", 10)) + 5
    return status if fresh else None
