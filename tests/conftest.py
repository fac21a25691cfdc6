"""Shared fixtures: one Ray instance per test session, loopback only."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")   # local test cluster: no token files
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TICKARCHIVE_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "real"
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray instance shared by every test in the session."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, namespace="tickarchive",
             log_to_driver=True, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def binance_recording() -> Path:
    path = FIXTURES / "binance-usdm" / "btcusdt_20240808.gz"
    assert path.is_file(), f"missing fixture {path}"
    return path
