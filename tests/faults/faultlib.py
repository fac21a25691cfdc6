"""What the fault tests and the full fault suite share: venue cases, archive runs with a fault
script, kill -9 helpers, the durable-rows record and the judgement of a run against the truth.

Nothing here stubs a component: runs are real (``run_archive`` on a real Ray instance, the
venue simulators on loopback), faults are injected into the simulators or by signals.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from truth_check import MS, TradeKeys, Verdict, from_archive, judge

#: the fault kinds the simulators inject (actors.venues.sim.server.SimulatedVenue.FAULTS)
NEW_KINDS = ("duplicate_frames", "reorder_frames", "oversized_frame", "venue_restart", "ack_then_silence")
ALL_KINDS = ("drop_connection", "stall", "break_chain", "malformed", *NEW_KINDS)
FAULT_KW = {"stall": {"seconds": 1.5}}          # longer than the suite's idle timeout
IDLE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class VenueCase:
    """How one venue's archive is matched to its simulator's truth."""

    symbols: tuple[str, str]
    book_key: Callable[[dict], int] = lambda r: r["seq"]
    trade_keys: TradeKeys = TradeKeys(lambda t: str(t.trade_id))
    has_ids: bool = True


VENUES = {
    "binance": VenueCase(("BTCUSDT", "ETHUSDT")),
    "bybit": VenueCase(("BTCUSDT", "ETHUSDT"), trade_keys=TradeKeys(lambda t: f"{t.trade_id:08x}-sim")),
    "hyperliquid": VenueCase(("BTC", "ETH"), book_key=lambda r: r["ts_exchange"] // MS, has_ids=False),
    "okx": VenueCase(("BTC-USDT-SWAP", "ETH-USDT-SWAP")),
    # WOO X trades carry no id: the client's id is "{ts}-{n}", so match on time, price, size and side
    "woox": VenueCase(("PERP_BTC_USDT", "PERP_ETH_USDT"), trade_keys=TradeKeys(
        lambda t: (t.exchange_ms, t.price, t.size, t.side),
        lambda r: (r["ts_exchange"] // MS, r["price"], r["size"], r["side"]))),
    "paradex": VenueCase(("BTC-USD-PERP", "ETH-USD-PERP")),
}


def sim_settings(root: str | Path, symbols: dict[str, list[str]], *extra: str):
    """Settings of a simulated run archiving ``symbols`` per venue (``extra`` overrides win)."""
    from actors.cli.config import load_settings
    from actors.venues import supported_venues

    overrides = dict(o.split("=", 1) for o in [
        "source=sim", *[f"archive.{v}=[{','.join(symbols.get(v, []))}]" for v in supported_venues()],
        "depth=10", "storage.rollover=2s", "storage.seal_grace=0.5s", f"storage.root={root}",
        "storage.symbols_per_writer=2", "source.messages_per_s=100", "source.record_truth=true",
        "socket.flush_ms=100", "socket.backoff_min_s=0.1", "socket.backoff_max_s=0.5",
        f"socket.idle_timeout_s={IDLE_TIMEOUT_S}", "log.console=plain", "log.status_every=1h", *extra])
    return load_settings([f"{k}={v}" for k, v in overrides.items()])


def run_with_script(settings, script: Callable[[list], Any]) -> tuple[Any, list, Any]:
    """Run the archive until ``script(runs)`` (in a thread, once the run started) returns; then the
    run drains and seals everything. Returns (report, runs, what the script returned)."""
    from actors.remote.archive import run_archive

    stop, holder = threading.Event(), {}

    def started(runs):
        holder["runs"] = runs

        def body():
            try:
                holder["result"] = script(runs)
            except BaseException as exc:  # surfaced after the run
                holder["error"] = exc
            finally:
                stop.set()
        threading.Thread(target=body, daemon=True, name="fault-script").start()

    report = run_archive(settings, stop_flag=stop, on_started=started)
    if "error" in holder:
        raise holder["error"]
    return report, holder["runs"], holder.get("result")


# ----------------------------------------------------------------------------- venue faults
def fault_plan(venues: list[str], kinds: tuple[str, ...], rounds: int) -> dict[str, list[tuple[str, str | None]]]:
    """Per venue, ``rounds`` times every kind (venues start at different kinds); break_chain
    alternates between the venue's two symbols."""
    plan = {}
    for offset, name in enumerate(venues):
        order = [kinds[(offset + i) % len(kinds)] for i in range(len(kinds))]
        steps = []
        for r in range(rounds):
            for kind in order:
                symbol = VENUES[name].symbols[r % 2] if kind == "break_chain" else None
                steps.append((kind, symbol))
        plan[name] = steps
    return plan


