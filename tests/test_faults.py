"""Fault tests: what the store promises when things go wrong.

- `kill -9` at any moment of an `add` (and of an `add --move`) leaves a store that fsck finds
  clean, holding the model whole or not at all, and the user's file in place or in the store;
- a full disk fails with exit code 7 and one line, commits nothing, and a re-run succeeds once
  there is room;
- two adds at once both complete and store shared tensors once;
- gc waits for a running add and never removes what that add commits or reuses;
- a source file that changes while it is stored is refused.

Kills come two ways: `modelstore add` in a subprocess killed after a random delay (spread over the
whole run, start-up included), and the same command run through DRIVER, which SIGKILLs itself at
a named point (after a blob is placed, inside the catalog transaction, right after the commit...)
or pauses there for a handshake.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from modelstore.cli import run
from modelstore.converters.synth import write_large_gguf, write_tiny_hf_folder
from modelstore.store import Store
from modelstore.store.errors import NotFound, SourceChanged
from modelstore.store.fsck import fsck
from modelstore.store.ingest import ImportMode
from modelstore.store.locks import dir_lock
from modelstore.store.objects import Objects
from modelstore.store.sources.local import add_local
from modelstore.store.tensors import read_weights_header

from .conftest import edit_beside_the_pass, read_model_file, stored_bytes

# `modelstore ...` with hooks: FAULT_AT=<point> (FAULT_NTH=<n>: its n-th time) SIGKILLs the
# process there, or with FAULT_HOLD=<dir> touches <dir>/ready and waits for <dir>/go;
# FAULT_MARK=<point> prints "@<point>" on stdout when it gets there. Points: chunk (a chunk was
# hashed, and with --copy written), placed (a blob was renamed into objects/), commit (the catalog
# transaction is about to begin), in_txn (everything is put, nothing committed), committed,
# source_removed (--move unlinked a file under FAULT_SRC).
DRIVER = r"""
import os, signal, sys, time
from contextlib import contextmanager
from pathlib import Path

POINT, NTH = os.environ.get("FAULT_AT", ""), int(os.environ.get("FAULT_NTH", "1"))
MARK, HOLD, SRC = os.environ.get("FAULT_MARK", ""), os.environ.get("FAULT_HOLD", ""), os.environ.get("FAULT_SRC", "")
seen = {}

def hit(name):
    if name == MARK:
        print("@" + name, flush=True)
    seen[name] = seen.get(name, 0) + 1
    if name == POINT and seen[name] == NTH:
        if HOLD:
            Path(HOLD, "ready").touch()
            while not Path(HOLD, "go").exists():
                time.sleep(0.01)
        else:
            os.kill(os.getpid(), signal.SIGKILL)

from modelstore.store import catalog, hashing, objects

_deliver_chunk = hashing._deliver_chunk
def deliver_chunk(*args):
    _deliver_chunk(*args)
    hit("chunk")
hashing._deliver_chunk = deliver_chunk

_commit_staged = objects.Objects.commit_staged
def commit_staged(self, *args, **kwargs):
    placed = _commit_staged(self, *args, **kwargs)
    hit("placed")
    return placed
objects.Objects.commit_staged = commit_staged

_write = catalog.Catalog.write
@contextmanager
def write(self):
    hit("commit")
    with _write(self) as w:
        yield w
        hit("in_txn")
    hit("committed")
catalog.Catalog.write = write

if SRC:
    _unlink = Path.unlink
    def unlink(self, missing_ok=False):
        _unlink(self, missing_ok=missing_ok)
        if str(self).startswith(SRC):
            hit("source_removed")
    Path.unlink = unlink

