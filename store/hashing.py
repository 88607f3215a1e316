"""One read pass over a file: BLAKE3 and SHA-256 of the whole, git's blob SHA-1 for small files,
and BLAKE3 of every tensor's bytes.

The caller's thread publishes the file chunk by chunk: views of its mapped pages under a read
lease (leased.py), which saves copying every byte, or else chunks read into a ring of buffers.
Each hash is a stream that walks the chunks in order; two worker threads feed them: one the
SHA-256 (with git's SHA-1), one the tensors' BLAKE3s, and both take up the whole file's BLAKE3
when their own stream has nothing waiting. The reading keeps at most RING chunks ahead of the
slowest stream. blake3 and hashlib release the GIL, so on two cores the hashes run side by side
instead of every chunk waiting for the slowest, and while the SHA-256 is held back (the file may
be a copy of a stored one) both cores do the BLAKE3s. (A thread per hash was 8-12% slower on two
cores: more wake-ups and GIL hand-offs.) Memory is the ring and one mapped window, whatever the
file size; buffers are kept for the next file."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import blake3

from modelstore.store.digests import GIT_SHA1_LIMIT, git_blob_header
from modelstore.store.errors import SourceChanged
from modelstore.store.leased import LeasedMap
from modelstore.store.tensors import TensorSpan

CHUNK = 1 << 20  # small enough that the RING chunks in flight stay in the CPU's cache
RING = 4  # chunks: how far the reading may run ahead of the slowest hash
CHECK_EVERY = 0.25  # seconds: how often a waiting reader checks the lease (a SHA-256 catch-up can take minutes)
READ_MAPPED = True  # hash mapped pages under a read lease where one can be had (leased.py)

# on_chunk(file offset, chunk, [(tensor, its digest) for tensors that end in this chunk])
OnChunk = Callable[[int, memoryview, list[tuple[TensorSpan, str]]], None]


@dataclass(frozen=True)
class Stored:
    """What the caller's store holds already, so that hashing can leave out the SHA-256 of a file
    it has: while every tensor hashed so far is in the store the file is likely a copy, and the
    SHA-256 waits; a new tensor, or a whole that turns out new, has it catch up from the file."""

    has_file: Callable[[str], bool]  # BLAKE3 of a whole file
    has_tensors: Callable[[list[str]], bool]  # every one of these tensor BLAKE3s
    has_size: Callable[[int], bool]  # a file of this many bytes: a copy has its original's size


@dataclass(frozen=True)
class FileHashes:
    size: int
    b3: str
    sha256: str | None  # None only when `stored` has the file
    git_sha1: str | None
    tensor_b3: dict[str, str]  # tensor name -> BLAKE3 of its bytes (only spans that were asked for)
    mtime_ns: int


class _TensorHasher:
    """Feeds chunks to per-tensor hashers; spans must be disjoint and not empty."""

    def __init__(self, spans: Iterable[TensorSpan]) -> None:
        self.spans = sorted(spans, key=lambda s: s.offset)
        self.next = 0
        self.open: list[tuple[TensorSpan, blake3.blake3]] = []
        self.done: dict[str, str] = {}

    def update(self, start: int, chunk: memoryview) -> list[tuple[TensorSpan, str]]:
        end = start + len(chunk)
        while self.next < len(self.spans) and self.spans[self.next].offset < end:
            self.open.append((self.spans[self.next], blake3.blake3(max_threads=1)))
            self.next += 1
        finished: list[tuple[TensorSpan, str]] = []
        still_open = []
        for span, h in self.open:
            lo, hi = max(span.offset, start), min(span.end, end)
            if hi > lo:
                h.update(chunk[lo - start : hi - start])
            if span.end <= end:
                self.done[span.name] = h.hexdigest()
                finished.append((span, self.done[span.name]))
            else:
                still_open.append((span, h))
        self.open = still_open
        return finished


class _BufferPool:
    """Chunk buffers kept between files: a fresh chunk-sized bytearray is zeroed and faulted in page
    by page, which costs more than hashing a small model's chunk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[bytearray] = []

    def take(self, n: int) -> list[bytearray]:
        with self._lock:
            taken, self._free = self._free[:n], self._free[n:]
        return taken + [bytearray(CHUNK) for _ in range(n - len(taken))]

    def give(self, buffers: list[bytearray]) -> None:
        with self._lock:
            self._free.extend(buffers)
            del self._free[2 * RING:]


_POOL = _BufferPool()


