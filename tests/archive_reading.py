"""Read an archive back for assertions (plain pyarrow, as a researcher would)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from actors.storage.layout import parse_relpath


def archive_files(root: str | Path, channel: str | None = None, symbol: str | None = None,
                  exchange: str | None = None) -> list[Path]:
    """Sealed Parquet files under root (hidden folders excluded), sorted by name."""
    root = Path(root)
    out = []
    for path in sorted(root.rglob("*.parquet")):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        parsed = parse_relpath(rel)
        if channel and parsed.stream.channel != channel:
            continue
        if symbol and parsed.stream.symbol != symbol:
            continue
        if exchange and parsed.stream.exchange != exchange:
            continue
        out.append(path)
    return out


def read_channel(root: str | Path, channel: str, symbol: str | None = None,
                 exchange: str | None = None) -> pa.Table:
    """Every row of one channel (optionally one symbol), files in time order; times as int ns.

    Each file is read raw and turned into the record schema by the file format's exact decoder.
    """
    from actors.storage.catalog import as_ns_ints
    from actors.storage.fileformat import from_file

    files = archive_files(root, channel, symbol, exchange)
    assert files, f"no {channel} files under {root}"
    return as_ns_ints(pa.concat_tables([from_file(pq.read_table(f), channel) for f in files]))