def venue_fault_script(plan: dict[str, list[tuple[str, str | None]]], spacing_s: float = 2.5,
                       warmup_s: float = 2.0, settle_s: float = 3.0,
                       on_step: Callable[[int], None] | None = None) -> Callable[[list], Counter]:
    """A run script injecting ``plan`` (one fault per venue every ``spacing_s``, ``on_step(n)`` after
    each step); the faults it injected."""
    def script(runs) -> Counter:
        servers = {run.spec.name: run.server for run in runs}
        injected: Counter = Counter()
        time.sleep(warmup_s)
        for step in range(max(map(len, plan.values()))):
            for name, faults in plan.items():
                if step < len(faults):
                    kind, symbol = faults[step]
                    servers[name].inject(kind, symbol=symbol, **FAULT_KW.get(kind, {}))
                    injected[kind] += 1
            time.sleep(spacing_s)
            if on_step is not None:
                on_step(step)
        time.sleep(settle_s)
        return injected
    return script


def judge_runs(root: str | Path, runs: list) -> dict[str, Verdict]:
    """Every archived symbol of every venue judged against its simulator's truth."""
    out = {}
    for run in runs:
        case = VENUES[run.spec.name]
        verdict = Verdict()
        for symbol in run.spec.symbols:
            archived = from_archive(root, run.spec.name, symbol, case.book_key, case.trade_keys)
            verdict = verdict + judge(archived, run.server.truth(symbol), case.trade_keys, case.has_ids,
                                      f"{run.spec.name}:{symbol}")
        out[run.spec.name] = verdict
    return out


# ----------------------------------------------------------------------------- kills and durability
def actor_pid(handle, timeout: float = 60) -> int:
    import ray

    return ray.get(handle.stats.remote(), timeout=timeout).pid


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def row_identity(channel: str, symbol: str, row: dict) -> tuple:
    """What names one archived row (times as int ns)."""
    if channel == "trades":
        key = row["trade_id"]
    elif channel == "l2book":
        key = row["seq"] if row["seq"] is not None else row["ts_exchange"]
    else:
        key = f"{row['kind']}:{row['detail'][:80]}"
    return channel, symbol, row["ts_local"], key


@dataclass
class DurableRecord:
    """Rows that were durable (spooled or sealed) at some moments: acknowledged rows can only be
    among them, so each must be in the final archive."""

    root: Path
    rows: set = field(default_factory=set)
    _sealed: dict = field(default_factory=dict)        # (path, mtime, size) -> identities

    def take(self) -> int:
        """Add what is durable now (every spool, then every sealed file); how many rows that is."""
        import pyarrow as pa

        from actors.storage.catalog import as_ns_ints
        from actors.storage.spool import scan_spool

        now: set = set()
        for spool in sorted(self.root.glob(".spool/*/*.spool")):
            try:
                frames = scan_spool(str(spool)).frames
            except FileNotFoundError:           # sealed meanwhile: its rows are in a Parquet file now
                continue
            for frame in frames:
                for (symbol, channel), batch in frame.batches.items():
                    for row in as_ns_ints(pa.Table.from_batches([batch])).to_pylist():
                        now.add(row_identity(channel, symbol, row))
        now |= self._sealed_rows()
        self.rows |= now
        return len(now)

    def _sealed_rows(self) -> set:
        import pyarrow.parquet as pq

        from actors.storage.catalog import as_ns_ints
        from actors.storage.fileformat import from_file
        from actors.storage.layout import parse_relpath
        from archive_reading import archive_files

        out: set = set()
        for path in archive_files(self.root):
            st = path.stat()
            key = (str(path), st.st_mtime_ns, st.st_size)
            if key not in self._sealed:
                parsed = parse_relpath(path.relative_to(self.root).as_posix())
                table = as_ns_ints(from_file(pq.read_table(path), parsed.stream.channel))
                self._sealed[key] = {row_identity(parsed.stream.channel, parsed.stream.symbol, row)
                                     for row in table.to_pylist()}
            out |= self._sealed[key]
        return out

    def lost(self) -> int:
        """Durable rows missing from the final archive."""
        final = DurableRecord(self.root)
        final.rows = final._sealed_rows()
        return len(self.rows - final.rows)


def leftover_spools(root: str | Path) -> list[str]:
    return [str(p) for p in Path(root).glob(".spool/*/*.spool")]


