"""hash_file against hashlib and blake3 computed here: every size around the chunk and ring
boundaries, chunks seen in order with their own bytes, and the SHA-256 held back for files the
store may already have."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import blake3
import pytest

from modelstore.store import hashing
from modelstore.store.digests import GIT_SHA1_LIMIT, git_blob_header
from modelstore.store.hashing import CHUNK, RING, Stored, hash_file
from modelstore.store.leased import WINDOW

from .conftest import edit_beside_the_pass
from modelstore.store.tensors import TensorSpan

SIZES = [0, 1, 4096, CHUNK - 1, CHUNK, CHUNK + 1, (RING + 2) * CHUNK + 123, WINDOW + CHUNK + 7]


def write_random(path: Path, size: int, seed: int = 1) -> bytes:
    data = os.urandom(0) if size == 0 else bytes(
        (hashlib.sha256(seed.to_bytes(4, "little")).digest() * (size // 32 + 1))[:size])
    # make it not periodic: a periodic file would hide a chunk hashed at the wrong offset
    data = bytearray(data)
    for i in range(0, size, 997):
        data[i] = (i * 31 + seed) & 0xFF
    path.write_bytes(data)
    return bytes(data)


def spans_of(size: int) -> list[TensorSpan]:
    """Tensors of uneven lengths, some crossing chunk borders, with gaps between them."""
    spans, offset, i = [], 64, 0
    while offset + 5000 < size:
        length = min(size - offset, 5000 + (i * 7_654_321) % (3 * CHUNK))
        spans.append(TensorSpan(f"t{i}", offset, length, "U8", (length,)))
        offset += length + 32
        i += 1
    return spans


def git_sha1(data: bytes) -> str | None:
    """The Hub keeps files under GIT_SHA1_LIMIT in git: only those have a git blob id."""
    return hashlib.sha1(git_blob_header(len(data)) + data).hexdigest() if len(data) < GIT_SHA1_LIMIT else None


def expected(data: bytes, spans: list[TensorSpan]) -> tuple[str, str, dict[str, str]]:
    tensors = {s.name: blake3.blake3(data[s.offset:s.end]).hexdigest() for s in spans}
    return blake3.blake3(data).hexdigest(), hashlib.sha256(data).hexdigest(), tensors


@pytest.fixture(params=[True, False], ids=["mapped", "readv"])
def mapped(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both ways of reading: mapped pages under a read lease, and readv into the ring's buffers
    (where no lease can be had: NFS, FUSE, someone else's file, a writer holding it open)."""
    monkeypatch.setattr(hashing, "READ_MAPPED", request.param)
    return bool(request.param)


@pytest.mark.parametrize("size", SIZES)
def test_hashes_equal_the_reference(tmp_path: Path, size: int, mapped: bool) -> None:
    path = tmp_path / "f"
    data = write_random(path, size)
    spans = spans_of(size)
    seen: list[tuple[int, bytes]] = []
    progressed: list[int] = []
    got = hash_file(str(path), spans, on_chunk=lambda off, chunk, done: seen.append((off, bytes(chunk))),
                    progress=progressed.append)
    b3, sha, tensors = expected(data, spans)
    assert (got.size, got.b3, got.sha256, got.tensor_b3) == (size, b3, sha, tensors)
    assert got.git_sha1 == git_sha1(data)
    # every chunk arrives once, in order, holding its own bytes (not a later chunk's)
    assert b"".join(chunk for _, chunk in seen) == data
    assert [off for off, _ in seen] == [sum(len(c) for _, c in seen[:i]) for i in range(len(seen))]
    assert sum(progressed) == size