from modelstore.cli import main
main()
"""

MB = 1 << 20


# -- helpers -------------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def spawn(home: Path, *args: object, driver: bool = False, env: dict[str, str] | None = None,
          stdout: int | None = subprocess.DEVNULL, stderr: int | None = subprocess.DEVNULL) -> subprocess.Popen:
    """`modelstore ARGS` in a subprocess against `home` (through DRIVER when `driver`)."""
    cmd = [sys.executable, "-c", DRIVER] if driver else [sys.executable, "-m", "modelstore.cli"]
    full_env = {**os.environ, "MODELSTORE_HOME": str(home), **(env or {})}
    return subprocess.Popen(cmd + [str(a) for a in args], env=full_env, stdout=stdout, stderr=stderr, text=True)


def ms(home: Path, *args: object) -> int:
    """`modelstore --home HOME ARGS` in this process; its exit code."""
    return run(["--home", str(home), *(str(a) for a in args)])


def kill_after(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL `proc` after `delay` seconds; True when it was killed, False when it had finished."""
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    code = proc.wait(30)
    assert code in (0, -signal.SIGKILL), f"the add failed by itself (exit {code})"
    return code == -signal.SIGKILL


def models_in(home: Path) -> dict[str, object]:
    with Store(home) as store:
        return {m.name: m for m in store.models()}


def check_store(home: Path, *, deep: bool = True, notes: bool = True) -> None:
    """fsck finds no problems (and, unless `notes`, no leftovers either)."""
    with Store(home) as store:
        report = fsck(store, deep=deep)
    assert report.clean, f"fsck: {report.problems}"
    if not notes:
        assert report.notes == [], f"fsck notes after gc: {report.notes}"


def blob_files(home: Path) -> list[Path]:
    return [p for p in (home / "objects").rglob("*") if p.is_file()]


def catalog_blobs(home: Path) -> set[str]:
    with Store(home) as store, store.catalog.read() as r:
        return {b for b, _ in r.blobs()}


def staging_left(home: Path) -> list[str]:
    tmp = home / "tmp"
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


def model_matches(home: Path, name: str, sources: dict[str, str]) -> bool:
    """Whether model `name` is in the store; asserts that its every file has the expected bytes."""
    with Store(home) as store:
        try:
            model = store.model(name)
        except NotFound:
            return False
        assert sorted(model.files) == sorted(sources), f"{name} holds {sorted(model.files)}"
        for rel, digest in sources.items():
            assert sha(read_model_file(store, name, rel)) == digest, f"{name}:{rel} is not byte-exact"
    return True


