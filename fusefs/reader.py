"""Reading a stored file's bytes from its recipe: bisect to the first extent, pread the rest.

A range already in the page cache is read inline (preadv with RWF_NOWAIT answers at once or says
EAGAIN) into one reused buffer; only a range that must wait for the disk goes to a worker thread,
so one cold read never stalls the event loop and a warm one pays neither a thread hop nor an
allocation. A converted file's derived pieces come from `DerivedReader`: its in-memory slices,
the on-disk derived cache, or a conversion run in a worker thread.
"""

from __future__ import annotations

import bisect
import errno
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from blake3 import blake3

from modelstore.converters import tensorops
from modelstore.fusefs.tree import StoredContent
from modelstore.store.derived import DerivedCache, op_key
from modelstore.store.records import Derived, Extent

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
    starts: tuple[int, ...]
    derived: "DerivedReader | None" = None

    @classmethod
    def open(cls, content: StoredContent, blob_path: Callable[[str], str],
             derived: "DerivedReader | None" = None) -> "OpenFile":
        fds: dict[str, int] = {}
        try:
            for blob in content.blobs:
                fds[blob] = os.open(blob_path(blob), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            for fd in fds.values():
                os.close(fd)
            raise
        return cls(content, fds, content.starts, derived)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def parts(self, offset: int, size: int) -> list[tuple[Extent | Derived, int, int]]:
        """(piece, start, end within the piece) for file bytes [offset, offset+size)."""
        end = min(offset + size, self.content.size)
        out = []
        i = max(bisect.bisect_right(self.starts, offset) - 1, 0)
        while offset < end and i < len(self.starts):
            piece, start = self.content.recipe[i], self.starts[i]
            lo, hi = offset - start, min(piece.length, end - start)
            if hi > lo:
                out.append((piece, lo, hi))
                offset = start + hi
            i += 1
        return out

    def pieces(self, offset: int, size: int) -> list[tuple[int, int, int]]:
        """(fd, blob offset, length) for file bytes [offset, offset+size) of a stored file."""
        out = []
        for piece, lo, hi in self.parts(offset, size):
            assert isinstance(piece, Extent)
            out.append((self.fds[piece.blob], piece.offset + lo, hi - lo))
        return out

    async def read(self, offset: int, size: int, in_thread: RunInThread) -> memoryview | bytearray | bytes:
        parts = self.parts(offset, size)
        if self.derived is None or all(isinstance(p, Extent) for p, _, _ in parts):
            pieces = [(self.fds[p.blob], p.offset + lo, hi - lo) for p, lo, hi in parts]  # type: ignore[union-attr]
            total = sum(length for _, _, length in pieces)
            inline = _read_inline(pieces, total)
            if inline is not None:
                return inline
            return await in_thread(_read_blocking, pieces, total)
        out = bytearray()
        for piece, lo, hi in parts:
            if isinstance(piece, Extent):
                out += await in_thread(_read_blocking, [(self.fds[piece.blob], piece.offset + lo, hi - lo)], hi - lo)
            else:
                out += await self.derived.read(piece, lo, hi, self.fds)
        return out


class DerivedReader:
    """Derived pieces for every open file of a mount: the last few slices in memory (a reader
    asks for 1 MiB at a time from a slice of several), then the on-disk cache, else the
    conversion, run in a worker thread, once per slice however many readers want it. (Converting
    the next slice ahead on the other core was tried: numpy's casts and gguf's quantizers did not
    run any faster on two threads here, and the look-ahead slowed cold reads by a third.)"""

    def __init__(self, cache: DerivedCache, in_thread: Callable[..., Awaitable[bytes]], keep: int = 4) -> None:
        import trio

        self.cache, self.in_thread, self.keep = cache, in_thread, keep
        self.recent: dict[str, bytes] = {}  # insertion order = use order
        self.locks: dict[str, trio.Lock] = {}
        self._trio = trio

    async def read(self, piece: Derived, lo: int, hi: int, fds: dict[str, int]) -> bytes:
        if piece.op["kind"] == "zeros":
            return bytes(hi - lo)
        key = op_key(piece.op, piece.length)
        data = self.recent.pop(key, None)
        if data is None:
            lock = self.locks.setdefault(key, self._trio.Lock())
            try:
                async with lock:
                    data = self.recent.pop(key, None)
                    if data is None:
                        data = await self.in_thread(self._load, piece, key, fds)
            finally:  # also when the conversion failed or the read was cancelled: no lock left behind
                if not lock.locked() and lock.statistics().tasks_waiting == 0 and self.locks.get(key) is lock:
                    del self.locks[key]
        self.recent[key] = data
        while len(self.recent) > self.keep:
            self.recent.pop(next(iter(self.recent)))
        return data[lo:hi]

    def _load(self, piece: Derived, key: str, fds: dict[str, int]) -> bytes:
        """A cached slice whose BLAKE3 is the one planned, else the slice converted anew (and
        checked the same way: a conversion that no longer gives the planned bytes is an error,
        never silently different bytes under a name that promises others)."""
        expected = piece.op.get("b3")
        data = self.cache.get(key)
        if data is not None and len(data) == piece.length and (expected is None or blake3(data).hexdigest() == expected):
            return data

        def read(ext: Extent) -> bytes:
            return bytes(_read_blocking([(fds[ext.blob], ext.offset, ext.length)], ext.length))

        data = tensorops.run(piece.op, piece.length, read)
        if expected is not None and blake3(data).hexdigest() != expected:
            raise OSError(errno.EIO, "a converted slice differs from what was planned (was numpy or gguf upgraded? "
                                     "run `modelstore convert --all`)")
        self.cache.put(key, data)
        return data
