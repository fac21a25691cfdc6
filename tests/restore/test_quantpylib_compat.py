"""quantpylib compatibility: its loaders' shapes, only_paths on an empty workstation, its raw file schema."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors import load_l2book, load_lob_archives, load_trade_archives, load_trades
from actors.storage.layout import HOUR_NS, NS, StreamKey

T0 = 1_736_114_400 * NS          # 2025-01-05 22:00 UTC


def test_only_paths_lists_what_the_range_needs_on_an_empty_workstation(tmp_path):
    """quantpylib's own example: binance BTCUSDT 2025-01-05:22 -> 2025-01-06:02 needs ten files."""
    lobs = load_lob_archives("binance", "BTCUSDT", 20, "2025-01-05:22", "2025-01-06:02", path=tmp_path,
                             only_paths=True)
    trades = load_trade_archives("binance", "BTCUSDT", "2025-01-05:22", "2025-01-06:02", path=tmp_path,
                                 only_paths=True)
    rel = [Path(p).relative_to(tmp_path).as_posix() for p in lobs + trades]
    assert rel == [f"binance/perp/l2book/2025/01/BTCUSDT_depth20_{h}.parquet" for h in ("0522", "0523", "0600",
                                                                                         "0601", "0602")] + \
                  [f"binance/perp/trades/2025/01/BTCUSDT_{h}.parquet" for h in ("0522", "0523", "0600", "0601", "0602")]
    assert not any(Path(p).exists() for p in lobs + trades)


def write_quantpylib_files(root: Path) -> tuple[list, list]:
    """Files as quantpylib's archiver writes them: ``ts`` in ms, lists of levels, ``dir`` for the side."""
    rng = np.random.default_rng(5)
    ts = (T0 // 1_000_000 + np.arange(0, 3_600_000, 1_000)).astype("int64")
    bp = [[100.0 - i * 0.1 for i in range(3)] for _ in ts]
    bs = [list(rng.integers(1, 9, 3).astype(float)) for _ in ts]
    ap = [[100.1 + i * 0.1 for i in range(3)] for _ in ts]
    as_ = [list(rng.integers(1, 9, 3).astype(float)) for _ in ts]
    book = StreamKey("binance", "perp", "l2book", "BTCUSDT", 20).relpath(T0)
    trade = StreamKey("binance", "perp", "trades", "BTCUSDT").relpath(T0)
    for rel, table in ((book, pa.table({"ts": ts, "bp": bp, "bs": bs, "ap": ap, "as": as_})),
                       (trade, pa.table({"ts": ts, "price": rng.normal(100, 1, len(ts)), "size": rng.random(len(ts)),
                                         "dir": rng.choice([-1, 1], len(ts))}))):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / rel)
    return pq.read_table(root / book).to_pylist(), pq.read_table(root / trade).to_pylist()


