"""mode=export from the command line (launch.py in a subprocess, as a user runs it)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
RANGE = ["restore.exchange=binance", "restore.symbol=BTCUSDT", "restore.start=2024-08-08:22",
         "restore.end=2024-08-08:23"]


def launch(*args):
    return subprocess.run([sys.executable, "launch.py", "mode=export", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_mode_export_refuses_missing_hours_then_exports_with_allow_gaps(real_archive, tmp_path):
    out = tmp_path / "btc.npz"
    proc = launch("export.format=hftbacktest", f"storage.root={real_archive}", f"export.out={out}", *RANGE)
    assert proc.returncode == 2 and not out.exists()
    assert "error: no l2book file for 1 hour(s): 2024-08-08:22; no trades file for 1 hour(s)" in proc.stderr
    proc = launch("export.format=hftbacktest", f"storage.root={real_archive}", f"export.out={out}",
                  "export.allow_gaps=true", *RANGE)
    assert proc.returncode == 0, proc.stderr
    assert "missing: no l2book file for 1 hour(s), not exported: 2024-08-08:22" in proc.stderr
    assert proc.stdout.startswith("exported 27,860 rows over 2 hour(s) to hftbacktest")
    assert len(np.load(out)["data"]) > 27_860


@pytest.mark.parametrize("args, message", [
    (["export.out=x"], "error: export.format: required with mode=export"),
    (["export.format=csv", "export.out=x"], "export.format: 'csv' is not allowed (allowed: hftbacktest, nautilus"),
    (["export.format=tardis"], "error: export.out: required with mode=export"),
])
def test_mode_export_config_errors(real_archive, args, message):
    proc = launch(f"storage.root={real_archive}", *RANGE, *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
