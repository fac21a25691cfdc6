"""BackupService/BackupSchedule: coalesced pokes, backoff after failures, answers during a pass (no Ray)."""
from __future__ import annotations

import threading
import time

from actors.backup.schedule import ERROR_BACKOFF_S, BackupSchedule, BackupService


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_a_burst_of_pokes_is_one_pass():
    passes = []
    service = BackupService(lambda: passes.append(time.monotonic()) or {"ok": True},
                            BackupSchedule(interval_s=3600, settle_s=0.3))
    try:
        for _ in range(20):
            service.poke()
            time.sleep(0.005)
        wait_for(lambda: service.passes == 1)
        time.sleep(0.5)
        assert len(passes) == 1 and service.stats()["pokes"] == 20
    finally:
        service.stop()


def test_failures_back_off_and_success_resets():
    schedule = BackupSchedule(interval_s=600, settle_s=0.0)
    assert schedule.next_wait_s() == 600
    for n in range(1, 7):
        schedule.record(False)
        assert schedule.next_wait_s() == ERROR_BACKOFF_S[min(n, len(ERROR_BACKOFF_S)) - 1]
        assert schedule.after_poke_s() == schedule.next_wait_s()
    schedule.record(True)
    assert schedule.next_wait_s() == 600 and schedule.after_poke_s() == 0.0
    short = BackupSchedule(interval_s=20)
    short.record(False)
    short.record(False)
    assert short.next_wait_s() == 20            # capped by the interval


def test_stats_and_pokes_answer_while_a_pass_runs_and_errors_never_kill_it():
    release = threading.Event()
    calls = []

    def slow_then_broken():
        calls.append(1)
        if len(calls) == 1:
            release.wait(10)
            return {"ok": True, "uploaded": 3}
        raise RuntimeError("boom")

    service = BackupService(slow_then_broken, BackupSchedule(interval_s=3600, settle_s=0.0), start=False)
    runner = threading.Thread(target=service.run_once)
    runner.start()
    wait_for(lambda: service.stats()["running"])
    service.poke()                               # answered at once
    assert service.stats()["pokes"] == 1 and service.stats()["passes"] == 0
    release.set()
    runner.join(10)
    assert service.stats()["last"]["uploaded"] == 3
    result = service.run_once()
    assert not result["ok"] and "boom" in result["error"] and service.schedule.errors_in_row == 1


def test_a_long_audit_never_delays_the_pass_after_a_seal():
    """The audit runs in its own thread when due: passes poked while it runs still happen at once,
    only one audit runs at a time, and the audit's end pokes one more pass (its uploads)."""
    release, audits, passes = threading.Event(), [], []
    due = {"yes": True}

    def run_audit():
        audits.append(time.monotonic())
        due["yes"] = False
        release.wait(10)
        return {"ok": True, "audited": 3}

    service = BackupService(lambda: passes.append(time.monotonic()) or {"ok": True},
                            BackupSchedule(interval_s=3600, settle_s=0.05), run_audit=run_audit,
                            audit_due=lambda: due["yes"])
    try:
        service.poke()
        wait_for(lambda: service.passes == 1 and len(audits) == 1)
        assert service.stats()["auditing"]
        for n in range(2, 5):                     # seals during the audit: each pass runs promptly
            service.poke()
            wait_for(lambda: service.passes == n, timeout_s=2.0)
        due["yes"] = True                         # due again, but one is running: no second audit
        assert not service.maybe_audit() and len(audits) == 1
        due["yes"] = False
        release.set()
        wait_for(lambda: service.stats()["audits"] == 1 and service.passes == 5)
        assert service.stats()["last_audit"]["audited"] == 3 and not service.stats()["auditing"]
    finally:
        release.set()
        service.stop()