def test_files_in_quantpylib_schema_load_through_our_loaders(tmp_path):
    books, trades = write_quantpylib_files(tmp_path)
    start, end = T0 + 600 * NS, T0 + 1_200 * NS                 # ten minutes, half-open
    table = load_trades(tmp_path, "binance", "BTCUSDT", start, end)
    want = [t for t in trades if start // 1_000_000 <= t["ts"] < end // 1_000_000]
    assert table.num_rows == len(want) == 600
    assert table.column("ts_local").cast(pa.int64()).to_pylist() == [t["ts"] * 1_000_000 for t in want]
    assert table.column("price").to_pylist() == [t["price"] for t in want]
    assert table.column("side").to_pylist() == [t["dir"] for t in want]
    assert table.column("trade_id").null_count == table.column("ts_exchange").null_count == 600
    book = load_l2book(tmp_path, "binance", "BTCUSDT", T0, T0 + HOUR_NS, depth=20)
    assert book.num_rows == len(books) and book.column("seq").null_count == len(books)
    assert book.column("ask_sz").to_pylist() == [b["as"] for b in books]
    shaped = load_lob_archives("binance", "BTCUSDT", 20, "2025-01-05:22", "2025-01-05:22", path=tmp_path)
    assert len(shaped) == len(books) and shaped[7]["ts"] == books[7]["ts"]
    assert shaped[7]["b"].tolist() == [list(x) for x in zip(books[7]["bp"], books[7]["bs"])]
    rows = load_trade_archives("binance", "BTCUSDT", "2025-01-05:22", "2025-01-05:22", path=tmp_path)
    assert rows == [[t["ts"], t["price"], t["size"], t["dir"]] for t in trades]


@pytest.mark.s3
def test_backup_and_restore_folder_round_trip(tmp_path, seaweed, bucket_target):
    """quantpylib's recipe with only the imports changed: back up, list paths on a new machine, restore, load."""
    import asyncio

    from actors.quantpylib import backup_folder, get_boto_client, restore_folder
    from actors.quantpylib import load_lob_archives as q_lobs
    from actors.quantpylib import load_trade_archives as q_trades

    write_quantpylib_files(tmp_path / "archives")
    before_trades = q_trades("binance", "BTCUSDT", "2025-01-05:22", "2025-01-06:02", path=tmp_path / "archives")
    before_lobs = q_lobs("binance", "BTCUSDT", 20, "2025-01-05:22", "2025-01-06:02", path=tmp_path / "archives")
    fresh = tmp_path / "workstation"

    async def recipe():
        # the tutorial's calls, keywords exactly as written there
        s3 = await get_boto_client(seaweed.endpoint, "any", "any")
        local, bucket = tmp_path / "archives", bucket_target.bucket
        summary = await backup_folder(s3=s3, local=local, bucket=bucket)
        local = fresh
        search_files = q_lobs("binance", "BTCUSDT", 20, "2025-01-05:22", "2025-01-06:02", path=local,
                              only_paths=True) + \
            q_trades("binance", "BTCUSDT", "2025-01-05:22", "2025-01-06:02", path=local, only_paths=True)
        restored = await restore_folder(s3=s3, local=local, bucket=bucket, match_files=search_files)
        return summary, search_files, restored

    summary, paths, restored = asyncio.run(recipe())
    assert (summary.uploaded, summary.failed) == (2, 0) and len(paths) == 10
    assert sorted(restored) == sorted(p for p in paths if p.endswith("_0522.parquet")) and len(restored) == 2
    assert q_trades("binance", "BTCUSDT", "2025-01-05:22", "2025-01-06:02", path=fresh) == before_trades
    after = q_lobs("binance", "BTCUSDT", 20, "2025-01-05:22", "2025-01-06:02", path=fresh)
    assert len(after) == len(before_lobs) and all(
        a["ts"] == b["ts"] and a["b"].tolist() == b["b"].tolist() and a["a"].tolist() == b["a"].tolist()
        for a, b in zip(after, before_lobs))


@pytest.mark.s3
def test_quantpylib_defaults_ignore_on_backup_and_everything_on_restore(tmp_path, seaweed, bucket_target):
    """quantpylib's defaults: ``ignore=['.*', '*.parquet.*']`` on backup (a caller's own patterns are
    honoured too), ``remote_subpaths=['']`` and ``match_files=[]`` on restore: everything under the
    subpaths comes back."""
    import asyncio

    from actors.quantpylib import backup_folder, get_boto_client, restore_folder

    archives = tmp_path / "archives"
    write_quantpylib_files(archives)
    eth = StreamKey("binance", "perp", "trades", "ETHUSDT").relpath(T0)
    (archives / eth).write_bytes((archives / StreamKey("binance", "perp", "trades", "BTCUSDT").relpath(T0)).read_bytes())

    async def recipe():
        s3 = await get_boto_client(seaweed.endpoint, "any", "any")
        summary = await backup_folder(s3=s3, local=archives, bucket=bucket_target.bucket, ignore=[".*", "ETH*"])
        everything = await restore_folder(s3=s3, local=tmp_path / "all", bucket=bucket_target.bucket)
        trades = await restore_folder(s3=s3, local=tmp_path / "trades", bucket=bucket_target.bucket,
                                      remote_subpaths=["binance/perp/trades"])
        return summary, everything, trades

    summary, everything, trades = asyncio.run(recipe())
    assert (summary.uploaded, summary.failed) == (2, 0)          # the ETHUSDT file was ignored
    rel = lambda paths, root: sorted(Path(p).relative_to(root).as_posix() for p in paths)
    book = StreamKey("binance", "perp", "l2book", "BTCUSDT", 20).relpath(T0)
    btc = StreamKey("binance", "perp", "trades", "BTCUSDT").relpath(T0)
    assert rel(everything, tmp_path / "all") == sorted([book, btc])
    assert rel(trades, tmp_path / "trades") == [btc]
    assert (tmp_path / "all" / book).read_bytes() == (archives / book).read_bytes()
