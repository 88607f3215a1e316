"""Reading a stored file's bytes from its recipe: bisect to the first extent, pread the rest.

A range already in the page cache is read inline (preadv with RWF_NOWAIT answers at once or says
EAGAIN) into one reused buffer; only a range that must wait for the disk goes to a worker thread,
so one cold read never stalls the event loop and a warm one pays neither a thread hop nor an
allocation.
"""

from __future__ import annotations

import bisect
import errno
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from modelstore.fusefs.tree import StoredContent

RunInThread = Callable[..., Awaitable[bytearray]]


SCRATCH_BYTES = 4 << 20  # larger than any FUSE read request (1 MiB with the raised readahead)
_scratch = bytearray(SCRATCH_BYTES)


def _read_inline(pieces: list[tuple[int, int, int]], total: int) -> memoryview | None:
    """All pieces with preadv(RWF_NOWAIT) into the shared scratch buffer, or None as soon as one
    would wait for the disk. The view is valid only until the next read: pyfuse3 copies it into
    its reply before any other task runs, and nothing may await in between."""
    if total > SCRATCH_BYTES:
        return None
    view = memoryview(_scratch)[:total]
    pos = 0
    for fd, blob_offset, length in pieces:
        try:
            n = os.preadv(fd, [view[pos : pos + length]], blob_offset, os.RWF_NOWAIT)
        except OSError:  # EAGAIN: not in the page cache; EOPNOTSUPP: no RWF_NOWAIT here
            return None
        if n != length:
            return None
        pos += length
    return view


def _read_blocking(pieces: list[tuple[int, int, int]], total: int) -> bytearray:
    """The same in a worker thread, into a buffer of its own."""
    buf = bytearray(total)
    view = memoryview(buf)
    pos = 0
    for fd, blob_offset, length in pieces:
        done = 0
        while done < length:
            n = os.preadv(fd, [view[pos + done : pos + length]], blob_offset + done)
            if n == 0:
                raise OSError(errno.EIO, "blob shorter than its recipe says")
            done += n
        pos += length
    return buf


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

    async def read(self, offset: int, size: int, in_thread: RunInThread) -> memoryview | bytearray:
        pieces = self.pieces(offset, size)
        total = sum(length for _, _, length in pieces)
        inline = _read_inline(pieces, total)
        if inline is not None:
            return inline
        return await in_thread(_read_blocking, pieces, total)
