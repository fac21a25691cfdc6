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
    "ray_tickarchive_connected": {"exchange"},
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


class _Refusing:
    """A loopback websocket endpoint answering HTTP 400 to every handshake (a venue refusing us)."""

    def __enter__(self):
        import asyncio
        import threading
        from http import HTTPStatus

        from websockets.asyncio.server import serve

        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main():
            self.server = await serve(lambda ws: None, "127.0.0.1", 0,
                                      process_request=lambda c, r: c.respond(HTTPStatus.BAD_REQUEST, "no\n"))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            await self.server.serve_forever()

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.server.close)


def test_a_venue_that_refuses_every_connection_fails_a_finite_run(tmp_path, ray_cluster, ray_session):
    """okx refuses (HTTP 400), binance delivers: the run says which venue delivered nothing and is not
    ok (launch.py exits 1); meanwhile the `connected` gauge is 0 for okx and 1 for binance."""
    from actors.venues import get_venue
    from actors.venues.sim.server import ServerThread

    binance = get_venue("binance").make_sim_server(["BTCUSDT"], {"messages_per_s": 100}, 10)
    thread = ServerThread(binance).start()
    seen: dict[str, float] = {}
    try:
        with _Refusing() as refusing:
            others = [f"archive.{v}=[]" for v in supported_venues() if v not in ("binance", "okx")]
            settings = load_settings([
                "source=live", "archive.binance=[BTCUSDT]", "archive.okx=[BTC-USDT-SWAP]", *others, "duration_s=12",
                f"venues.binance.ws_base={binance.ws_base}", f"venues.binance.rest_base={binance.rest_base}",
                f"venues.okx.ws_base=ws://127.0.0.1:{refusing.port}", "socket.backoff_max_s=1", "depth=10",
                "storage.rollover=2s", "storage.seal_grace=0.2s", f"storage.root={tmp_path}", "log.status_every=2s"])

            def watch(runs):
                import threading

                def poll():
                    deadline = time.monotonic() + 11
                    while time.monotonic() < deadline and len(seen) < 2:
                        try:
                            text = urllib.request.urlopen(ray_cluster["metrics"], timeout=5).read().decode()
                        except OSError:
                            text = ""
                        for labels, value in re.findall(r'^ray_tickarchive_connected\{([^}]*)\} ([0-9.e+-]+)$', text,
                                                        re.M):
                            exchange = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("exchange")
                            if exchange in ("okx", "binance") and (exchange != "binance" or float(value) > 0):
                                seen[exchange] = float(value)
                        time.sleep(0.5)
                threading.Thread(target=poll, daemon=True).start()

            report = run_archive(settings, on_started=watch)
    finally:
        thread.stop()
    assert not report.ok and report.silent_venues == {"okx": "refused (HTTP 400)"}
    assert "error: okx delivered no market data (refused (HTTP 400))" in report.summary()
    assert report.venues["binance"].market_rows > 0
    assert seen == {"okx": 0.0, "binance": 1.0}
    import json
    line = json.loads((tmp_path / "logs" / "live-status.json").read_text())["line"]    # what mode=status shows
    assert "okx refused (HTTP 400) 0 msg/s" in line and "binance 1/1" in line, line
