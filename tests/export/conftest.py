"""Archives for the export tests: the real Binance recording written by the real writer core (no Ray)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pytest

from actors.storage.catalog import Catalog
from actors.storage.layout import NS
from actors.storage.writer import SymbolWriterCore
from bench.recorded import SYMBOL, recorded_batches


@pytest.fixture(scope="session")
def real_archive(tmp_path_factory):
    """The recording's rows (6,547 depth-20 books, 21,313 trades) sealed into an archive, as the archiver
    would write them: root folder."""
    root = tmp_path_factory.mktemp("real-archive")
    core = SymbolWriterCore(str(root), "binance", "perp", [SYMBOL], 20, 3600 * NS, "w1", Catalog(str(root)),
                            node="test")
    core.recover()
    batches = recorded_batches()
    events = batches[(SYMBOL, "events")]          # the replay's connect is stamped 0: keep the recorded ones
    batches[(SYMBOL, "events")] = events.filter(pa.compute.greater(events.column("ts_local").cast(pa.int64()), 0))
    core.write("replay", 1, batches)
    core.seal_all()
    return root
