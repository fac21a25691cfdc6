"""Config composition and validation: bad overrides fail before anything starts, in one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from actors.cli.config import load_settings
from actors.storage.layout import HOUR_NS, NS
from actors.errors import ConfigError
from conftest import REPO


def test_defaults_are_quantpylib_tutorial_set():
    s = load_settings([])
    assert s.mode == "archive" and s.source == "live" and s.depth == 20
    assert s.rollover_ns == HOUR_NS
    binance = s.venue("binance")
    assert binance.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DYDXUSDT")


def test_overrides_replace_lists_and_parse_durations():
    s = load_settings(["archive.binance=[BTCUSDT,ETHUSDT]", "depth=10", "storage.rollover=10s",
                       "source=sim", "duration_s=60", "storage.root=/tmp/x"])
    assert s.venue("binance").symbols == ("BTCUSDT", "ETHUSDT")
    assert (s.depth, s.rollover_ns, s.duration_s, s.root, s.source) == (10, 10 * NS, 60.0, "/tmp/x", "sim")


@pytest.mark.parametrize("override, needle", [
    ("archive.kraken=[XBTUSD]", "unknown venue 'kraken' (supported: binance"),
    ("depth=7", "depth"),
    ("depth=abc", "depth: 'abc' is not an integer"),
    ("storage.rollover=7s", "storage.rollover: '7s' must be whole seconds dividing one hour"),
    ("storage.rollover=soon", "cannot parse 'soon'"),
    ("duration_s=forever", "duration_s: cannot parse 'forever'"),
    ("channels=[trades,quotes]", "channels"),
    ("nope=1", "nope: unknown config key"),
    ("source=bogus", "Could not find 'source/bogus'"),
    ("mode=bogus", "mode: 'bogus' is not allowed (allowed: archive, backup, restore, status, reindex, migrate, export, stop)"),
    ("archive.binance=[../etc]", "not a valid name"),
])
def test_bad_override_is_one_clear_error(override, needle):
    with pytest.raises(ConfigError) as err:
        load_settings([override])
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_depth_names_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_settings(["depth=7"])
    assert "20" in str(err.value) and "5" in str(err.value)


def test_replay_needs_an_existing_file():
    with pytest.raises(ConfigError, match="replay.file"):
        load_settings(["source=replay"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(["source=replay", "replay.file=/nonexistent.gz"])


def test_cli_bad_override_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "launch.py", "depth=7"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "depth" in lines[0], proc.stderr


def test_replay_spec_must_name_a_recorded_symbol(binance_recording):
    from actors.remote.archive import plan_sources

    settings = load_settings(["source=replay", f"replay.file={binance_recording}", "archive.binance=[ETHUSDT]"])
    with pytest.raises(ConfigError, match="names none of the recording's symbols"):
        plan_sources(settings)
    settings = load_settings(["source=replay", f"replay.file={binance_recording}", "archive.binance=[BTCUSDT,ETHUSDT]"])
    run, = plan_sources(settings)
    try:
        assert run.spec.name == "binance" and run.spec.symbols == ("BTCUSDT",)    # narrowed to the recording
    finally:
        run.server_thread.stop()


@pytest.mark.parametrize("override, needle", [
    ("log_level=LOUD", "log_level: 'LOUD' is not allowed (allowed: DEBUG, INFO, WARNING, ERROR)"),
    ("restore.depth=abc", "restore.depth: 'abc' is not an integer"),
    ("duration_s=0", "duration_s: must be positive"),
    ("socket.flush_ms=-1", "socket.flush_ms: must be > 0"),
    ("source.messages_per_s=-1", "source.messages_per_s: must be > 0"),
    ("+source.faults=[{at_s: 1, kind: explode}]", "'explode' is not allowed (allowed: drop_connection, stall"),
    ("storage.root=", "storage.root: empty"),
    ("storage.root=/proc/tickarchive", "storage.root: /proc/tickarchive is not writable"),
    ("socket.backoff_min_s=40", "socket.backoff_min_s: 40.0 is above socket.backoff_max_s"),
])
def test_bad_values_are_one_clear_error(override, needle):
    with pytest.raises(ConfigError) as err:
        load_settings(["source=sim", override])
    assert needle in str(err.value) and "\n" not in str(err.value), err.value


def test_root_must_be_a_usable_folder(tmp_path):
    file = tmp_path / "afile"
    file.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        load_settings([f"storage.root={file}"])
    missing = tmp_path / "mistyped"
    for mode in ("status", "reindex", "backup"):
        with pytest.raises(ConfigError, match="does not exist"):
            load_settings([f"mode={mode}", f"storage.root={missing}"])
        assert not missing.exists(), f"mode={mode} created the mistyped root"
    with pytest.raises(ConfigError, match="is a folder; name one recording file"):
        load_settings(["source=replay", f"replay.file={tmp_path}"])


def test_typed_settings_reach_the_code(tmp_path):
    s = load_settings(["source=sim", "socket.flush_ms=50", "source.faults=[{at_s: 2, kind: stall, seconds: 1.5}]",
                       f"storage.root={tmp_path}", "log_level=DEBUG", "backup=s3", "backup.bucket=archives"])
    assert s.socket.flush_ms == 50 and s.log_level == "DEBUG"
    assert s.sim_section()["faults"] == [{"kind": "stall", "at_s": 2.0, "symbol": None, "seconds": 1.5, "count": None}]
    assert s.backup_section()["name"] == "s3" and s.backup_section()["retention"] == {"local_days": None}


@pytest.mark.parametrize("kind, bucket", [("s3", "A_B"), ("s3", "archives..x"), ("s3", "10.0.0.1"),
                                          ("local", "My_Bucket"), ("b2", "abc")])
def test_bucket_names_a_provider_would_refuse_are_one_clear_error(kind, bucket):
    with pytest.raises(ConfigError, match="backup.bucket") as err:
        load_settings([f"backup={kind}", f"backup.bucket={bucket}"])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("address", ["garbage:::", "10.0.0.5", "host:99999", "ray://10.0.0.5:10001", ":6379"])
def test_a_bad_cluster_address_is_one_line_before_anything_starts(address):
    proc = subprocess.run([sys.executable, "launch.py", "ray=cluster", f"ray.address={address}"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ray.address: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_an_unreachable_cluster_is_one_line_with_how_to_start_one():
    from conftest import free_port

    port = free_port()               # nothing listens there
    for mode in ("archive", "status"):
        args = ["mode=status", "restore.exchange=binance", "restore.symbol=BTCUSDT", "restore.start=2025-01-05:22",
                "restore.end=2025-01-05:23"] if mode == "status" else []
        proc = subprocess.run([sys.executable, "launch.py", "ray=cluster", f"ray.address=127.0.0.1:{port}", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"no Ray cluster answers at 127.0.0.1:{port}" in lines[0], proc.stderr
        assert "ray start --head" in lines[0] and "ray status" in lines[0]


def test_status_stops_saying_running_once_the_run_ended(tmp_path):
    """The console's close at the end of a run marks its live status ended: mode=status then says
    'not running' at once instead of the last line for the next half minute."""
    from actors.cli.console import RunConsole, read_live_status, write_live_status

    (tmp_path / "logs").mkdir()
    console = RunConsole("plain", 10.0, str(tmp_path))
    write_live_status(console.status_path, "binance 1/1 800 msg/s", 10.0)
    assert read_live_status(str(tmp_path))["line"] == "binance 1/1 800 msg/s"
    console.close()
    assert read_live_status(str(tmp_path)) is None
