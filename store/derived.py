"""The derived cache: converted tensor slices, kept on disk so each is computed once and reused
across reads and remounts, within a size limit, the least recently used evicted first.

Entries are named by the BLAKE3 of the op that makes them, written to a temporary name and
renamed, so a reader never sees half an entry and two mounts may share the folder. Entries can
always be made again from the store: losing the folder loses nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import blake3

log = logging.getLogger(__name__)


def op_key(op: dict[str, Any], length: int) -> str:
    return blake3.blake3(json.dumps([op, length], sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class DerivedCache:
    def __init__(self, root: Path, limit: int) -> None:
        self.root, self.limit = root, limit
        self._lock = threading.Lock()
        self._used: int | None = None
        self._warned = False

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> bytes | None:
        """The entry, or None when it is missing or cannot be read (the folder is a file, is not
        readable, the disk fails): the slice is then converted again, as if it was never kept."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("the derived cache %s cannot be read (%s): converting without it", self.root, exc)
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:
            pass
        return data

    def put(self, key: str, data: bytes) -> None:
        """Keep `data` unless it alone exceeds the limit; a full disk only means it is not kept."""
        if len(data) > self.limit:
            return
        path = self._path(key)
        tmp = path.parent / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, path)
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:  # no folder to make it in (ENOTDIR): nothing was written
                pass
            return
        with self._lock:
            try:
                self._used = (self.used_bytes() if self._used is None else self._used) + len(data)
                if self._used > self.limit:
                    self._evict(self.limit * 9 // 10)
            except OSError:  # a folder of the cache unreadable: the entry is kept, eviction waits
                self._used = None

    def entries(self) -> list[tuple[float, int, Path]]:
        out = []
        if self.root.is_dir():
            for sub in self.root.iterdir():
                if sub.is_dir():
                    for f in sub.iterdir():
                        try:
                            st = f.stat()
                        except FileNotFoundError:
                            continue
                        out.append((st.st_mtime, st.st_size, f))
        return out

    def clear(self) -> None:
        with self._lock:
            self._evict(0)

    def used_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def _evict(self, target: int) -> None:
        entries = sorted(self.entries())
        used = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if used <= target:
                break
            path.unlink(missing_ok=True)
            used -= size
        self._used = used
