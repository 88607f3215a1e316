"""Turning a file on disk into a stored file: hash it once, reuse every tensor the store already
holds, and write only the novel bytes (header, padding, new tensors) as one new blob.

Nothing here writes the catalog: `Ingest` collects blobs (already durable), file records and
tensor index entries, and `Store` commits them with the model in one transaction.

With `--copy` the novel bytes are copied in the background (copy_file_range, in the kernel)
while the file is hashed, each tensor once its hash shows the store lacks it; the blob is ready
when the pass ends. The other modes hash first and then link, move or clone. Every copy made
after the bytes were hashed is checked against the file's size and mtime at hashing time.

A new blob is made durable (fsync, rename into objects/) by a background thread, so the next
file's pass starts at once; `settle` waits for it, and the catalog is written only after that.
"""

from __future__ import annotations

import enum
import mmap
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from modelstore.store.catalog import Catalog
from modelstore.store.digests import B3, check_b3
from modelstore.store.errors import SourceChanged
from modelstore.store.hashing import FileHashes, Stored, hash_file
from modelstore.store.locks import WaitNotice, hold_dir_lock
from modelstore.store.objects import BackgroundCopy, Objects, copy_into, copy_range, fsync_path, no_space
from modelstore.store.records import Extent, FileRecord
from modelstore.store.tensors import TensorSpan, WeightsHeader, read_weights_header

# Tensors smaller than a page stay inside the novel bytes: sharing them saves next to nothing
# and would cut recipes into many tiny extents.
MIN_SHARED_TENSOR = 4096

# Reusing a few small tensors of a new file is not worth giving up its one-blob form (a hard link
# or rename instead of a copy, one extent to read): below this share, the file is stored whole.
MIN_REUSE_SHARE = 0.01

Progress = Callable[[int], None]
ProgressFactory = Callable[[int, str], Progress]


class ImportMode(enum.Enum):
    COPY = "copy"
    REFLINK = "reflink"
    LINK = "link"
    MOVE = "move"


@dataclass
class IngestResult:
    record: FileRecord
    header: WeightsHeader | None
    novel_bytes: int  # bytes this file added to the store (0 when it was stored already)
    reused_file: bool


@dataclass
class _Novel:
    """The novel byte ranges of one file, in file order, and where each lands in the new blob."""

    segments: list[tuple[int, int, int]] = field(default_factory=list)  # (file_start, file_end, blob_offset)
    size: int = 0

    def add(self, file_start: int, file_end: int) -> None:
        if file_end <= file_start:
            return
        if self.segments and self.segments[-1][1] == file_start:
            fs, _, bo = self.segments[-1]
            self.segments[-1] = (fs, file_end, bo)
        else:
            self.segments.append((file_start, file_end, self.size))
        self.size += file_end - file_start

    def blob_offset(self, file_offset: int) -> int:
        for fs, fe, bo in self.segments:
            if fs <= file_offset < fe:
                return bo + (file_offset - fs)
        raise AssertionError(f"offset {file_offset} is not among the novel bytes")


@dataclass
class _Plan:
    """Per file: which tensors are stored already, and the novel bytes around them."""

    novel: _Novel
    reused: dict[str, tuple[TensorSpan, Extent]] = field(default_factory=dict)  # name -> (span, where)
    new: dict[str, tuple[TensorSpan, str]] = field(default_factory=dict)  # name -> (span, digest)
    first_in_file: dict[str, TensorSpan] = field(default_factory=dict)  # digest -> first novel span


class _CopyAsHashed:
    """Feeds --copy's background copy from the hashing pass: the bytes between tensors as the pass
    reaches them, a tensor's bytes once its hash shows it is new (the test `_classify` makes after
    the pass). The copy is then the file's novel bytes, unless the plan made after the pass decides
    otherwise (a tensor removed meanwhile, too little shared to split the file): `holds` says."""

    def __init__(self, copier: BackgroundCopy, spans: list[TensorSpan],
                 known_tensors: Callable[[list[str]], dict[str, Extent]]) -> None:
        self.copier, self.known_tensors = copier, known_tensors
        self.handed = _Novel()  # what the copier was given, in file order
        self._decided = 0  # the bytes before this offset were handed over or passed over
        self._spans = sorted(spans, key=lambda s: s.offset)
        self._open = 0  # the first of `_spans` not hashed yet
        self._new_digests: set[str] = set()

    def on_chunk(self, offset: int, chunk: memoryview, finished: list[tuple[TensorSpan, str]]) -> None:
        if finished:
            known = self.known_tensors([d for _, d in finished])
            for span, digest in sorted(finished, key=lambda p: p[0].offset):
                ext = known.get(digest)
                reused = ext.length == span.length if ext is not None else digest in self._new_digests
                if not reused:
                    self._new_digests.add(digest)
                self._hand(span.offset)  # the bytes before it are in no shared tensor: novel
                self._hand(span.end, copy=not reused)
        end = offset + len(chunk)
        while self._open < len(self._spans) and self._spans[self._open].end <= end:
            self._open += 1
        self._hand(end if self._open == len(self._spans) else min(end, self._spans[self._open].offset))

    def holds(self, novel: _Novel) -> bool:
        """The copy is complete and is exactly `novel`'s ranges."""
        return self.copier.complete and _ranges(self.handed) == _ranges(novel)

    def _hand(self, upto: int, *, copy: bool = True) -> None:
        if copy and upto > self._decided:
            self.handed.add(self._decided, upto)
            self.copier.take(self._decided, upto)
        self._decided = max(self._decided, upto)


