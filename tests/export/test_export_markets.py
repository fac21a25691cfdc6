"""Another market's archive: the writer files a ``spot/BTCUSDT`` symbol under ``spot/``, and export
finds it by the market the symbol carries (or ``market=``)."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from actors.export import export
from actors.restore.loading import load_trades
from actors.storage.catalog import Catalog
from actors.storage.layout import NS
from actors.storage.writer import SymbolStore
from bench.recorded import SYMBOL, recorded_batches


def test_spot_symbol_is_written_and_exported_as_spot(tmp_path):
    root = tmp_path / "archive"
    name = f"spot/{SYMBOL}"
    core = SymbolStore(str(root), "binance", "perp", [name], 20, 3600 * NS, "w1", Catalog(str(root)), node="t")
    core.recover()
    batches = {(name, channel): batch for (_, channel), batch in recorded_batches().items()}
    events = batches[(name, "events")]
    batches[(name, "events")] = events.filter(pc.greater(events.column("ts_local").cast(pa.int64()), 0))
    core.write("replay", 1, batches)
    core.seal_all()
    from actors.restore.dataset import archive_files
    assert {parsed.stream.market for _, parsed in archive_files(root, "trades", symbol=name)} == {"spot"}
    assert {p.relative_to(root).parts[:2] for p in root.rglob("*.parquet")
            if not p.relative_to(root).parts[0].startswith(".")} == {("binance", "spot")}
    hour = "2024-08-08:23"
    want = load_trades(root, "binance", SYMBOL, hour, hour, market="spot").column("trade_id").to_pylist()
    assert len(want) == 21_313
    summary = export(root, "tardis", "binance", name, hour, hour, tmp_path / "out", progress=False)
    trades = pd.read_csv(next(f for f in summary.files if "_trades_" in f), dtype={"id": str})
    assert trades["id"].tolist() == want and set(trades["symbol"]) == {SYMBOL}