class _Stream:
    """One hash's walk over the ring: `work(offset, chunk)` on every chunk, in order. A worker
    thread claims the stream (`busy`) for one chunk at a time, so a stream two workers share is
    still fed in order by one thread at a time; `done` counts the chunks it has had."""

    def __init__(self, name: str, work: Callable[[int, memoryview], object], shared: bool = False) -> None:
        self.name, self.work = name, work
        self.shared = shared  # fed by more than one worker
        self.done = 0
        self.busy = False
        self.skip = False  # set when the result is no longer wanted: chunks are passed over
        self.results: list[object] = []
        self.error: BaseException | None = None

    def feed(self, offset: int, chunk: memoryview) -> None:
        if self.error is None and not self.skip:
            try:
                self.results.append(self.work(offset, chunk))
            except BaseException as exc:  # re-raised by the reader; keep freeing slots
                self.error = exc


class _Sha256Stream(_Stream):
    """The SHA-256 (and git SHA-1). While `hold` is set it passes chunks over and remembers where
    it stopped; released, it reads the gap from the file itself (the page cache, as the file was
    just read) before going on with the ring."""

    def __init__(self, path: str, fd: int, sha: hashlib._Hash, git: hashlib._Hash | None, hold: bool) -> None:
        super().__init__("sha256", self._hash)
        self.path, self.fd, self.sha, self.git = path, fd, sha, git
        self.hold = hold
        self.hashed_to = 0  # the SHA-256 covers the file up to here

    def _hash(self, offset: int, chunk: memoryview) -> None:
        if self.hold:
            return
        self.catch_up(offset)
        if not self.skip:  # called off during a long catch-up: the chunk's pages may be unleased
            self._update(chunk)

    def _update(self, chunk: memoryview) -> None:
        self.sha.update(chunk)
        if self.git is not None:
            self.git.update(chunk)
        self.hashed_to += len(chunk)

    def catch_up(self, to: int) -> None:
        if self.hashed_to >= to:
            return
        [buffer] = _POOL.take(1)
        try:
            view = memoryview(buffer)
            while self.hashed_to < to and not self.skip:
                n = os.preadv(self.fd, [view[: min(CHUNK, to - self.hashed_to)]], self.hashed_to)
                if n == 0:
                    raise SourceChanged(f"{self.path}: the file shrank while it was being read; nothing was stored")
                self._update(view[:n])
        finally:
            _POOL.give([buffer])


class _Worker(threading.Thread):
    """Feeds the first of its streams that has a chunk waiting and is not busy; returns once the
    reading has ended and its streams have had every chunk."""

    def __init__(self, name: str, streams: list[_Stream], ring: _Ring) -> None:
        super().__init__(name=name, daemon=True)
        self.streams, self.ring = streams, ring

    def run(self) -> None:
        while job := self.ring.take(self.streams):
            stream, offset, chunk = job
            stream.feed(offset, chunk)
            self.ring.finish(stream)


