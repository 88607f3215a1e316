"""One read pass over a file: BLAKE3 and SHA-256 of the whole, git's blob SHA-1 for small files,
and BLAKE3 of every tensor's bytes.

Each hash runs in its own thread (blake3 and hashlib release the GIL), fed the same chunk, while
the caller's thread reads the next chunk into a second buffer. Memory is two chunks, whatever the
file size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import blake3

from modelstore.store.digests import GIT_SHA1_LIMIT, git_blob_header
from modelstore.store.errors import SourceChanged
from modelstore.store.tensors import TensorSpan

CHUNK = 8 << 20

# on_chunk(file offset, chunk, [(tensor, its digest) for tensors that end in this chunk])
OnChunk = Callable[[int, memoryview, list[tuple[TensorSpan, str]]], None]


@dataclass(frozen=True)
class FileHashes:
    size: int
    b3: str
    sha256: str
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


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def hash_file(
    path: str,
    spans: Iterable[TensorSpan] = (),
    *,
    on_chunk: OnChunk | None = None,
    progress: Callable[[int], None] | None = None,
) -> FileHashes:
    """Hash `path` in one pass. `on_chunk` is called for every chunk, in file order, once its
    hashes are complete, so the caller can decide what to write out."""
    fd = os.open(path, os.O_RDONLY)
    try:
        before = os.fstat(fd)
        size = before.st_size
        sha = hashlib.sha256()
        whole = blake3.blake3(max_threads=1)
        git = hashlib.sha1(git_blob_header(size)) if size < GIT_SHA1_LIMIT else None
        tensors = _TensorHasher(spans)
        buffers = [bytearray(min(CHUNK, max(size, 1))) for _ in range(2)]
        # One thread per hash: each sees the chunks in file order. While they hash chunk N the
        # caller's thread reads chunk N+1 and hands chunk N-1 (hashed) to `on_chunk`.
        pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash") for _ in range(3)]
        try:
            pending: tuple[int, memoryview, list[Future[object]]] | None = None
            offset, index = 0, 0
            while True:
                view = memoryview(buffers[index % 2])
                n = os.readv(fd, [view]) if offset < size else 0
                chunk = view[:n]
                submitted = None
                if n:
                    submitted = (offset, chunk, [
                        pools[0].submit(sha.update, chunk),
                        pools[1].submit(whole.update, chunk),
                        pools[2].submit(_update_tensors_and_git, tensors, git, offset, chunk),
                    ])
                if pending is not None:
                    _finish(pending, on_chunk, progress)
                pending = submitted
                if not n:
                    break
                offset += n
                index += 1
        finally:
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if _stat_key(before) != _stat_key(after) or offset != size:
        raise SourceChanged(f"{path}: the file changed while it was being read; nothing was stored")
    missing = [s.name for s in tensors.spans if s.name not in tensors.done]
    if missing:  # only a file that shrank under us gets here, and the stat check catches that
        raise SourceChanged(f"{path}: tensors {missing[:3]} were not read in full")
    return FileHashes(size, whole.hexdigest(), sha.hexdigest(), git.hexdigest() if git else None,
                      tensors.done, before.st_mtime_ns)


def _update_tensors_and_git(tensors: _TensorHasher, git: "hashlib._Hash | None", offset: int,
                            chunk: memoryview) -> list[tuple[TensorSpan, str]]:
    if git is not None:
        git.update(chunk)
    return tensors.update(offset, chunk)


def _finish(pending: tuple[int, memoryview, list[Future[object]]],
            on_chunk: OnChunk | None,
            progress: Callable[[int], None] | None) -> None:
    offset, chunk, jobs = pending
    results = [job.result() for job in jobs]
    finished: list[tuple[TensorSpan, str]] = results[2]  # type: ignore[assignment]
    if on_chunk is not None:
        on_chunk(offset, chunk, finished)
    if progress is not None:
        progress(len(chunk))
