"""What is local and what is known to be in the bucket, kept between passes.

* :func:`sealed_files`: the sealed archive files (non-hidden ``*.parquet`` whose path fits
  the archive layout; spools, temp files and the catalog live in hidden folders, and a
  period is only a file once it is sealed by atomic rename).
* :class:`VerifiedState`: ``{root}/.backup/verified.json``, the objects verified in the
  bucket (key, size, mtime, SHA-256, ETag) and the SHA-256 of local files by size and mtime,
  so a no-op pass costs one listing and no hashing.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import orjson

from actors.backup.target import Target
from actors.logs import get_logger
from actors.storage.integrity import sha256_file
from actors.storage.layout import LayoutError, parse_relpath

log = get_logger("backup")

STATE_DIR = ".backup"
STATE_FILE = "verified.json"


def sealed_files(root: str) -> dict[str, os.stat_result]:
    """Sealed archive files under root: relative key -> stat (hidden parts and temp files excluded)."""
    out = {}
    root_path = Path(root)
    for dirpath, dirnames, filenames in os.walk(root_path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not name.endswith(".parquet"):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root_path).as_posix()
            try:
                parse_relpath(rel)
            except LayoutError:
                continue
            out[rel] = path.stat()
    return out


class VerifiedState:
    """``{root}/.backup/verified.json``: key -> [size, mtime_ns, sha256, etag] known in the bucket."""

    def __init__(self, root: str, target: Target) -> None:
        self.path = Path(root) / STATE_DIR / STATE_FILE
        self.scope = target.scope
        self.entries: dict[str, list] = {}
        self.hashes: dict[str, list] = {}     # key -> [size, mtime_ns, sha256] of the local file
        self.lock = threading.Lock()
        if self.path.exists():
            try:
                data = orjson.loads(self.path.read_bytes())
                if data.get("scope") == self.scope:
                    self.entries = data.get("verified", {})
                self.hashes = data.get("hashes", {})
            except (orjson.JSONDecodeError, OSError, AttributeError):
                log.warning(f"ignoring unreadable backup state {self.path}")

    def local_sha(self, rel: str, path: Path, st: os.stat_result, body: bytes | None = None) -> str:
        """SHA-256 of the file (of ``body``, its bytes, when given), remembered while it is unchanged."""
        known = self.hashes.get(rel)
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            return known[2]
        sha = hashlib.sha256(body).hexdigest() if body is not None else sha256_file(path)
        self.remember_hash(rel, st, sha)
        return sha

    def remember_hash(self, rel: str, st: os.stat_result, sha: str) -> None:
        """The file (as of ``st``) hashes to ``sha``."""
        with self.lock:
            self.hashes[rel] = [st.st_size, st.st_mtime_ns, sha]

    def hash_known(self, rel: str, st: os.stat_result) -> bool:
        known = self.hashes.get(rel)
        return bool(known) and known[0] == st.st_size and known[1] == st.st_mtime_ns

    def forget_hash(self, rel: str) -> None:
        with self.lock:
            self.hashes.pop(rel, None)

    def record(self, rel: str, size: int, mtime_ns: int, sha: str, etag: str) -> None:
        with self.lock:
            self.entries[rel] = [size, mtime_ns, sha, etag]

    def forget(self, rel: str) -> None:
        with self.lock:
            self.entries.pop(rel, None)

    def save(self) -> None:
        with self.lock:
            data = orjson.dumps({"scope": self.scope, "verified": self.entries, "hashes": self.hashes})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