class _Ring:
    """Chunks shared by the reader and the workers. A new chunk (or a shared stream let go with
    chunks still waiting) wakes the workers; a stream done with a chunk wakes the reader only if
    that is what the reader waits for, so the fast streams finishing chunks do not wake it again
    and again while it waits for the slow one."""

    def __init__(self, streams: list[_Stream], check: Callable[[], None]) -> None:
        self.streams = streams
        self.check = check  # raises if the pass must stop; called while the reader waits, too
        lock = threading.Lock()
        self.published = threading.Condition(lock)  # work for a worker, or the reading ended
        self.freed = threading.Condition(lock)  # what the reader waits for (`awaited`) came true
        self.awaited: Callable[[], bool] | None = None
        self.chunks: list[tuple[int, memoryview] | None] = []  # every chunk read so far; None once forgotten
        self.ended = False

    def take(self, streams: list[_Stream]) -> tuple[_Stream, int, memoryview] | None:
        """The next chunk of the first of `streams` that has one and is free, claimed; None once
        the reading has ended and every one of `streams` has had every chunk."""
        with self.published:
            while True:
                for stream in streams:
                    if not stream.busy and stream.done < len(self.chunks):
                        stream.busy = True
                        chunk = self.chunks[stream.done]
                        assert chunk is not None  # forgotten only once every stream is past it
                        return (stream, *chunk)
                if self.ended and all(s.done == len(self.chunks) for s in streams):
                    return None
                self.published.wait()

    def finish(self, stream: _Stream) -> None:
        with self.freed:
            stream.done += 1
            stream.busy = False
            if (stream.shared and stream.done < len(self.chunks)) or self.ended:  # the other worker may take it up
                self.published.notify_all()
            if self.awaited is not None and self.awaited():
                self.freed.notify()

    def publish(self, offset: int, chunk: memoryview) -> None:
        with self.published:
            self.chunks.append((offset, chunk))
            self.published.notify_all()

    def end(self) -> None:
        with self.published:
            self.ended = True
            self.published.notify_all()

    def _wait(self, ready: Callable[[], bool]) -> None:
        """Only the reader's thread waits here, so one `awaited` is enough."""
        with self.freed:
            self.awaited = ready
            try:
                while not ready():
                    if not self.freed.wait(CHECK_EVERY):
                        self.check()
            finally:
                self.awaited = None

    def wait_until_done(self, stream: _Stream, count: int) -> None:
        self._wait(lambda: stream.done >= count)

    def wait_until_all_done(self, count: int) -> None:
        self._wait(lambda: all(s.done >= count for s in self.streams))

    def wait_for_free_slot(self, index: int) -> None:
        """Chunk `index` may be read once every stream is done with chunk `index - RING`."""
        self.wait_until_all_done(index - RING + 1)

    def forget(self, index: int) -> None:
        """Drop chunk `index`'s view (a mapped window is unmapped once no view of it is left)."""
        if index >= 0:
            self.chunks[index] = None


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    # ctime too: an edit that puts the mtime back still moves it, and a held SHA-256 reads the
    # file a second time, after the BLAKE3s did
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def hash_file(
    path: str,
    spans: Iterable[TensorSpan] = (),
    *,
    on_chunk: OnChunk | None = None,
    progress: Callable[[int], None] | None = None,
    stored: Stored | None = None,
) -> FileHashes:
    """Hash `path` in one pass. `on_chunk` is called for every chunk, in file order, once its
    tensors are hashed, so the caller can decide what to write out; the chunk is valid only
    during the call (its buffer is read into again, or its pages unmapped). With `stored`, a file the
    store already has gets no SHA-256 (None): the store knows it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        before = os.fstat(fd)
        size = before.st_size
        sha = hashlib.sha256()
        whole = blake3.blake3(max_threads=1)
        git = hashlib.sha1(git_blob_header(size)) if size < GIT_SHA1_LIMIT else None
        tensors = _TensorHasher(spans)
        if size <= CHUNK:
            offset = _hash_small(fd, size, sha, whole, git, tensors, on_chunk, progress)
            skipped = False
        else:
            offset, skipped = _hash_large(path, fd, size, sha, whole, git, tensors, on_chunk, progress, stored)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if _stat_key(before) != _stat_key(after) or offset != size:
        raise SourceChanged(f"{path}: the file changed while it was being read; nothing was stored")
    missing = [s.name for s in tensors.spans if s.name not in tensors.done]
    if missing:  # only a file that shrank under us gets here, and the stat check catches that
        raise SourceChanged(f"{path}: tensors {missing[:3]} were not read in full")
    if skipped:  # the git SHA-1 came from the same (skipped) consumer: it is partial
        return FileHashes(size, whole.hexdigest(), None, None, tensors.done, before.st_mtime_ns)
    return FileHashes(size, whole.hexdigest(), sha.hexdigest(), git.hexdigest() if git else None, tensors.done,
                      before.st_mtime_ns)


def _hash_small(fd: int, size: int, sha: hashlib._Hash, whole: blake3.blake3, git: hashlib._Hash | None,
                tensors: _TensorHasher, on_chunk: OnChunk | None, progress: Callable[[int], None] | None) -> int:
    """A file of one chunk: no threads to start, the hashes one after another."""
    buffer = bytearray(size + 1)  # one byte more: a file that grew since fstat shows up as a longer read
    view, got = memoryview(buffer), 0
    while got < len(buffer) and (n := os.readv(fd, [view[got:]])):  # short reads happen (FUSE, NFS)
        got += n
    if got != size:
        return got
    chunk = view[:size]
    sha.update(chunk)
    whole.update(chunk)
    if git is not None:
        git.update(chunk)
    _deliver_chunk(on_chunk, progress, 0, chunk, tensors.update(0, chunk))
    return size


def _deliver_chunk(on_chunk: OnChunk | None, progress: Callable[[int], None] | None, offset: int,
                   chunk: memoryview, finished: list[tuple[TensorSpan, str]]) -> None:
    """Every chunk goes through here once hashed, in file order (the fault tests hook it)."""
    if on_chunk is not None:
        on_chunk(offset, chunk, finished)
    if progress is not None:
        progress(len(chunk))


def _hash_large(path: str, fd: int, size: int, sha: hashlib._Hash, whole: blake3.blake3, git: hashlib._Hash | None,
                tensors: _TensorHasher, on_chunk: OnChunk | None, progress: Callable[[int], None] | None,
                stored: Stored | None) -> tuple[int, bool]:
    # Held only where a copy is possible: the store has a file of this size. Elsewhere a hold would
    # only move the SHA-256 out of the pass (and a file larger than memory would be read twice).
    hold = stored is not None and bool(tensors.spans) and stored.has_size(size)
    sha_stream = _Sha256Stream(path, fd, sha, git, hold=hold)
    whole_stream = _Stream("blake3", lambda offset, chunk: whole.update(chunk), shared=True)
    tensor_stream = _Stream("tensors", tensors.update)
    leased = LeasedMap.take(fd, size) if READ_MAPPED else None
    buffers = [] if leased is not None else _POOL.take(RING)

    def check_lease() -> None:
        if leased is not None and leased.broken():
            raise SourceChanged(f"{path}: the file changed (it was opened for writing) while it was being read; "
                                "nothing was stored")

    ring = _Ring([sha_stream, whole_stream, tensor_stream], check_lease)
    # Two workers for three streams: each has its own and both take up the whole file's BLAKE3
    # when their own has nothing waiting (the SHA-256 held, or caught up with the reading).
    workers = [_Worker("hash-sha256", [sha_stream, whole_stream], ring),
               _Worker("hash-blake3", [tensor_stream, whole_stream], ring)]
    delivered = 0  # chunks handed to on_chunk

    def deliver(upto: int) -> None:
        nonlocal delivered
        ring.wait_until_done(tensor_stream, upto)
        _raise_from(ring.streams)
        while delivered < upto:
            item = ring.chunks[delivered]
            assert item is not None  # forgotten only once delivered
            offset, chunk = item
            finished: list[tuple[TensorSpan, str]] = tensor_stream.results[delivered]  # type: ignore[assignment]
            if sha_stream.hold and finished and stored and not stored.has_tensors([d for _, d in finished]):
                sha_stream.hold = False  # a tensor the store lacks: the file is new
            _deliver_chunk(on_chunk, progress, offset, chunk, finished)
            delivered += 1

    offset = index = 0
    skipped = False
    try:
        for worker in workers:
            worker.start()
        while offset < size:
            # on_chunk must see a chunk before its buffer is read into again
            deliver(max(delivered, index - RING + 1))
            ring.wait_for_free_slot(index)
            ring.forget(index - RING)
            _raise_from(ring.streams)
            if leased is not None:
                check_lease()
                chunk = leased.read(offset, min(CHUNK, size - offset))
            else:
                buffer = memoryview(buffers[index % RING])
                n = os.readv(fd, [buffer])
                if n == 0:
                    break
                chunk = buffer[:n]
            ring.publish(offset, chunk)
            offset += len(chunk)
            index += 1
        deliver(index)
        check_lease()  # a writer waiting now is about to change the file: say so rather than let it in unseen
        ring.wait_until_done(whole_stream, index)
        _raise_from(ring.streams)
        if stored is not None and offset == size and stored.has_file(whole.hexdigest()):
            sha_stream.skip = skipped = True
        else:
            sha_stream.hold = False
        ring.end()
        ring.wait_until_all_done(index)  # not a plain join: the lease is checked meanwhile
        for worker in workers:
            worker.join()
        if leased is not None:  # no hash touches the mapped pages any more; the catch-up uses preadv
            leased.release()
        _raise_from(ring.streams)
        if not skipped:
            sha_stream.catch_up(offset)  # chunks passed over while the file looked like a copy
    except BaseException:
        for stream in ring.streams:
            stream.skip = True
        raise
    finally:
        ring.end()
        for worker in workers:
            if worker.ident is not None:  # started
                worker.join()
        if leased is not None:  # every hash is done with the mapped pages
            leased.release()
        _POOL.give(buffers)
    _raise_from(ring.streams)
    return offset, skipped


def _raise_from(streams: list[_Stream]) -> None:
    for stream in streams:
        if stream.error is not None:
            raise stream.error