class Ingest:
    """One `add`'s worth of ingestion into a staging folder."""

    def __init__(self, catalog: Catalog, objects: Objects, staging: Path, mode: ImportMode,
                 progress: ProgressFactory | None = None, on_wait: WaitNotice | None = None) -> None:
        self.catalog, self.objects, self.staging, self.mode = catalog, objects, staging, mode
        self.progress = progress
        self.on_wait = on_wait
        self.new_blobs: dict[str, int] = {}
        self.new_tensors: dict[str, Extent] = {}
        self.new_files: dict[str, FileRecord] = {}
        self.sources_to_remove: list[Path] = []  # --move: unlinked once the model is committed
        self._counter = 0
        self._tensor_lock = False
        self._stored_sizes: set[int] | None = None
        self._catalog_tensors: dict[str, Extent | None] = {}  # lookups made for the file being ingested
        self._durable = ThreadPoolExecutor(1, thread_name_prefix="make-durable")
        self._committing: list[Future[None]] = []
        self._handed_off: set[Path] = set()  # staged files the background moves into objects/

    def known_file(self, b3: str) -> FileRecord | None:
        if b3 in self.new_files:
            return self.new_files[b3]
        with self.catalog.read() as r:
            return r.file(b3)

    # -- making new blobs durable in the background ---------------------------------------------

    def settle(self) -> None:
        """Wait until every new blob is durable in objects/; a failure there (a full disk) is
        raised here."""
        try:
            for future in self._committing:
                future.result()
        except OSError as exc:
            raise no_space(exc, self.objects.home, "making the new blobs durable") from exc

    def close(self) -> None:
        """Wait for the background work to end (an add that failed leaves its errors unraised)."""
        self._durable.shutdown(wait=True)

    def _make_durable(self, staged: Path, blob: B3, *, read_only: bool = True) -> None:
        """fsync `staged` and move it into objects/ as `blob`, in the background; `settle` waits."""
        def run() -> None:
            fsync_path(staged)
            self.objects.commit_staged(staged, blob, read_only=read_only)

        self._handed_off.add(staged)
        self._committing.append(self._durable.submit(run))

    def _has_file_of_size(self, size: int) -> bool:
        if self._stored_sizes is None:  # once per add: one pass over the catalog's file records
            with self.catalog.read() as r:
                self._stored_sizes = {f.size for f in r.files()}
        return size in self._stored_sizes or any(f.size == size for f in self.new_files.values())

    def _known_tensors(self, digests: list[str]) -> dict[str, Extent]:
        """Where each of `digests` the store holds lies. A file's tensors are looked up in the
        catalog once, though the pass and the plan after it each ask."""
        missing = [d for d in digests if d not in self.new_tensors and d not in self._catalog_tensors]
        if missing:
            with self.catalog.read() as r:
                for d in missing:
                    self._catalog_tensors[d] = r.tensor(d)
        found: dict[str, Extent] = {}
        for d in digests:
            ext = self.new_tensors.get(d) or self._catalog_tensors.get(d)
            if ext is not None:
                found[d] = ext
        return found

    def _classify(self, plan: _Plan, finished: list[tuple[TensorSpan, str]]) -> list[TensorSpan]:
        """Record each finished tensor as reused or new; returns the reused ones, in file order."""
        found = self._known_tensors([d for _, d in finished])
        reused = []
        for span, digest in sorted(finished, key=lambda p: p[0].offset):
            ext = found.get(digest)
            if ext is None and digest in plan.first_in_file:  # the same bytes earlier in this file
                ext = Extent("", plan.first_in_file[digest].offset, span.length)
            if ext is None or ext.length != span.length:
                plan.new[span.name] = (span, digest)
                plan.first_in_file.setdefault(digest, span)
            else:
                plan.reused[span.name] = (span, ext)
                reused.append(span)
        return reused

    def _trusted(self, blob: str) -> bool:
        """A blob this add may reference without writing it: one it wrote itself, or one the catalog
        names. A file in objects/ the catalog does not know is an orphan whose bytes are unvouched
        for (a `--link`/`--move` leftover may be the user's file, edited since)."""
        if blob in self.new_blobs:
            return True
        with self.catalog.read() as r:
            known = r.blob_size(blob) is not None
        return known and self.objects.exists(blob)

    def _lock_tensors(self) -> None:
        """Hold the store's tensor lock until this add has committed (see locks.py): another add
        committing the same tensors meanwhile would make both store them."""
        if self._tensor_lock:
            return
        fd = hold_dir_lock(self.objects.root, self.on_wait, "another add storing tensors (one at a time, so "
                                                           "tensors they share are stored once)")
        self.objects.at_staging_end(self.staging, lambda: os.close(fd))
        self._tensor_lock = True

    def ingest(self, path: Path, display: str | None = None,
               check: Callable[[FileHashes], None] | None = None, *, move_by_link: bool = True) -> IngestResult:
        """Store the file at `path`. `check` sees its hashes before anything is stored and may
        raise to refuse it (a runtime's file that does not hash to the name it is kept under).
        `move_by_link`: with --move, whether `path` (or the file its symlink names) may be
        hard-linked in. The caller says False for a file that will stay where it is (a symlink's
        target elsewhere, a file the folder does not own): sharing its inode, an edit of it in
        place would change a stored blob. A file with another hard link is always copied."""
        self._catalog_tensors.clear()
        header = read_weights_header(path)
        spans = [t for t in header.tensors if t.length >= MIN_SHARED_TENSOR] if header else []
        if spans:
            self._lock_tensors()
        size = os.path.getsize(path)
        tick = self.progress(size, display or path.name) if self.progress else None
        self._counter += 1
        staged = self.staging / f"novel-{self._counter}"
        plan = _Plan(_Novel())
        # --copy copies the novel bytes in the background while the file is hashed
        copier = BackgroundCopy(path, staged) if self.mode is ImportMode.COPY else None
        feed = _CopyAsHashed(copier, spans, self._known_tensors) if copier is not None else None

        stored = False
        try:
            try:
                if copier is not None:
                    copier.start()
                hashes = hash_file(str(path), spans, on_chunk=feed.on_chunk if feed else None, progress=tick,
                                   stored=Stored(lambda b3: self.known_file(b3) is not None,
                                                 lambda digests: len(self._known_tensors(digests)) == len(digests),
                                                 self._has_file_of_size))
                if copier is not None:
                    copier.finish()
                    copier.join()
                existing = self.known_file(hashes.b3)
                if existing is not None:
                    stored = True
                    return IngestResult(existing, header, 0, True)
                if hashes.sha256 is None:  # the store had the file a moment ago: an rm got in between
                    again = hash_file(str(path), spans)
                    if again.b3 != hashes.b3:
                        raise SourceChanged(f"{path}: the file changed while it was being stored; nothing was committed")
                    hashes = again
                if check is not None:
                    check(hashes)
                self._plan_after_hashing(plan, spans, hashes)
                copied = feed is not None and feed.holds(plan.novel)
                record = self._store(path, hashes, header, plan, staged, copied=copied,
                                     may_link=move_by_link)
                stored = True
            except OSError as exc:
                raise no_space(exc, self.objects.home, f"storing {path}") from exc
        finally:
            if copier is not None:
                copier.stop()
                copier.join()
            if staged not in self._handed_off:
                staged.unlink(missing_ok=True)
            if self.mode is ImportMode.MOVE and stored:
                self.sources_to_remove.append(path)
        self.new_files[record.b3] = record
        return IngestResult(record, header, plan.novel.size, False)

    def _plan_after_hashing(self, plan: _Plan, spans: list[TensorSpan], hashes: FileHashes) -> None:
        reused = self._classify(plan, [(s, hashes.tensor_b3[s.name]) for s in spans])
        if sum(s.length for s in reused) < MIN_REUSE_SHARE * hashes.size:
            for span in reused:
                del plan.reused[span.name]
                plan.new[span.name] = (span, hashes.tensor_b3[span.name])
            reused = []
        pos = 0
        for span in reused:
            plan.novel.add(pos, span.offset)
            pos = span.end
        plan.novel.add(pos, hashes.size)

    def _store(self, path: Path, hashes: FileHashes, header: WeightsHeader | None, plan: _Plan,
               staged: Path, *, copied: bool, may_link: bool) -> FileRecord:
        """`copied`: `staged` already holds the file's novel bytes (all of it when nothing is reused)."""
        novel = plan.novel
        if not plan.reused:
            blob = B3(hashes.b3)
            if hashes.size:  # an empty file has an empty recipe: no blob to keep
                self._put_whole(path, hashes, blob, staged, copied, may_link)
        else:
            if not copied:
                _copy_ranges(path, staged, _ranges(novel))
            _check_unchanged(path, hashes)
            blob = B3(_hash_path(staged))
            if novel.size and not self._trusted(blob):
                self._make_durable(staged, blob)
        if novel.size:
            self.new_blobs[blob] = novel.size

        pieces = [(fs, Extent(blob, bo, fe - fs)) for fs, fe, bo in novel.segments]
        for span, ext in plan.reused.values():
            if ext.blob == "":  # a repeat of a tensor whose first copy is in this file's new blob
                ext = Extent(blob, novel.blob_offset(ext.offset), ext.length)
            pieces.append((span.offset, ext))
        recipe = _merge(pieces, hashes.size)

        for span, digest in plan.new.values():
            if digest not in self.new_tensors:
                self.new_tensors[digest] = Extent(blob, novel.blob_offset(span.offset), span.length)
        return FileRecord(check_b3(hashes.b3), hashes.size, hashes.sha256, hashes.git_sha1, recipe,
                          weights_summary(header))

    def _sole_link(self, path: Path, blob: B3) -> bool:
        """Whether `path` has no other name than, perhaps, this blob's own object (left by an
        interrupted --move, or a --link whose model was removed): --move may then take its inode."""
        links = os.stat(path).st_nlink
        if links == 1:
            return True
        own = self.objects.path(blob)
        return links == 2 and own.exists() and os.path.samefile(own, path)

    def _put_whole(self, path: Path, hashes: FileHashes, blob: B3, staged: Path, copied: bool, may_link: bool) -> None:
        if self._trusted(blob):
            return
        if copied:  # the background copy finished during the pass
            _check_unchanged(path, hashes)
            self._make_durable(staged, blob)
            return
        staged.unlink(missing_ok=True)  # what the background copy made: only some of the file
        if self.mode is ImportMode.LINK or (self.mode is ImportMode.MOVE and may_link and self._sole_link(path, blob)):
            linked = self.objects.link_in(path, staged, fallback=self.mode is ImportMode.MOVE)
            if linked:
                _check_unchanged(staged, hashes, source=path)  # the same inode as `path`: checked before it is placed
                # --move unlinks the source once committed: its bytes are made durable first
                self._make_durable(staged, blob, read_only=False)  # chmod would hit the user's file
                return
        copy_into(path, staged, reflink=self.mode is ImportMode.REFLINK)
        _check_unchanged(path, hashes)
        self.objects.commit_staged(staged, blob)


