"""The fault-injection suite, reduced for CI (``tests/faults/fault_suite.py`` runs the full one).

Every family once, judged against ground truth: the simulators' record of every trade and true
book they sent (``truth_check``), and the rows that were durable before each kill -9.
"""
from __future__ import annotations

import pytest

from families import (bad_inputs_family, bucket_family, corruption_family, disk_full_rlimit_family, secrets_family,
                      slow_writer_family, venue_family)
from faultlib import NEW_KINDS, VENUES

pytestmark = pytest.mark.faults


def failed(result) -> str:
    return "; ".join(result.problems)


@pytest.mark.ray
def test_every_venue_fault_with_kill9s_loses_nothing_acknowledged_and_records_every_gap(tmp_path, ray_session):
    """One run of every venue: each new fault kind once per venue, meanwhile two writers and two
    sockets are killed with -9. Books equal the truth, every lost stretch is accounted for by an
    event, nothing that was durable is lost, and each fault did what it says."""
    result = venue_family(tmp_path / "archive", list(VENUES), 1, NEW_KINDS, rounds=1, spacing_s=2.0, kills=4)
    assert result.ok, failed(result)
    killed = result.details["killed"]          # writers and sockets in turn (two venues may share a socket process)
    assert sum(killed.values()) == 4 and killed["writer"] >= 2 and killed["socket"] >= 1
    observed, checked = result.details["observed"], result.details["checked"]   # venues whose socket was not killed
    assert observed["duplicate_frames"] == len(VENUES) and observed["reorder_frames"] >= len(checked), dict(observed)
    assert all(observed[kind] == len(checked) for kind in ("oversized_frame", "ack_then_silence", "venue_restart")), \
        f"fault effects seen on {dict(observed)} of {checked}"


@pytest.mark.ray
def test_a_frozen_writer_is_backpressure_not_loss(tmp_path, ray_session):
    """SIGSTOP the writer for a few seconds, then SIGCONT: the socket stops reading at its bound
    (``max_pending_rows``), nothing is lost, the connection stays up, and every row lands once."""
    result = slow_writer_family(tmp_path / "archive", stopped_s=5.0)
    assert result.ok, failed(result)


def test_a_full_disk_holds_rows_at_the_socket_until_space_is_back(tmp_path):
    result = disk_full_rlimit_family(tmp_path)
    assert result.ok, failed(result)
    assert result.acked_lost == 0 and result.doubled == 0 and result.details["failures"] > 0


@pytest.mark.s3
def test_bucket_outage_and_s3_errors_during_backup_and_restore(tmp_path, monkeypatch):
    monkeypatch.setattr("actors.backup.retry.FIRST_WAIT_S", 0.05)      # the same policy, shorter waits
    result = bucket_family(tmp_path, periods=4)
    assert result.ok, failed(result)
    assert result.acked_lost == 0 and result.injected > 0 and result.observed == result.injected


@pytest.mark.s3
def test_spool_parquet_and_catalog_corruption_cost_only_what_is_damaged(tmp_path, bucket_target):
    result = corruption_family(tmp_path, bucket_target)
    assert result.ok, failed(result)
    assert result.injected > 0 and result.observed == result.injected and result.acked_lost == 0 and result.doubled == 0


@pytest.mark.ray
def test_bad_inputs_are_one_clear_line_and_the_process_keeps_serving(tmp_path, ray_session):
    from actors.remote.restore import RestoreActor

    actor = RestoreActor.options(name=f"restore-faults-{tmp_path.name}", namespace="tickarchive").remote(
        str(tmp_path / "archive"), None, ["binance"])
    try:
        result = bad_inputs_family(tmp_path, restore_actor=actor)
    finally:
        ray_session.kill(actor)
    assert result.ok, failed(result)
    assert result.injected > 0 and result.observed == result.injected


@pytest.mark.ray
@pytest.mark.s3
def test_no_secret_in_logs_config_or_actor_state(tmp_path, ray_session, seaweed, bucket_target):
    import uuid

    from actors.remote.backup import BackupActor
    from actors.remote.restore import RestoreActor

    marker = f"secret-marker-{uuid.uuid4().hex}"
    section = {"name": "s3", "endpoint": seaweed.endpoint, "bucket": bucket_target.bucket, "interval": "1h"}
    env = {"AWS_ACCESS_KEY_ID": "AKFAULTSUITE", "AWS_SECRET_ACCESS_KEY": marker}    # how a cluster hands keys to actors
    handles = []

    def backup_actor(root):
        owner = RestoreActor.options(name=f"catalog-secrets-{uuid.uuid4().hex[:8]}", namespace="tickarchive").remote(
            str(root), None, ["binance"])
        actor = BackupActor.options(name=f"backup-secrets-{uuid.uuid4().hex[:8]}", namespace="tickarchive",
                                    runtime_env={"env_vars": env}).remote(str(root), section, catalog_owner=owner)
        handles.extend([actor, owner])
        return actor
    try:
        result = secrets_family(tmp_path, seaweed.endpoint, bucket_target.bucket, backup_actor=backup_actor,
                                marker=marker)
    finally:
        for handle in handles:
            ray_session.kill(handle)
    assert result.ok, failed(result)


def test_a_scheduled_fault_with_unset_knobs_takes_their_defaults():
    """``source.faults=[{at_s: 0, kind: stall}]`` (no ``seconds``): the simulator stalls for the
    default 5 s and its market task lives on (an unset knob used to kill it: no data at all)."""
    import time

    from actors.cli.config import load_settings
    from actors.venues import get_venue
    from actors.venues.sim.server import ServerThread

    settings = load_settings(["source=sim", "source.faults=[{at_s: 0, kind: stall}, {at_s: 0, kind: duplicate_frames}]"])
    assert [f["seconds"] for f in settings.sim_section()["faults"]] == [None, None]
    server = get_venue("binance").make_sim_server(["BTCUSDT"], settings.sim_section(), 10)
    thread = ServerThread(server).start()
    try:
        deadline = time.monotonic() + 10
        while server.faults and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.faults and not server._tasks[0].done(), "the market task died on a scheduled fault"
        assert server.stalled_until - time.monotonic() > 4.0
    finally:
        thread.stop()
