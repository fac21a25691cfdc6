"""The seal journal: a sealed file is in the catalog, or named in its writer's journal.

Sealing renames a file into place and only then can the catalog row be committed (in a round,
one commit for many files, possibly through another process). A crash, or a node lost, between
the two would leave a file that no catalog lists: a silent hole in every later restore. So the
catalog row is appended to ``{spool folder}/sealed.jsonl`` (fsynced) *before* the rename, and
removed from it once the catalog committed it. Whoever recovers the spool folder (the writer
restarting, or the node handing its spools over after a move) commits what the journal still
names, for every file that exists (a rename that never happened leaves nothing to commit).
The journal only ever holds the files of one sealing round or two: reading and rewriting it is
cheap whatever the archive's size.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Iterable

import orjson

JOURNAL = "sealed.jsonl"


class SealJournal:
    """Catalog rows of files sealed (or about to be) but not yet committed to the catalog."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, JOURNAL)
        self.lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                for line in f:
                    try:
                        rec = orjson.loads(line)
                        self.records[rec["key"]] = rec
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue          # a torn last line: the file it named is re-described on seal

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        """Append rows (durable when this returns)."""
        records = list(records)
        if not records:
            return
        with self.lock:
            with open(self.path, "ab") as f:
                f.write(b"".join(orjson.dumps(rec) + b"\n" for rec in records))
                f.flush()
                os.fsync(f.fileno())
            self.records.update((rec["key"], rec) for rec in records)

    def done(self, records: Iterable[dict[str, Any]]) -> None:
        """The catalog committed these rows: forget them (unless the key was sealed again since)."""
        with self.lock:
            changed = False
            for rec in records:
                held = self.records.get(rec["key"])
                if held is not None and held.get("sha256") == rec.get("sha256"):
                    del self.records[rec["key"]]
                    changed = True
            if changed:
                self._rewrite()

    def pending(self, root: str) -> list[dict[str, Any]]:
        """Rows whose file exists under ``root`` with the recorded size and SHA-256 (a rename that
        happened; hashing only the few files of a round cut short)."""
        from actors.storage.integrity import sha256_file

        with self.lock:
            out, gone = [], []
            for key, rec in self.records.items():
                path = os.path.join(root, key)
                if os.path.exists(path) and os.path.getsize(path) == rec.get("bytes") and \
                        sha256_file(path) == rec.get("sha256"):
                    out.append(rec)
                else:
                    gone.append(key)
            for key in gone:
                del self.records[key]
            if gone:
                self._rewrite()
            return out

    def _rewrite(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(orjson.dumps(rec) + b"\n" for rec in self.records.values()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
