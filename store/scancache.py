"""What `scan` remembers between runs: the hashes of every file it read, so that a second scan of
unchanged folders reads nothing but directory listings and stat results.

One SQLite file in the store home, `<home>/scan-cache.sqlite`. A row is keyed by the file's real
path (as bytes: a file name need not be UTF-8) and is valid only while the file keeps the device,
inode, size, mtime and ctime it had when it was hashed (ctime: an edit that puts the mtime back
still moves it); anything else makes it a miss, and the new hashes replace the row. It is a cache:
losing it costs one slow scan, never a wrong figure, so it is written without fsync, and a damaged
one is set aside (removed, and replaced by one in memory for the rest of the run).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

CACHE_NAME = "scan-cache.sqlite"
# Bump when what is cached changes meaning (the tensor size threshold, the digest kinds): every
# row written under another version is dropped on open.
CACHE_VERSION = 3


@dataclass(frozen=True)
class FileKey:
    """What identifies one version of one file on disk."""

    realpath: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @property
    def stamp(self) -> tuple[int, int, int, int, int]:
        return (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)


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
        self.damaged: str | None = None  # why the file was set aside during this run
        self.removed = False  # and whether it was removed (damaged) or left (locked, unwritable)
        self.db: sqlite3.Connection | None
        self._version = f"{CACHE_VERSION}:{tensor_threshold}"
        try:
            self.db = self._open(path)
        except sqlite3.DatabaseError as exc:
            self.db = None
            self._set_aside(exc)

    def _open(self, path: Path | None) -> sqlite3.Connection:
        db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None, timeout=30)
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        if row is None or row[0] != self._version:  # rows written under another meaning: dropped
            with db:
                db.execute("DROP TABLE IF EXISTS files")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (self._version,))
        db.execute("CREATE TABLE IF NOT EXISTS files (realpath BLOB PRIMARY KEY, dev INTEGER, ino INTEGER, "
                   "size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, digest TEXT NOT NULL)")
        return db

    def _set_aside(self, exc: sqlite3.DatabaseError) -> None:
        """Go on in memory. A damaged file (a crash mid-write) is removed so that the next run
        starts a new one; one that is only locked or unwritable is left as it is."""
        self.removed = not isinstance(exc, sqlite3.OperationalError)
        self.damaged = f"{self.path}: {exc}"
        if self.db is not None:
            self.db.close()
        if self.path is not None and self.removed:
            for leftover in (self.path, self.path.with_name(self.path.name + "-journal")):
                try:
                    leftover.unlink()
                except OSError:
                    pass
        self.path = None
        self.db = self._open(None)

    def get(self, key: FileKey) -> FileDigest | None:
        try:
            row = self.db.execute("SELECT dev, ino, size, mtime_ns, ctime_ns, digest FROM files WHERE realpath = ?",
                                  (os.fsencode(key.realpath),)).fetchone()
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
            return None
        if row is None or tuple(row[:5]) != key.stamp:
            return None
        try:
            raw = json.loads(row[5])
            return FileDigest(raw["size"], raw["b3"], raw["sha256"], raw["format"],
                              tuple((d, n) for d, n in raw["tensors"]), raw.get("problem"))
        except (ValueError, KeyError, TypeError):  # a damaged row: a miss, rewritten once hashed
            return None

    def put(self, key: FileKey, digest: FileDigest) -> None:
        raw = json.dumps({"size": digest.size, "b3": digest.b3, "sha256": digest.sha256,
                          "format": digest.format, "tensors": digest.tensors,
                          "problem": digest.problem}, separators=(",", ":"))
        try:
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (os.fsencode(key.realpath), *key.stamp, raw))
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)

    def forget_missing(self, folder: str, present: set[str]) -> int:
        """Drop the rows of files under `folder` (a real path) that are not in `present`: files
        deleted since they were hashed. Returns how many rows went."""
        prefix = os.fsencode(folder.rstrip("/") + "/")
        kept = {os.fsencode(p) for p in present}
        try:
            rows = self.db.execute("SELECT realpath FROM files WHERE substr(realpath, 1, ?) = ?",
                                   (len(prefix), prefix)).fetchall()
            gone = [(p,) for (p,) in rows if p not in kept]
            with self.db:
                self.db.executemany("DELETE FROM files WHERE realpath = ?", gone)
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
            return 0
        return len(gone)

    def close(self) -> None:
        self.db.close()