def _merge(pieces: list[tuple[int, Extent]], size: int) -> tuple[Extent, ...]:
    recipe: list[Extent] = []
    cursor = 0
    for file_offset, ext in sorted(pieces, key=lambda p: p[0]):
        if file_offset != cursor:
            raise AssertionError(f"recipe pieces do not tile the file at {cursor}")
        cursor += ext.length
        last = recipe[-1] if recipe else None
        if last and last.blob == ext.blob and last.offset + last.length == ext.offset:
            recipe[-1] = Extent(ext.blob, last.offset, last.length + ext.length)
        elif ext.length:
            recipe.append(ext)
    if cursor != size:
        raise AssertionError(f"recipe covers {cursor} of {size} bytes")
    return tuple(recipe)


def weights_summary(header: WeightsHeader | None) -> dict[str, object] | None:
    if header is None:
        return None
    scalars = {k: v for k, v in header.metadata.items() if not isinstance(v, dict)}
    return {"format": header.format, "tensor_count": len(header.tensors),
            "parameter_count": header.parameter_count, "data_start": header.data_start, "metadata": scalars}


def _hash_path(path: Path) -> str:
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if path.stat().st_size == 0:
        return h.hexdigest()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        h.update(mm)
    return h.hexdigest()


def _ranges(novel: _Novel) -> list[tuple[int, int]]:
    return [(start, end) for start, end, _ in novel.segments]


def _copy_ranges(src: Path, dst: Path, ranges: list[tuple[int, int]]) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for start, end in ranges:
            offset = start
            while offset < end:
                n = copy_range(fin.fileno(), fout.fileno(), offset, end - offset)
                if n == 0:
                    raise SourceChanged(f"{src}: the file shrank while it was being stored")
                offset += n


def _check_unchanged(path: Path, hashes: FileHashes, *, source: Path | None = None) -> None:
    """`path` (the source, or a hard link to it) still has the size and mtime it was hashed with."""
    st = os.stat(path)
    if (st.st_size, st.st_mtime_ns) != (hashes.size, hashes.mtime_ns):
        raise SourceChanged(f"{source or path}: the file changed while it was being stored; nothing was committed")
