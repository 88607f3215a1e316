"""What `scan` remembers between runs: the hashes of every file it read, so that a second scan of
unchanged folders reads nothing but directory listings and stat results.

One SQLite file in the store home, `<home>/scan-cache.sqlite`. A row is keyed by the file's real
path and is valid only while the file keeps the device, inode, size and mtime it had when it was
hashed; anything else makes it a miss, and the new hashes replace the row. It is a cache: losing
it costs one slow scan, never a wrong figure, so it is written without fsync.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

CACHE_NAME = "scan-cache.sqlite"
# Bump when what is cached changes meaning (the tensor size threshold, the digest kinds): every
# row written under another version is dropped on open.
CACHE_VERSION = 1


@dataclass(frozen=True)
class FileKey:
    """What identifies one version of one file on disk."""

    realpath: str
    dev: int
    ino: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileDigest:
    """What `scan` needs of a file's bytes: its identity, its format, and its shareable tensors."""

    size: int
    b3: str
    sha256: str
    format: str | None  # "gguf", "safetensors" or None
    tensors: tuple[tuple[str, int], ...]  # (BLAKE3, length) of each tensor add would share, file order
    problem: str | None = None  # why a .gguf/.safetensors file was read as plain bytes

    @property
    def tensor_bytes(self) -> int:
        return sum(length for _, length in self.tensors)


class ScanCache:
    """Digests by file key. `ScanCache(None)` keeps them in memory for this run only."""

    def __init__(self, path: Path | None, tensor_threshold: int) -> None:
        self.path = path
        self.db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None, timeout=30)
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS files (realpath TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, "
                        "size INTEGER, mtime_ns INTEGER, digest TEXT NOT NULL)")
        self._drop_if_stale(f"{CACHE_VERSION}:{tensor_threshold}")

    def _drop_if_stale(self, version: str) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        if row is not None and row[0] == version:
            return
        with self.db:
            self.db.execute("DELETE FROM files")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (version,))

    def get(self, key: FileKey) -> FileDigest | None:
        row = self.db.execute("SELECT dev, ino, size, mtime_ns, digest FROM files WHERE realpath = ?",
                              (key.realpath,)).fetchone()
        if row is None or tuple(row[:4]) != (key.dev, key.ino, key.size, key.mtime_ns):
            return None
        raw = json.loads(row[4])
        return FileDigest(raw["size"], raw["b3"], raw["sha256"], raw["format"],
                          tuple((d, n) for d, n in raw["tensors"]), raw.get("problem"))

    def put(self, key: FileKey, digest: FileDigest) -> None:
        raw = json.dumps({"size": digest.size, "b3": digest.b3, "sha256": digest.sha256,
                          "format": digest.format, "tensors": digest.tensors,
                          "problem": digest.problem}, separators=(",", ":"))
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                            (key.realpath, key.dev, key.ino, key.size, key.mtime_ns, raw))

    def forget_missing(self, folder: str, present: set[str]) -> int:
        """Drop the rows of files under `folder` (a real path) that are not in `present`: files
        deleted since they were hashed. Returns how many rows went."""
        prefix = folder.rstrip("/") + "/"
        rows = self.db.execute("SELECT realpath FROM files WHERE substr(realpath, 1, ?) = ?",
                               (len(prefix), prefix)).fetchall()
        gone = [(p,) for (p,) in rows if p not in present]
        with self.db:
            self.db.executemany("DELETE FROM files WHERE realpath = ?", gone)
        return len(gone)

    def close(self) -> None:
        self.db.close()