@pytest.mark.parametrize("size", [CHUNK + 1_000_000, (RING + 2) * CHUNK + 5])
def test_a_stored_file_gets_no_sha256(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f"
    data = write_random(path, size)
    spans = spans_of(len(data))
    b3, sha, _ = expected(data, spans)
    def same_size(n: int) -> bool:
        return n == size

    copy = hash_file(str(path), spans, stored=Stored(lambda d: d == b3, lambda digests: True, same_size))
    assert copy.sha256 is None and copy.git_sha1 is None and copy.b3 == b3  # both from the skipped consumer
    # every tensor known but the whole is new (a resharded file): the SHA-256 catches up
    held = hash_file(str(path), spans, stored=Stored(lambda d: False, lambda digests: True, same_size))
    assert held.sha256 == sha and held.git_sha1 == git_sha1(data)
    # known at first, then a new tensor in the middle: released mid-file
    late = spans[len(spans) // 2].name
    released = hash_file(str(path), spans, stored=Stored(
        lambda d: False, lambda digests: all(d != held.tensor_b3[late] for d in digests), same_size))
    assert released.sha256 == sha and released.git_sha1 == git_sha1(data) and released.tensor_b3 == held.tensor_b3
    # no stored file of this size: no copy is possible, nothing is held
    def held_from_the_start(stored: Stored) -> tuple[str | None, bool]:
        holds: list[bool] = []
        real_stream = hashing._Sha256Stream

        def recording(*args: object, hold: bool) -> object:
            holds.append(hold)
            return real_stream(*args, hold=hold)  # type: ignore[arg-type]

        hashing._Sha256Stream = recording  # type: ignore[assignment,misc]
        try:
            return hash_file(str(path), spans, stored=stored).sha256, holds == [True]
        finally:
            hashing._Sha256Stream = real_stream  # type: ignore[misc]

    assert held_from_the_start(Stored(lambda d: False, lambda digests: True, same_size)) == (sha, True)
    assert held_from_the_start(Stored(lambda d: False, lambda digests: True, lambda n: False)) == (sha, False)


def test_while_the_sha256_is_held_its_worker_hashes_the_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A held SHA-256 leaves its worker idle: it takes up the whole file's BLAKE3, in order, so a
    copy of a stored file is hashed on both cores."""
    size = (RING + 4) * CHUNK + 77
    path = tmp_path / "f"
    data = write_random(path, size)
    spans = spans_of(size)
    b3, _, tensors = expected(data, spans)
    fed_by: list[str] = []
    real_stream = hashing._Stream

    def recording(name: str, work, shared: bool = False):  # type: ignore[no-untyped-def]
        if name != "blake3":
            return real_stream(name, work, shared)

        def whole(offset: int, chunk: memoryview) -> object:
            fed_by.append(threading.current_thread().name)
            return work(offset, chunk)

        return real_stream(name, whole, shared)

    monkeypatch.setattr(hashing, "_Stream", recording)
    copy = hash_file(str(path), spans, stored=Stored(lambda d: d == b3, lambda digests: True, lambda n: n == size))
    assert copy.b3 == b3 and copy.tensor_b3 == tensors and copy.sha256 is None
    assert len(fed_by) == RING + 5 and "hash-sha256" in fed_by


def test_an_error_in_on_chunk_propagates_and_leaves_no_thread(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "f"
    write_random(path, (RING + 3) * CHUNK)
    before = threading.active_count()

    def fail(offset: int, chunk: memoryview, done: object) -> None:
        if offset >= 2 * CHUNK:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        hash_file(str(path), spans_of((RING + 3) * CHUNK), on_chunk=fail)
    assert threading.active_count() == before


def test_buffers_are_kept_for_the_next_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "READ_MAPPED", False)
    path = tmp_path / "f"
    write_random(path, 3 * CHUNK)
    hash_file(str(path))
    kept = list(hashing._POOL._free)
    hash_file(str(path))
    assert kept and all(any(b is k for k in hashing._POOL._free) for b in kept)


def test_an_edit_that_puts_the_mtime_back_is_still_noticed(tmp_path: Path, mapped: bool) -> None:
    """The change check compares ctime too: a held SHA-256 reads the file after the BLAKE3s did,
    so an edit between them must not give a record whose hashes describe two different files.
    (Under a read lease the editor waits for the pass, which sees it waiting and stops.)"""
    from modelstore.store.errors import SourceChanged

    path = tmp_path / "f"
    write_random(path, (RING + 2) * CHUNK)
    st = path.stat()
    editors = []

    def edit() -> None:
        with open(path, "r+b") as f:
            f.seek(CHUNK * (RING + 1))
            f.write(b"edited")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    def edit_once(offset: int, chunk: memoryview, done: object) -> None:
        if offset == 0:
            editors.append(edit_beside_the_pass(path, edit))

    with pytest.raises(SourceChanged, match="changed"):
        hash_file(str(path), spans_of((RING + 2) * CHUNK), on_chunk=edit_once)
    editors[0].join()
    assert b"edited" in path.read_bytes()


def test_a_file_open_for_writing_is_read_without_a_lease(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No read lease can be had while someone holds the file open for writing: the pass reads it
    with readv, and the hashes are the same."""
    from modelstore.store import leased

    size = (RING + 2) * CHUNK + 9
    path = tmp_path / "f"
    data = write_random(path, size)
    spans = spans_of(size)
    taken: list[object] = []
    real_take = leased.LeasedMap.take

    def spy(fd: int, n: int) -> object:
        taken.append(real_take(fd, n))
        return taken[-1]

    monkeypatch.setattr(leased.LeasedMap, "take", staticmethod(spy))
    with open(path, "r+b"):
        held_open = hash_file(str(path), spans)
    alone = hash_file(str(path), spans)
    assert taken[0] is None and isinstance(taken[1], leased.LeasedMap)
    assert held_open == alone and alone.b3 == expected(data, spans)[0]


TRUNCATE_MID_PASS = """
import os, subprocess, sys, time
from modelstore.store import hashing
from modelstore.store.errors import SourceChanged
path = sys.argv[1]
started = []

def truncate_once(offset, chunk, done):
    if started:
        return
    started.append(subprocess.Popen([sys.executable, "-c", f"import os; os.truncate({path!r}, 4096)"]))
    deadline = time.monotonic() + 30  # until the truncation is done, or waits for the lease
    while started[0].poll() is None and time.monotonic() < deadline:
        if any("BREAKING" in line for line in open("/proc/locks")):
            break
        time.sleep(0.001)

try:
    hashing.hash_file(path, on_chunk=truncate_once)
    print("hashed")
except SourceChanged as exc:
    print("refused:", exc)
started[0].wait()
"""


def test_a_truncation_mid_pass_waits_for_the_lease_and_the_pass_is_refused(tmp_path: Path) -> None:
    """Another process truncates the file while it is hashed from mapped pages. Without the read
    lease, the next page read past the new end would kill the process with SIGBUS; with it, the
    truncation waits until the pass sees it and lets go, and the pass is refused as a change."""
    import subprocess
    import sys

    path = tmp_path / "f"
    write_random(path, WINDOW + (RING + 2) * CHUNK)
    done = subprocess.run([sys.executable, "-c", TRUNCATE_MID_PASS, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout.startswith("refused:") and "opened for writing" in done.stdout, done.stdout
    assert path.stat().st_size == 4096  # the truncation went ahead once the pass let go


def test_a_consumer_that_cannot_start_leaves_no_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    path = tmp_path / "f"
    write_random(path, 3 * CHUNK)
    before = threading.active_count()
    real_start = threading.Thread.start
    started: list[str] = []

    def start_one(self: threading.Thread) -> None:
        if len(started) == 1:
            raise RuntimeError("can't start new thread")
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start_one)
    with pytest.raises(RuntimeError, match="can't start"):
        hash_file(str(path), spans_of(3 * CHUNK))
    monkeypatch.undo()
    assert threading.active_count() == before and len(started) == 1


def test_a_file_removed_between_hashing_and_commit_is_hashed_again(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`add` leaves out the SHA-256 of a file the store has; if an `rm` + `gc` takes that file away
    before the commit, the file is hashed again and its record gets the full SHA-256 and git SHA-1."""
    import numpy as np
    from safetensors.numpy import save_file

    from modelstore.store import Store
    from modelstore.store.ingest import Ingest
    from modelstore.store.sources.local import add_local

    path = tmp_path / "m.safetensors"  # between one chunk and the Hub's 10 MiB git limit
    save_file({"w": np.random.default_rng(0).standard_normal(9 << 18).astype(np.float32)}, str(path))
    data = path.read_bytes()
    assert CHUNK < len(data) < GIT_SHA1_LIMIT
    real_known_file = Ingest.known_file
    calls: list[str] = []

    def gone_after_the_pass(self: Ingest, b3: str) -> object:
        calls.append(b3)
        return object() if len(calls) == 1 else real_known_file(self, b3)  # "stored", then removed

    monkeypatch.setattr(Ingest, "known_file", gone_after_the_pass)
    with Store(tmp_path / "home") as store:
        add_local(store, path, name="m")
        record = store.file(store.model("m").files["m.safetensors"])
    assert record.sha256 == hashlib.sha256(data).hexdigest() and record.git_sha1 == git_sha1(data)
    assert record.b3 == blake3.blake3(data).hexdigest()


def test_a_writer_is_let_in_soon_even_during_a_long_sha256_catch_up(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A held SHA-256 that is released late catches up by reading the file again, which can take
    minutes on a large file while the reading waits. A truncation arriving then must not wait for
    it (after lease-break-time the kernel would let the truncation through under the mapped pages):
    the waiting reader checks the lease, the catch-up stops, and the pass is refused at once."""
    from modelstore.store.errors import SourceChanged

    size = (RING + 8) * CHUNK
    path = tmp_path / "f"
    write_random(path, size)
    spans = spans_of(size)
    late = next(s for s in spans if s.end > (RING + 2) * CHUNK)
    real_preadv = os.preadv

    def slow_preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        time.sleep(1)  # a catch-up of (RING + 2) MiB and more: over 6 s
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", slow_preadv)
    digests = hash_file(str(path), spans).tensor_b3
    editors: list[threading.Thread] = []
    started: list[float] = []

    def truncate() -> None:
        started.append(time.monotonic())
        editors.append(edit_beside_the_pass(path, lambda: os.truncate(path, 4096)))

    def truncate_when_released(offset: int, chunk: memoryview, done: list[tuple[TensorSpan, str]]) -> None:
        if any(span.name == late.name for span, _ in done):  # the catch-up starts: the reading soon waits for it
            timer = threading.Timer(0.5, truncate)
            timer.start()
            editors.append(timer)

    stored = Stored(lambda d: False, lambda ds: digests[late.name] not in ds, lambda n: True)
    with pytest.raises(SourceChanged, match="opened for writing"):
        hash_file(str(path), spans, on_chunk=truncate_when_released, stored=stored)
    refused = time.monotonic()
    for editor in editors:
        editor.join()
    assert len(editors) == 2 and refused - started[0] < 3 and path.stat().st_size == 4096
