"""Dedup, measured in exact bytes on disk under objects/."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelstore.converters.synth import write_tiny_hf_folder, write_tiny_llama_gguf
from modelstore.store import ImportMode, Store
from modelstore.store.ingest import MIN_SHARED_TENSOR
from modelstore.store.sources.local import add_local
from modelstore.store.tensors import read_weights_header
from tests.conftest import read_model_file, stored_bytes


def shared_tensor_bytes(path: Path) -> int:
    header = read_weights_header(path)
    assert header is not None
    return sum(t.length for t in header.tensors if t.length >= MIN_SHARED_TENSOR)


def test_same_gguf_under_two_names_is_stored_once(store: Store, home: Path, models: Path) -> None:
    gguf = write_tiny_llama_gguf(models / "a.gguf")
    add_local(store, gguf, name="one")
    before = stored_bytes(home)
    result = add_local(store, gguf, name="two")
    assert result.novel_bytes == 0 and result.reused_files == 1
    assert stored_bytes(home) == before == gguf.stat().st_size
    assert read_model_file(store, "two", "a.gguf") == gguf.read_bytes()


def test_one_changed_tensor_costs_header_and_that_tensor(store: Store, home: Path, models: Path) -> None:
    base = write_tiny_llama_gguf(models / "base.gguf")
    tuned = write_tiny_llama_gguf(models / "tuned.gguf", changed={"blk.1.ffn_up.weight": 7})
    add_local(store, base, name="base")
    before = stored_bytes(home)
    result = add_local(store, tuned, name="tuned")

    header = read_weights_header(tuned)
    assert header is not None
    changed = next(t for t in header.tensors if t.name == "blk.1.ffn_up.weight")
    unchanged_shared = shared_tensor_bytes(tuned) - changed.length
    expected = tuned.stat().st_size - unchanged_shared  # header, padding, small norms, the new tensor
    assert result.novel_bytes == expected
    assert stored_bytes(home) - before == expected
    small = sum(t.length for t in header.tensors if t.length < MIN_SHARED_TENSOR)
    assert expected <= header.data_start + changed.length + small + 32 * len(header.tensors)
    assert read_model_file(store, "tuned", "tuned.gguf") == tuned.read_bytes()
    assert read_model_file(store, "base", "base.gguf") == base.read_bytes()


@pytest.mark.parametrize("mode", list(ImportMode))
def test_every_import_mode_dedups_the_same(tmp_path: Path, models: Path, mode: ImportMode) -> None:
    base = write_tiny_llama_gguf(models / "base.gguf")
    tuned = write_tiny_llama_gguf(models / "tuned.gguf", changed={"blk.0.attn_q.weight": 3})
    tuned_bytes = tuned.read_bytes()
    expected = len(tuned_bytes) - shared_tensor_bytes(tuned) + 64 * 64 * 4  # + the changed attn_q
    with Store(tmp_path / "h") as store:
        add_local(store, base, name="base")
        result = add_local(store, tuned, name="tuned", mode=mode)
        assert result.novel_bytes == expected
        assert read_model_file(store, "tuned", "tuned.gguf") == tuned_bytes
    assert tuned.exists() == (mode is not ImportMode.MOVE)


def test_resharded_and_reordered_safetensors_cost_only_new_headers(store: Store, home: Path, models: Path) -> None:
    one = write_tiny_hf_folder(models / "one", seed=5)
    three = write_tiny_hf_folder(models / "three", seed=5, shards=3, order_reversed=True)
    add_local(store, one, name="one")
    before = stored_bytes(home)
    result = add_local(store, three, name="three")
    shards = sorted(three.glob("*.safetensors"))
    assert len(shards) == 3
    expected = sum(p.stat().st_size - shared_tensor_bytes(p) for p in shards)
    expected += (three / "model.safetensors.index.json").stat().st_size  # the only new small file
    assert result.novel_bytes == expected
    assert stored_bytes(home) - before == expected
    for p in three.iterdir():
        assert read_model_file(store, "three", p.name) == p.read_bytes()


def test_tensors_dedup_across_container_formats(store: Store, home: Path, models: Path) -> None:
    """The same F32 tensor bytes in a GGUF and in a safetensors file are stored once."""
    gguf_path = write_tiny_llama_gguf(models / "m.gguf")
    header = read_weights_header(gguf_path)
    assert header is not None
    raw = gguf_path.read_bytes()
    big = [t for t in header.tensors if t.length >= MIN_SHARED_TENSOR]
    arrays = {t.name: np.frombuffer(raw[t.offset : t.end], np.float32).reshape(t.shape) for t in big}
    st_path = models / "m.safetensors"
    save_file(arrays, str(st_path))
    add_local(store, gguf_path, name="gguf")
    before = stored_bytes(home)
    add_local(store, st_path, name="st")
    assert stored_bytes(home) - before == st_path.stat().st_size - sum(t.length for t in big)
    assert read_model_file(store, "st", "m.safetensors") == st_path.read_bytes()


def test_repeated_tensor_inside_one_file_is_stored_once(store: Store, home: Path, models: Path) -> None:
    a = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)
    path = models / "tied.safetensors"
    save_file({"embed": a, "lm_head": a.copy(), "other": b}, str(path))
    add_local(store, path, name="tied")
    assert stored_bytes(home) == path.stat().st_size - a.nbytes
    assert read_model_file(store, "tied", "tied.safetensors") == path.read_bytes()


def test_folder_and_single_file_share_files(store: Store, home: Path, models: Path) -> None:
    folder = write_tiny_hf_folder(models / "f")
    copy = models / "g"
    shutil.copytree(folder, copy)
    add_local(store, folder, name="f")
    before = stored_bytes(home)
    result = add_local(store, copy, name="g")
    assert result.novel_bytes == 0 and result.reused_files == len(list(folder.iterdir()))
    assert stored_bytes(home) == before


def test_readding_replaces_and_gc_frees_exactly_the_old_bytes(store: Store, home: Path, models: Path) -> None:
    from modelstore.store.gc import run_gc

    a = write_tiny_llama_gguf(models / "m.gguf", seed=1)
    add_local(store, a, name="m")
    b = write_tiny_llama_gguf(models / "m.gguf", seed=2)  # same path, other content
    result = add_local(store, b, name="m")
    assert result.replaced is not None
    gc = run_gc(store)
    assert gc.plan.bytes_freed == b.stat().st_size  # the first version, same size
    assert stored_bytes(home) == b.stat().st_size
    assert read_model_file(store, "m", "m.gguf") == b.read_bytes()


def test_rerun_of_an_interrupted_folder_move_keeps_every_file(store: Store, home: Path, models: Path) -> None:
    """A --move killed after its commit, while removing the originals, leaves some of them: the
    re-run must finish the move, not replace the model with the files that are left."""
    folder = write_tiny_hf_folder(models / "f")
    originals = {p.name: p.read_bytes() for p in folder.iterdir()}
    add_local(store, folder, name="f", mode=ImportMode.MOVE)
    assert not any(folder.iterdir())
    for name in ("config.json", "README.md"):  # as if those two had not been removed yet
        (folder / name).write_bytes(originals[name])
    result = add_local(store, folder, name="f", mode=ImportMode.MOVE)
    assert result.unchanged and not any(folder.iterdir())
    from modelstore.store.gc import run_gc

    run_gc(store)
    for name, data in originals.items():
        assert read_model_file(store, "f", name) == data


def test_a_negligible_shared_share_keeps_a_linked_file_whole(store: Store, home: Path, models: Path) -> None:
    """Reusing one small tensor would turn a hard link into a copy of everything else: below 1 %
    of the file, the file is stored whole (and, with --link, shares the original's inode)."""
    small = np.random.default_rng(1).standard_normal((32, 32)).astype(np.float32)  # 4 KiB
    save_file({"shared": small}, str(models / "a.safetensors"))
    big = {"shared": small, "rest": np.random.default_rng(2).standard_normal((1024, 256)).astype(np.float32)}
    save_file(big, str(models / "b.safetensors"))
    add_local(store, models / "a.safetensors", name="a")
    result = add_local(store, models / "b.safetensors", name="b", mode=ImportMode.LINK)
    record = store.file(store.model("b").files["b.safetensors"])
    assert len(record.recipe) == 1 and record.recipe[0].blob == record.b3
    assert result.novel_bytes == (models / "b.safetensors").stat().st_size
    assert store.objects.path(record.b3).stat().st_ino == (models / "b.safetensors").stat().st_ino


def test_the_background_copy_follows_the_bytes_proven_new(store: Store, home: Path, models: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--copy copies a file's novel bytes while hashing it; it copies no byte of a tensor before
    that tensor's hash shows it is new, so a file whose tensors are all stored costs no more than
    its header in copying, a new file is copied exactly once, and a fine-tune's changed tensors
    are copied during the pass and never again."""
    from modelstore.store import ingest as ingest_module
    from modelstore.store import objects
    from modelstore.store.hashing import CHUNK

    rng = np.random.default_rng(3)
    tensors = {f"t{i}": rng.standard_normal(CHUNK // 2).astype(np.float32) for i in range(4)}  # 2 chunks each
    save_file(tensors, str(models / "a.safetensors"), metadata={"who": "a"})
    save_file(tensors, str(models / "b.safetensors"), metadata={"who": "b"})  # the same tensors, another header
    copied: list[int] = []
    real_copy_range = objects.copy_range

    def counting(fd_in: int, fd_out: int, offset: int, count: int) -> int:
        n = real_copy_range(fd_in, fd_out, offset, count)
        copied.append(n)
        return n

    monkeypatch.setattr(objects, "copy_range", counting)
    a, b = models / "a.safetensors", models / "b.safetensors"
    add_local(store, a, name="a", mode=ImportMode.COPY)
    assert sum(copied) == a.stat().st_size
    assert read_model_file(store, "a", "a.safetensors") == a.read_bytes()

    copied.clear()
    result = add_local(store, b, name="b", mode=ImportMode.COPY)
    header = read_weights_header(b)
    assert header is not None and result.novel_bytes == header.data_start
    assert sum(copied) <= header.data_start
    assert read_model_file(store, "b", "b.safetensors") == b.read_bytes()

    # a fine-tune: two tensors changed; the copy made during the pass is the blob, byte for byte
    tuned = {**tensors, "t1": tensors["t1"] + 1, "t3": tensors["t3"] * 2}
    c = models / "c.safetensors"
    save_file(tuned, str(c), metadata={"who": "c"})
    copied.clear()
    copied_after_the_pass: list[object] = []
    monkeypatch.setattr(ingest_module, "_copy_ranges", lambda *args: copied_after_the_pass.append(args))
    result = add_local(store, c, name="c", mode=ImportMode.COPY)
    header = read_weights_header(c)
    assert header is not None
    changed = sum(t.length for t in header.tensors if t.name in ("t1", "t3"))
    assert result.novel_bytes == header.data_start + changed == sum(copied)
    assert copied_after_the_pass == []
    assert read_model_file(store, "c", "c.safetensors") == c.read_bytes()


def test_the_background_copy_starts_writeback_as_it_goes(tmp_path: Path) -> None:
    """The copier asks the kernel to start writing each slice to disk (sync_file_range), so the
    fsync before the commit waits for less; the binding is checked by a call the kernel accepts
    and one it refuses."""
    import sys

    from modelstore.store.objects import start_writeback

    path = tmp_path / "f"
    with open(path, "wb") as f:
        f.write(b"x" * (1 << 20))
        f.flush()
        assert start_writeback(f.fileno(), 0, 1 << 20) is sys.platform.startswith("linux")
        assert start_writeback(f.fileno(), 0, 0) is False
    assert start_writeback(-1, 0, 4096) is False