def sibling_gguf(base: Path, out: Path) -> Path:
    """`base` with the bytes of two tensors (one in the middle, the last) changed: a fine-tune that
    shares every other tensor, so adding it after `base` takes the partial-dedup path."""
    shutil.copyfile(base, out)
    header = read_weights_header(base)
    assert header is not None
    big = [t for t in header.tensors if t.length >= 64 * 1024]
    with open(out, "r+b") as f:
        for span in (big[len(big) // 2], big[-1]):
            f.seek(span.offset + span.length // 2)
            f.write(os.urandom(256))
    return out


def stratified_delays(n: int, upto: float, rng: random.Random) -> list[float]:
    """`n` random delays, one in each of `n` equal slices of [0, upto], in random order."""
    delays = [(i + rng.random()) * upto / n for i in range(n)]
    rng.shuffle(delays)
    return delays


@pytest.fixture(scope="module")
def unrelated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~17 MB GGUF sharing no tensor with `pair`."""
    return write_large_gguf(tmp_path_factory.mktemp("unrelated") / "c.gguf", 8 * MB, n_embd=128, seed=9)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ~24 MB GGUF (F16, 7B-like shapes) and a sibling sharing all but two of its tensors."""
    folder = tmp_path_factory.mktemp("pair")
    a = write_large_gguf(folder / "a.gguf", 24 * MB, n_embd=128, seed=1)
    b = sibling_gguf(a, folder / "b.gguf")
    return a, b


# -- 1. kill -9 during add -----------------------------------------------------------------------


class KillRun:
    """One store, one model to add, and what an uninterrupted add of it leaves behind."""

    def __init__(self, home: Path, source: Path, name: str, move: bool = False) -> None:
        self.home, self.source, self.name, self.move = home, source, name, move
        self.pristine = source.with_name(source.name + ".pristine") if move else source
        if move:
            shutil.copyfile(source, self.pristine)
        self.digest = file_sha(self.pristine)
        self.rel = source.name
        self.base_bytes = stored_bytes(home) if (home / "objects").is_dir() else 0
        self.base_blobs = len(blob_files(home)) if (home / "objects").is_dir() else 0
        self.outcomes: dict[str, int] = {"absent": 0, "present": 0}

    def args(self) -> list[object]:
        return ["add", self.source, "--name", self.name] + (["--move"] if self.move else [])

    def reference(self) -> float:
        """Add once without interruption: time it and record the store it leaves; then undo it."""
        self.restore_source()
        start = time.monotonic()
        proc = spawn(self.home, *self.args())
        assert proc.wait(60) == 0
        took = time.monotonic() - start
        self.full_bytes, self.full_blobs = stored_bytes(self.home), len(blob_files(self.home))
        self.reset()
        return took

    def restore_source(self) -> None:
        if self.move:
            shutil.copyfile(self.pristine, self.source)
            os.utime(self.source, ns=(10**18, 10**18))  # a file written long ago, like a real one

    def check_after_kill(self, what: str) -> None:
        """The store is consistent and has the model whole or not at all; with --move, the user's
        file is still there or the store has it."""
        check_store(self.home)
        present = model_matches(self.home, self.name, {self.rel: self.digest})
        self.outcomes["present" if present else "absent"] += 1
        if self.move:
            if self.source.exists():
                assert file_sha(self.source) == self.digest, f"{what}: the source changed"
            assert present or self.source.exists(), f"{what}: the model is neither in the store nor at its path"

    def finish(self, what: str) -> None:
        """Re-run the add, gc, and check that the store is as an uninterrupted add leaves it."""
        rerun = not self.move or self.source.exists()  # a --move that got as far as removing the source is done
        if rerun:
            assert ms(self.home, *self.args()) == 0, f"{what}: the re-run failed"
            assert staging_left(self.home) == [], f"{what}: staging left after the re-run"
        assert model_matches(self.home, self.name, {self.rel: self.digest}), what
        if self.move:
            assert not self.source.exists(), f"{what}: --move left the source behind"
        assert ms(self.home, "gc") == 0
        assert staging_left(self.home) == [], f"{what}: staging left after gc"
        check_store(self.home, deep=False, notes=False)
        assert len(blob_files(self.home)) == self.full_blobs, what
        assert stored_bytes(self.home) == self.full_bytes, f"{what}: the store holds other bytes than an uninterrupted add"
        self.reset()

    def reset(self) -> None:
        assert ms(self.home, "rm", self.name) == 0
        assert ms(self.home, "gc") == 0
        assert stored_bytes(self.home) == self.base_bytes and len(blob_files(self.home)) == self.base_blobs

    def kill_at_random(self, rng: random.Random, runs: int, upto: float) -> None:
        for delay in stratified_delays(runs, upto, rng):
            self.restore_source()
            what = f"kill after {delay:.3f}s"
            kill_after(spawn(self.home, *self.args()), delay)
            self.check_after_kill(what)
            self.finish(what)

    def kill_near_commit(self, rng: random.Random, runs: int) -> None:
        """SIGKILL a few microseconds to milliseconds after the catalog transaction begins."""
        for _ in range(runs):
            self.restore_source()
            delay = rng.uniform(0, 0.004)
            what = f"kill {delay * 1e3:.2f}ms into the commit"
            proc = spawn(self.home, *self.args(), driver=True, env={"FAULT_MARK": "commit"}, stdout=subprocess.PIPE)
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "@commit", f"{what}: the add never reached its commit"
            kill_after(proc, delay)
            proc.stdout.close()
            self.check_after_kill(what)
            self.finish(what)

    def kill_at(self, point: str, nth: int = 1, expect_present: bool | None = None, src: str = "") -> None:
        self.restore_source()
        env = {"FAULT_AT": point, "FAULT_NTH": str(nth), "FAULT_SRC": src}
        assert kill_after(spawn(self.home, *self.args(), driver=True, env=env), 60), f"never reached {point}"
        self.check_after_kill(point)
        if expect_present is not None:
            assert model_matches(self.home, self.name, {self.rel: self.digest}) == expect_present, point
        self.finish(point)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["new", "partial"])
def test_kill_9_at_any_moment_of_an_add(home: Path, pair: tuple[Path, Path], variant: str) -> None:
    """`modelstore add` of a ~24 MB GGUF, SIGKILLed after random delays spanning the whole run
    (start-up, hashing and writing, placing the blob, the catalog commit, exiting), and at fixed
    points around the commit. `partial`: a sibling of a stored model, so the add reuses most
    tensors and writes (then takes back) the rest. After each kill: fsck --deep clean; the model
    whole or absent; a re-run completes; no staging left; after gc, no leftovers and exactly the
    blobs an uninterrupted add leaves."""
    a, b = pair
    if variant == "partial":
        assert ms(home, "add", a, "--name", "base") == 0
    run_ = KillRun(home, a if variant == "new" else b, "victim")
    took = run_.reference()
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    try:
        run_.kill_at_random(rng, runs=10, upto=took * 1.15)
        run_.kill_near_commit(rng, runs=3)
        run_.kill_at("chunk", nth=2, expect_present=False)  # mid-hash: novel bytes half written
        run_.kill_at("placed", expect_present=False)  # a blob in objects/, the catalog not told
        run_.kill_at("in_txn", expect_present=False)  # every record put, the transaction open
        run_.kill_at("committed", expect_present=True)  # committed, the process not finished
    except AssertionError as exc:
        raise AssertionError(f"{exc} (random seed {seed}, a clean add took {took:.2f}s)") from exc
    assert run_.outcomes["absent"] >= 4 and run_.outcomes["present"] >= 1, run_.outcomes
    if variant == "partial":
        assert model_matches(home, "base", {"a.gguf": file_sha(a)})


def test_leftover_blob_is_not_trusted(home: Path, models: Path, pair: tuple[Path, Path]) -> None:
    """An add --move killed after linking the user's file into objects/ leaves a blob file that is
    the user's file. The user then edits it (it is theirs: nothing was committed). A later add of
    the original content must store the original bytes, not reuse that file."""
    a, _ = pair
    src = models / "mine.gguf"
    shutil.copyfile(a, src)
    os.utime(src, ns=(10**18, 10**18))
    proc = spawn(home, "add", src, "--move", driver=True, env={"FAULT_AT": "placed"})
    assert proc.wait(60) == -signal.SIGKILL
    assert models_in(home) == {} and src.exists()
    assert [p.stat().st_ino for p in blob_files(home)] == [src.stat().st_ino]  # the orphan is the user's file
    with open(src, "r+b") as f:  # the user edits their file in place
        f.seek(4096)
        f.write(b"edited by its owner")
    assert ms(home, "add", a, "--name", "original") == 0
    assert model_matches(home, "original", {"a.gguf": file_sha(a)})
    check_store(home)
    assert ms(home, "gc") == 0
    check_store(home, notes=False)
    assert b"edited by its owner" in src.read_bytes()  # the user's file is untouched by all this


# -- 6. --move interrupted -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["new", "partial"])
def test_kill_9_during_add_move(home: Path, models: Path, pair: tuple[Path, Path], variant: str) -> None:
    """`add --move` SIGKILLed at random moments and at fixed points: the file is always at its
    path with its bytes, or in the store whole, or both; never lost. `new` hard-links the file
    in; `partial` (a sibling of a stored model) copies its novel bytes."""
    a, b = pair
    if variant == "partial":
        assert ms(home, "add", a, "--name", "base") == 0
    src = models / "moving.gguf"
    shutil.copyfile(a if variant == "new" else b, src)
    run_ = KillRun(home, src, "moved", move=True)
    took = run_.reference()
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    try:
        run_.kill_at_random(rng, runs=8, upto=took * 1.15)
        run_.kill_near_commit(rng, runs=2)
        run_.kill_at("placed", expect_present=False)
        run_.kill_at("in_txn", expect_present=False)
        run_.kill_at("committed", expect_present=True)  # in the store, and still at its path
    except AssertionError as exc:
        raise AssertionError(f"{exc} (random seed {seed}, a clean add took {took:.2f}s)") from exc
    assert run_.outcomes["absent"] >= 3 and run_.outcomes["present"] >= 1, run_.outcomes


def test_kill_9_during_add_move_of_a_folder(home: Path, models: Path, pair: tuple[Path, Path]) -> None:
    """A folder moved in: killed while the sources are being removed after the commit, the store
    has the model whole and each file is either still in the folder (intact) or gone."""
    a, b = pair
    folder = write_tiny_hf_folder(models / "hf", hidden=128, layers=2, vocab=2048)
    shutil.copyfile(b, folder / "extra.gguf")
    expect = {p.name: file_sha(p) for p in folder.iterdir()}
    assert len(expect) >= 5
    pristine = models / "hf.pristine"
    shutil.copytree(folder, pristine)

    for point, nth in (("in_txn", 1), ("source_removed", 1), ("source_removed", 3)):
        proc = spawn(home, "add", folder, "--move", "--name", "hf", driver=True,
                     env={"FAULT_AT": point, "FAULT_NTH": str(nth), "FAULT_SRC": str(folder) + os.sep})
        assert proc.wait(60) == -signal.SIGKILL, point
        check_store(home)
        present = model_matches(home, "hf", expect)
        assert present == (point == "source_removed"), point
        left = {p.name: file_sha(p) for p in folder.iterdir()}
        assert all(expect[n] == d for n, d in left.items()), f"{point}: a source file changed"
        if point == "source_removed":
            assert len(left) == len(expect) - nth, f"{point}: {sorted(left)}"
        else:
            assert left == expect
            assert ms(home, "add", folder, "--move", "--name", "hf") == 0
            assert model_matches(home, "hf", expect) and list(folder.iterdir()) == []
        assert ms(home, "rm", "hf") == 0 and ms(home, "gc") == 0
        check_store(home, notes=False)
        assert blob_files(home) == []
        shutil.rmtree(folder)
        shutil.copytree(pristine, folder)


# -- 2. full disk --------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root and mount(8)): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def assert_no_space_message(code: int, err: str) -> None:
    assert code == 7, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "no space" in lines[0].lower(), err


def test_full_disk(small_fs: Path, models: Path) -> None:
    """The home on an 8 MiB tmpfs holding a 5 MB model: adding a 4 MB one (with --copy, then
    --move) fails with exit 7 and one line, commits and leaves nothing, and the user's file stays;
    after `rm` of the big model and gc, the same add succeeds."""
    home = small_fs / "home"
    big = write_large_gguf(models / "big.gguf", 5 * MB, n_embd=32, seed=2)
    new = write_large_gguf(models / "new.gguf", 4 * MB, n_embd=32, seed=3)
    assert ms(home, "add", big, "--name", "big") == 0
    before = catalog_blobs(home)
    assert len(before) == 1

    for mode in ("--copy", "--move"):
        proc = spawn(home, "add", new, mode, "--name", "new", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=60)
        assert_no_space_message(proc.returncode, err)
        assert list(models_in(home)) == ["big"], mode
        assert catalog_blobs(home) == before and len(blob_files(home)) == 1, mode
        assert staging_left(home) == [], mode
        assert new.exists(), f"{mode}: the source is gone"
        check_store(home, notes=False)

    digest = file_sha(new)
    assert ms(home, "rm", "big") == 0 and ms(home, "gc") == 0
    assert ms(home, "add", new, "--move", "--name", "new") == 0
    assert not new.exists()
    assert model_matches(home, "new", {"new.gguf": digest})
    assert staging_left(home) == []
    check_store(home, notes=False)


def test_full_disk_at_the_catalog_commit(small_fs: Path, models: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The blob fits but the catalog commit does not (the disk fills up in between): exit 7 and one
    line, nothing committed (the placed blob is an orphan that gc removes), and once there is room
    again the add succeeds."""
    home = small_fs / "home"
    model = write_large_gguf(models / "m.gguf", 4 * MB, n_embd=32, seed=4)
    assert ms(home, "add", write_large_gguf(models / "tiny.gguf", 1, n_embd=8, seed=5), "--name", "tiny") == 0
    filler = small_fs / "filler"
    real_commit = Objects.commit_staged

    def commit_then_fill(self: Objects, *args: object, **kwargs: object) -> Path:
        placed = real_commit(self, *args, **kwargs)
        with open(filler, "ab") as f:  # something else takes every byte left
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        return placed

    monkeypatch.setattr(Objects, "commit_staged", commit_then_fill)
    capsys.readouterr()
    code = ms(home, "add", model, "--name", "m")
    err = capsys.readouterr().err
    assert_no_space_message(code, err)
    assert "catalog" in err, err  # it was the commit that failed, not the blob
    monkeypatch.undo()

    assert list(models_in(home)) == ["tiny"]
    assert staging_left(home) == []
    check_store(home)
    with Store(home) as store:
        assert any("not in the catalog" in n for n in fsck(store).notes)  # the placed blob
    filler.unlink()
    assert ms(home, "gc") == 0
    check_store(home, notes=False)
    assert len(blob_files(home)) == 1
    assert ms(home, "add", model, "--name", "m") == 0
    assert model_matches(home, "m", {"m.gguf": file_sha(model)})
    check_store(home, notes=False)


# -- 3. concurrent adds --------------------------------------------------------------------------


def test_two_adds_at_once_share_tensors(home: Path, tmp_path: Path, pair: tuple[Path, Path]) -> None:
    """Two models sharing all but two tensors, added by two processes at once: both complete,
    both read back byte-exact, and the shared tensors are stored once (the store holds exactly
    what adding them one after the other leaves)."""
    a, b = pair
    ref = tmp_path / "ref"
    assert ms(ref, "add", a) == 0 and ms(ref, "add", b) == 0
    expected = stored_bytes(ref)
    assert expected < a.stat().st_size + b.stat().st_size // 2  # the sequential adds did share

    for attempt in range(2):
        procs = [spawn(home, "add", src, "--name", f"{src.stem}{attempt}", stderr=subprocess.PIPE) for src in (a, b)]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        assert model_matches(home, f"a{attempt}", {"a.gguf": file_sha(a)})
        assert model_matches(home, f"b{attempt}", {"b.gguf": file_sha(b)})
        check_store(home, notes=False)
        assert stored_bytes(home) == expected, "the shared tensors were stored twice"
        assert len(blob_files(home)) == 2
        assert staging_left(home) == []
        for name in (f"a{attempt}", f"b{attempt}"):
            assert ms(home, "rm", name) == 0
        assert ms(home, "gc") == 0
        assert blob_files(home) == []


def test_the_same_model_added_twice_at_once(home: Path, models: Path) -> None:
    """The same HF folder (safetensors plus small text files) added by two processes at once, under
    one name: both complete, the model reads back byte-exact, every file is stored once."""
    folder = write_tiny_hf_folder(models / "hf", hidden=256, layers=4, vocab=8192)
    expect = {p.name: file_sha(p) for p in folder.iterdir()}
    total = sum(p.stat().st_size for p in folder.iterdir())
    for attempt in range(3):
        procs = [spawn(home, "add", folder, "--name", "twice", stderr=subprocess.PIPE) for _ in range(2)]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        assert list(models_in(home)) == ["twice"]
        assert model_matches(home, "twice", expect)
        check_store(home, notes=False)
        assert stored_bytes(home) == total
        assert len(blob_files(home)) == len(expect)
        assert ms(home, "rm", "twice") == 0 and ms(home, "gc") == 0


def test_staging_being_created_is_not_taken_for_a_dead_one(home: Path) -> None:
    """A stale-staging scan (run by every add and gc) racing another process that has made its
    staging folder but not yet locked it must not remove that folder; a dead one's it removes."""
    objects = Objects(home)
    objects.create_dirs()
    dead = objects.tmp / "add-1-dead"
    dead.mkdir()
    (dead / ".lock").touch()
    born = objects.tmp / "add-2-born"
    with dir_lock(objects.tmp, exclusive=False):  # what Objects.staging holds while it creates one
        born.mkdir()
        scan = threading.Thread(target=objects.clean_stale_staging)
        scan.start()
        scan.join(0.3)
        assert scan.is_alive(), "the scan did not wait for the folder being created"
        fd = os.open(born / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        scan.join(10)
        assert born.is_dir() and not dead.exists()
    finally:
        os.close(fd)
    assert objects.clean_stale_staging() == 1 and staging_left(home) == []


@contextmanager
def paused_add(home: Path, tmp_path: Path, src: Path, name: str) -> Iterator[subprocess.Popen]:
    """`modelstore add SRC --name NAME --json` in a subprocess, paused at its first hashed chunk
    (holding the store lock and, for a GGUF, the tensor lock) until the block ends."""
    hold = tmp_path / f"hold-{name}"
    hold.mkdir()
    proc = spawn(home, "add", src, "--name", name, "--json", driver=True, stdout=subprocess.PIPE,
                 env={"FAULT_AT": "chunk", "FAULT_NTH": "1", "FAULT_HOLD": str(hold)})
    try:
        deadline = time.monotonic() + 30
        while not (hold / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the add never got going"
            time.sleep(0.01)
        yield proc
    finally:
        (hold / "go").touch()


def test_an_add_waiting_for_another_says_which(home: Path, tmp_path: Path, pair: tuple[Path, Path]) -> None:
    """Two adds of models that share tensors: the second waits for the first to store its
    tensors, and says it waits for another add (not for a gc, which is not running)."""
    a, b = pair
    with paused_add(home, tmp_path, a, "a") as first:
        second = spawn(home, "add", b, "--name", "b", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert second.stderr is not None
        said = second.stderr.readline()
        assert "waiting for another add storing tensors" in said and "gc" not in said, said
    assert first.wait(60) == 0
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0
    assert 0 < json.loads(out)["stored_bytes"] < b.stat().st_size // 2  # it reused a's tensors
    check_store(home, notes=False)


# -- 4. gc during an add -------------------------------------------------------------------------


@pytest.mark.parametrize("reuse", ["tensors", "file"])
def test_gc_during_an_add(home: Path, tmp_path: Path, pair: tuple[Path, Path], reuse: str) -> None:
    """An add pauses mid-hash (holding the store lock) while the model whose tensors (or whole
    file) it reuses is removed and gc is started: gc waits for the add, the add commits, gc keeps
    every blob the new model uses, and the new model reads back byte-exact."""
    a, b = pair
    new = b if reuse == "tensors" else a
    assert ms(home, "add", a, "--name", "old") == 0
    with paused_add(home, tmp_path, new, "new") as add:
        assert ms(home, "rm", "old") == 0
        gc = spawn(home, "gc", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert gc.stderr is not None
        assert "waiting for running adds" in gc.stderr.readline(), "gc did not wait for the add"
        assert gc.poll() is None and add.poll() is None
    out, _ = add.communicate(timeout=60)
    assert add.returncode == 0
    gc_out, gc_err = gc.communicate(timeout=60)
    assert gc.returncode == 0, gc_err

    novel = json.loads(out)["stored_bytes"]
    if reuse == "tensors":
        assert 0 < novel < new.stat().st_size // 2, "the add did not reuse the removed model's tensors"
    else:
        assert novel == 0
    assert json.loads(gc_out)["blobs"] == 0  # the removed model's blob is the new one's now
    assert list(models_in(home)) == ["new"]
    assert model_matches(home, "new", {new.name: file_sha(new)})
    check_store(home, notes=False)
    assert stored_bytes(home) == a.stat().st_size + novel
    with Store(home) as store:
        used = store.file(store.model("new").files[new.name]).blobs
    assert {p.name for p in blob_files(home)} == used
    assert ms(home, "gc") == 0 and stored_bytes(home) == a.stat().st_size + novel


# -- 5. a source that changes while it is stored -------------------------------------------------


def _edit(path: Path, how: str) -> None:
    if how == "append":
        with open(path, "ab") as f:
            f.write(b"more bytes")
    else:
        with open(path, "r+b") as f:
            f.seek(100)
            f.write(os.urandom(64))


@pytest.mark.parametrize("mode", list(ImportMode))
@pytest.mark.parametrize("when", ["rewrite-while-hashing", "append-while-hashing", "rewrite-before-storing"])
def test_source_changed_while_stored(home: Path, models: Path, pair: tuple[Path, Path], unrelated: Path,
                                     monkeypatch: pytest.MonkeyPatch, mode: ImportMode, when: str) -> None:
    """The source file is rewritten or appended to during the hashing pass (after its first 8 MiB
    chunk), or between hashing and storing: the add is refused with SourceChanged, nothing is
    committed or left in objects/, and the file stays where it is. Both the whole-file path (a
    model sharing nothing) and the partial-dedup path (a sibling of the stored base).

    Every mode copies or links bytes that were read apart from the hashing pass (--copy in a
    background thread during it), so every one of them must notice and refuse."""
    import modelstore.store.ingest as ingest_mod

    a, b = pair
    with Store(home) as store:
        add_local(store, a, name="base")
    base_blobs = {p.name for p in blob_files(home)}
    for src_model in (unrelated, b):
        src = models / f"changing-{src_model.name}"
        shutil.copyfile(src_model, src)
        os.utime(src, ns=(10**18, 10**18))  # an old file: any write moves its mtime
        ticks = []
        editors = []

        def progress(total: int, desc: str):
            def tick(n: int) -> None:
                ticks.append(n)
                if len(ticks) == 1 and when.endswith("while-hashing"):
                    editors.append(edit_beside_the_pass(src, lambda: _edit(src, when.split("-")[0])))
            return tick

        if when == "rewrite-before-storing":
            real_store = ingest_mod.Ingest._store

            def edit_then_store(self, path, *args, **kwargs):
                _edit(path, "rewrite")
                return real_store(self, path, *args, **kwargs)
            monkeypatch.setattr(ingest_mod.Ingest, "_store", edit_then_store)
        with Store(home) as store, pytest.raises(SourceChanged, match="changed"):
            add_local(store, src, name="changing", mode=mode, progress=progress)
        monkeypatch.undo()
        for editor in editors:
            editor.join()
        # the edit came after the first chunk (under a read lease the pass stops at the next one)
        assert ticks and (len(editors) == 1 or when == "rewrite-before-storing")
        assert staging_left(home) == []
        check_store(home, notes=False)
        assert src.exists(), "the source is gone"
        assert list(models_in(home)) == ["base"]
        assert {p.name for p in blob_files(home)} == base_blobs, f"{src_model.name}: a blob was left in objects/"
        assert catalog_blobs(home) == base_blobs


def test_source_changed_cli(home: Path, models: Path, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """Through the command line, a file rewritten mid-hash by another thread: exit 5, one line."""
    import modelstore.store.hashing as hashing

    a, _ = pair
    src = models / "m.gguf"
    shutil.copyfile(a, src)
    os.utime(src, ns=(10**18, 10**18))
    real_deliver = hashing._deliver_chunk
    calls = []
    writers: list[threading.Thread] = []

    def finish_then_edit(*args: object) -> None:
        real_deliver(*args)
        calls.append(1)
        if len(calls) == 1:
            writers.append(edit_beside_the_pass(src, lambda: _edit(src, "rewrite")))

    monkeypatch.setattr(hashing, "_deliver_chunk", finish_then_edit)
    capsys.readouterr()
    assert ms(home, "add", src, "--move") == 5
    for writer in writers:
        writer.join()
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "changed" in err, err
    assert models_in(home) == {} and blob_files(home) == [] and src.exists()
    check_store(home, notes=False)


def test_a_catalog_commit_that_fails_says_why_and_writes_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """LMDB may report a full disk at commit as a plain I/O error: with little space left it is
    taken for what it is (out of space, exit 7), otherwise reported in one line; either way the
    catalog is as it was."""
    import lmdb
    from modelstore.store import catalog as catalog_module
    from modelstore.store.errors import ModelstoreError, OutOfSpace

    def failing_write(writer: object) -> None:
        raise lmdb.Error("mdb_txn_commit: Input/output error")

    before = store.catalog.generation()
    for free, expected in ((1 << 20, OutOfSpace), (1 << 40, ModelstoreError)):
        monkeypatch.setattr(catalog_module.shutil, "disk_usage", lambda path, free=free: shutil._ntuple_diskusage(1, 1, free))
        with pytest.raises(expected) as raised:
            with store.catalog.write() as w:
                w._bump_generation()
                failing_write(w)
        assert "nothing was committed" in str(raised.value)
        assert (expected is OutOfSpace) == isinstance(raised.value, OutOfSpace)
    assert store.catalog.generation() == before
