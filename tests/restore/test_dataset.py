"""The archive as one dataset, and every reader seeing the same rows.

Ground truth: the rows handed to the writers of a mixed archive (tests/mixed_archive.py: four
venues, integer and text trade ids, formats 1, 2 and 3).
"""
from __future__ import annotations

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

import actors
import mixed_archive
from actors.feed.records import SCHEMAS
from actors.restore.dataset import DatasetError, archive_files, dataset_schema, duckdb_relation, polars_frame
from actors.restore.restorer import Restorer
from actors.storage.catalog import Catalog
from actors.storage.layout import HOUR_NS, NS, parse_relpath, sealed_files
from actors.storage.migrate import migrate
from mixed_archive import T0, canonical


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    return root, mixed_archive.build(root)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("migrated")
    truth = mixed_archive.build(root)
    result = migrate(root, Catalog(str(root)))
    assert result.migrated and not result.failed
    return root, truth


@pytest.mark.parametrize("channel", list(SCHEMAS))
def test_the_dataset_holds_every_row_of_every_format(mixed, channel):
    root, truth = mixed
    data = actors.dataset(root, channel)
    assert data.schema.equals(dataset_schema(channel))
    assert canonical(data.to_table(), channel) == canonical(truth[channel], channel)


def test_layout_columns_and_time_range_prune_files(mixed):
    root, truth = mixed
    one_hour = actors.dataset(root, "trades", start=T0, end=T0 + HOUR_NS)
    files = archive_files(root, "trades", start=T0, end=T0 + HOUR_NS)           # what the catalog kept
    assert [parse_relpath(rel).period_start_ns for rel, _ in files] == [T0] * len(mixed_archive.VENUES)
    want = truth["trades"].filter(pa.compute.less(truth["trades"].column("ts_local").cast(pa.int64()), T0 + HOUR_NS))
    assert canonical(one_hour.to_table(), "trades") == canonical(want, "trades")
    minute = actors.dataset(root, "trades", start=T0 + 61 * NS, end=T0 + 62 * NS, exchange="okx")
    got = minute.to_table()
    ts = got.column("ts_local").cast(pa.int64()).to_pylist()
    assert got.num_rows and all(T0 + 61 * NS <= t < T0 + 62 * NS for t in ts)
    assert set(got.column("exchange").to_pylist()) == {"okx"} and set(got.column("market").to_pylist()) == {"spot"}
    books = actors.dataset(root, "l2book", symbol="BTCUSDT").to_table(columns=["exchange", "depth"])
    assert sorted(set(zip(*books.to_pydict().values()))) == [("binance", 20), ("bybit", 10)]
    by_filter = actors.dataset(root, "trades").to_table(filter=ds.field("exchange") == "bybit")
    assert by_filter.num_rows == sum(1 for e in truth["trades"].column("exchange").to_pylist() if e == "bybit")


def test_without_a_catalog_the_layout_finds_the_files(mixed, tmp_path):
    root, _ = mixed
    for rel in sealed_files(root):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((root / rel).read_bytes())
    files = archive_files(tmp_path, "events", start=T0 + HOUR_NS, end=T0 + 2 * HOUR_NS)
    assert [parse_relpath(rel).period_start_ns for rel, _ in files] == [T0 + HOUR_NS] * len(mixed_archive.VENUES)
    assert archive_files(tmp_path, "events", start=T0 + HOUR_NS, end=T0 + 2 * HOUR_NS) == \
        archive_files(root, "events", start=T0 + HOUR_NS, end=T0 + 2 * HOUR_NS)


def test_restorer_and_helpers_read_the_same_dataset(mixed):
    root, truth = mixed
    want = canonical(truth["trades"], "trades")
    assert canonical(Restorer(root).dataset("trades").to_table(), "trades") == want
    assert canonical(duckdb_relation(root, "trades").to_arrow_table(), "trades") == want
    assert canonical(polars_frame(root, "trades").collect().to_arrow(), "trades") == want
    with pytest.raises(DatasetError, match="unknown channel"):
        actors.dataset(root, "quotes")
    with pytest.raises(DatasetError, match="not before"):
        actors.dataset(root, "trades", start=T0 + HOUR_NS, end=T0)


def _with_layout(table: pa.Table, paths: list[str], root) -> pa.Table:
    """A raw reader's rows with the layout columns taken from each row's file path."""
    streams = [parse_relpath(str(p)[len(str(root)) + 1:]).stream for p in paths]
    for name in ("exchange", "market", "symbol", "depth"):
        values = [getattr(s, name) for s in streams]
        table = table.append_column(name, pa.array(values, pa.int32() if name == "depth" else pa.string()))
    return table


@pytest.mark.parametrize("channel", list(SCHEMAS))
def test_all_three_readers_agree_on_every_channel(migrated, channel):
    """After mode=migrate, a raw glob through DuckDB, polars and pyarrow.dataset reads every file of
    the channel at once, and all three give the rows the writers were handed."""
    root, truth = migrated
    glob = f"{root}/*/*/{channel}/*/*/*.parquet"
    want = canonical(truth[channel], channel)
    names = SCHEMAS[channel].names

    con = duckdb.connect()
    raw = con.sql(f"select * from read_parquet('{glob}', filename=true)").to_arrow_table()
    via_duckdb = _with_layout(raw.select(names), raw.column("filename").to_pylist(), root)

    frame = pl.scan_parquet(glob, include_file_paths="filename").collect()
    via_polars = _with_layout(frame.select(names).to_arrow(), frame["filename"].to_list(), root)

    files = ds.dataset([str(p) for p in sorted(root.glob(f"*/*/{channel}/*/*/*.parquet"))], format="parquet")
    parts = [(frag.to_table(), frag.path) for frag in files.get_fragments()]
    via_pyarrow = _with_layout(pa.concat_tables([t for t, _ in parts]),
                               [path for t, path in parts for _ in range(t.num_rows)], root)

    for table in (via_duckdb, via_polars, via_pyarrow):
        assert table.num_rows == truth[channel].num_rows
    assert canonical(via_duckdb, channel) == want
    assert canonical(via_polars, channel) == want
    assert canonical(via_pyarrow, channel) == want
    assert files.schema.remove_metadata().equals(SCHEMAS[channel])     # one schema: no unification needed