# ----------------------------------------------------------------------------- the table
@dataclass
class FamilyResult:
    """One row of the suite's table, and every check of the family that failed."""

    family: str
    injected: int = 0                    # faults the family injected (or bad inputs it gave)
    observed: int = 0                    # ... of them, those whose effect the family saw (``seen``)
    acked_lost: int | None = None        # rows acknowledged (durable) then missing; None: not measured
    doubled: int | None = None
    books_wrong: int | None = None
    unrecorded_gaps: int | None = None
    problems: list[str] = field(default_factory=list)
    notes: str = ""
    details: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, condition: bool, problem: str) -> None:
        """Record ``problem`` unless ``condition`` holds."""
        if not condition:
            self.problems.append(problem)

    def seen(self, condition: bool, problem: str, faults: int = 1) -> None:
        """``condition`` is the observed effect of ``faults`` injected faults: counted in ``observed``
        when it holds, else ``problem`` is recorded. Tests compare ``observed`` with ``injected``."""
        self.check(condition, problem)
        self.observed += faults if condition else 0

    @staticmethod
    def cell(value: int | None) -> str:
        return "n/a" if value is None else str(value)


def table(results: list[FamilyResult]) -> str:
    """The suite's results as a Markdown table."""
    head = ("| fault family | injected | acknowledged rows lost | rows doubled | book rows ≠ truth | "
            "unrecorded gaps | result | notes |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in results:
        notes = r.notes + (f" — problems: {'; '.join(r.problems)}" if r.problems else "")
        lines.append(f"| {r.family} | {r.injected} | {r.cell(r.acked_lost)} | {r.cell(r.doubled)} | {r.cell(r.books_wrong)} | "
                     f"{r.cell(r.unrecorded_gaps)} | {'PASS' if r.ok else 'FAIL'} | {notes.replace('|', '/')} |")
    return "\n".join(lines)


def kill_loop(targets: list[tuple[str, Any]], kills: int, spacing_s: float, record: DurableRecord,
              killed: list | None = None) -> Counter:
    """kill -9 ``kills`` actor processes in turn (``targets``: (family, handle)); each target answers
    again (Ray restarted it) before it is killed again. What was durable is recorded before each
    kill. Returns the kills per family (and appends each killed target to ``killed``); every kill
    hit a distinct process."""
    done: Counter = Counter()
    pids = set()
    for i in range(kills):
        family, handle = targets[i % len(targets)]
        pid = actor_pid(handle)
        assert pid not in pids, f"{family} process {pid} was not restarted"
        record.take()
        kill9(pid)
        pids.add(pid)
        done[family] += 1
        if killed is not None:
            killed.append((family, handle))
        time.sleep(spacing_s)
    for _, handle in targets:
        actor_pid(handle)
    return done


def kill_targets(runs: list, writers: bool = True, sockets: bool = True) -> list[tuple[str, Any]]:
    """Every writer and socket process of a run (a process shared by venues once), writers first."""
    def unique(handles):
        return list({h._actor_id: h for h in handles}.values())

    out = [("writer", h) for h in unique(h for run in runs for h in run.writers.values())] if writers else []
    return out + ([("socket", h) for h in unique(h for run in runs for h in run.sockets.values())] if sockets else [])


def venues_served(runs: list, handle) -> list[str]:
    """The venues whose sockets run in the process of ``handle``."""
    return [run.spec.name for run in runs if any(h._actor_id == handle._actor_id for h in run.sockets.values())]


def expected_socket_restarts(runs: list, killed: list) -> Counter:
    """Per venue, how often its socket process was killed (each kill restarts every venue it serves)."""
    return Counter(name for family, handle in killed if family == "socket" for name in venues_served(runs, handle))


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (``VmHWM``) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmHWM for process {pid}")


def slow_writer_script(stopped_s: float, record: DurableRecord, warmup_s: float = 2.0) -> Callable[[list], dict]:
    """A run script that freezes the first venue's writer (SIGSTOP) for ``stopped_s``, then lets it
    go on (SIGCONT) and waits until the socket handed every row over (what was durable is recorded
    before and after). Returns what it saw: the socket's peak pending rows while the writer was
    stopped and its process's peak memory."""
    def script(runs) -> dict:
        run = runs[0]
        writer = next(iter(run.writers.values()))
        time.sleep(warmup_s)
        writer_pid, socket_pid = actor_pid(writer), actor_pid(run.socket)
        peak_pending, until = 0, time.monotonic() + stopped_s
        record.take()
        os.kill(writer_pid, signal.SIGSTOP)
        try:
            while time.monotonic() < until:
                peak_pending = max(peak_pending, run.socket_stats(timeout=30).pending_rows)
                time.sleep(0.25)
        finally:
            os.kill(writer_pid, signal.SIGCONT)
        deadline = time.monotonic() + 120
        while run.socket_stats(timeout=30).pending_rows > 1000 and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(1.0)
        record.take()
        return {"peak_pending": peak_pending, "socket_peak_rss_mb": peak_rss_mb(socket_pid),
                "writer_pid": writer_pid, "writer_pid_after": actor_pid(writer)}
    return script
