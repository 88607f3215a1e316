"""Reading a stored file's bytes from its recipe: bisect to the first extent, pread the rest.

A range already in the page cache is read inline (preadv with RWF_NOWAIT answers at once or says
EAGAIN); only a range that must wait for the disk goes to a worker thread, so one cold read never
stalls the event loop and a warm one pays no thread hop.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from modelstore.fusefs.tree import StoredContent

RunInThread = Callable[..., Awaitable[bytes]]


def _pread_nowait(fd: int, size: int, offset: int) -> bytes | None:
    buf = bytearray(size)
    try:
        n = os.preadv(fd, [buf], offset, os.RWF_NOWAIT)
    except BlockingIOError:
        return None
    except OSError:
        return None  # RWF_NOWAIT unsupported here: let the thread do a plain pread
    if n != size:
        return None
    return bytes(buf)


@dataclass
class OpenFile:
    """A stored file held open: a descriptor per blob, taken at open() so the file keeps reading
    even if its model is removed and gc deletes the blobs meanwhile."""

    content: StoredContent
    fds: dict[str, int]
    starts: list[int]

    @classmethod
    def open(cls, content: StoredContent, blob_path: Callable[[str], str]) -> "OpenFile":
        fds: dict[str, int] = {}
        try:
            for ext in content.recipe:
                if ext.blob not in fds:
                    fds[ext.blob] = os.open(blob_path(ext.blob), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            for fd in fds.values():
                os.close(fd)
            raise
        starts, pos = [], 0
        for ext in content.recipe:
            starts.append(pos)
            pos += ext.length
        return cls(content, fds, starts)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def pieces(self, offset: int, size: int) -> list[tuple[int, int, int]]:
        """(fd, blob offset, length) for file bytes [offset, offset+size)."""
        end = min(offset + size, self.content.size)
        out = []
        i = max(bisect.bisect_right(self.starts, offset) - 1, 0)
        while offset < end and i < len(self.starts):
            ext, start = self.content.recipe[i], self.starts[i]
            lo, hi = offset - start, min(ext.length, end - start)
            if hi > lo:
                out.append((self.fds[ext.blob], ext.offset + lo, hi - lo))
                offset = start + hi
            i += 1
        return out

    async def read(self, offset: int, size: int, in_thread: RunInThread) -> bytes:
        parts = []
        for fd, blob_offset, length in self.pieces(offset, size):
            data = _pread_nowait(fd, length, blob_offset)
            if data is None:
                data = await in_thread(os.pread, fd, length, blob_offset)
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)
