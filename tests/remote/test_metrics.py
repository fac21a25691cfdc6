"""The tickarchive_* metrics reach Ray's Prometheus endpoint while an archive runs (names and labels)."""
from __future__ import annotations

import re
import time
import urllib.request

import pytest

from actors.cli.config import load_settings
from actors.remote.archive import run_archive
from actors.venues import supported_venues

pytestmark = pytest.mark.ray

EXPECTED = {  # metric -> labels every series must carry
    "ray_tickarchive_frames_total": {"exchange"},
    "ray_tickarchive_events_total": {"exchange", "kind"},
    "ray_tickarchive_feed_lag_seconds": {"exchange"},
    "ray_tickarchive_rows_written_total": {"exchange", "channel"},
    "ray_tickarchive_files_sealed_total": {"exchange", "channel"},
    "ray_tickarchive_bytes_sealed_total": {"exchange", "channel"},
    "ray_tickarchive_spool_bytes": {"writer"},
}
SERIES = re.compile(r"^(ray_tickarchive_\w+)\{([^}]*)\} ([0-9.e+-]+)$", re.M)


def scrape(url: str) -> dict[str, list[dict[str, str]]]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    found: dict[str, list[dict[str, str]]] = {}
    for name, labels, _ in SERIES.findall(text):
        found.setdefault(name, []).append(dict(re.findall(r'(\w+)="([^"]*)"', labels)))
    return found


def test_metrics_are_exported_while_archiving(tmp_path, ray_cluster, ray_session):
    others = [f"archive.{v}=[]" for v in supported_venues() if v != "binance"]
    settings = load_settings(["source=sim", "archive.binance=[BTCUSDT]", *others, "duration_s=8",
                              "storage.rollover=1s", "storage.seal_grace=0.2s", f"storage.root={tmp_path}"])
    seen: dict[str, list[dict[str, str]]] = {}

    def watch(runs):
        import threading

        def poll():
            deadline = time.monotonic() + 7
            while time.monotonic() < deadline and not set(EXPECTED) <= set(seen):
                try:
                    seen.update(scrape(ray_cluster["metrics"]))
                except OSError:
                    pass
                time.sleep(0.5)
        threading.Thread(target=poll, daemon=True).start()

    run_archive(settings, on_started=watch)
    assert set(EXPECTED) <= set(seen), f"missing: {sorted(set(EXPECTED) - set(seen))}"
    for name, labels in EXPECTED.items():
        series = [s for s in seen[name] if s.get("exchange", "binance") == "binance"]
        assert series and all(labels <= set(s) for s in series), (name, seen[name][:2])
    assert {s["channel"] for s in seen["ray_tickarchive_rows_written_total"]} >= {"l2book", "trades"}


def test_the_grafana_dashboard_only_charts_metrics_we_export():
    import json
    from pathlib import Path

    from conftest import REPO

    defined = {}
    for source in (REPO / "actors" / "remote").glob("*.py"):
        for kind, name in re.findall(r'(Counter|Gauge)\(\s*"(tickarchive_\w+)"', source.read_text()):
            defined[f"ray_{name}" + ("_total" if kind == "Counter" else "")] = kind
    dashboard = json.loads((REPO / "conf" / "monitoring" / "grafana_tickarchive_dashboard.json").read_text())
    charted = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"ray_tickarchive_\w+", target["expr"])}
    assert charted and charted <= set(defined), sorted(charted - set(defined))
    assert len(charted) >= 9 and {t["name"] for t in dashboard["templating"]["list"]} == {"datasource", "SessionName"}
    assert Path(REPO / "conf" / "monitoring" / "prometheus.yml").read_text().count("prom_metrics_service_discovery.json") == 1
