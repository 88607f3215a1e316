"""Lazy conversion without the runtimes: plans, the bytes they make, their lifecycle in the
catalog, and converted files read through a real mount.

Every converted file is compared with an eager conversion the test does itself with numpy and
`gguf` (the runtimes' own checks are in test_convert_runtimes.py)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors import safe_open

from modelstore.converters import tensorops, to_safetensors
from modelstore.converters.planner import BlobReader, iter_pieces, plan_conversions
from modelstore.converters.synth import write_hf_model, write_tiny_llama_gguf
from modelstore.fusefs.renditions import renditions
from modelstore.fusefs.snapshot import take_snapshot
from modelstore.fusefs.views import ViewOptions, render_root
from modelstore.store import Store
from modelstore.store.derived import DerivedCache
from modelstore.store.fsck import fsck
from modelstore.store.records import Derived, Extent, FileRecord
from modelstore.store.sources.local import add_local
from tests.mounting import mounted, requires_fuse


def converted_bytes(store: Store, record: FileRecord) -> bytes:
    with BlobReader(store) as read:
        return b"".join(iter_pieces(record, read))


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's converter does to Q and K rows (reference, on the whole tensor)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# -- tensor ops ---------------------------------------------------------------------------------


def _run_all(slices: list[Derived], source: bytes) -> bytes:
    return b"".join(tensorops.run(d.op, d.length, lambda e: source[e.offset : e.offset + e.length]) for d in slices)


def _source(offset: int, n: int) -> list[Extent]:
    return [Extent("0" * 64, offset, n)]


@pytest.mark.parametrize("src", ["F32", "F16"])
def test_permuted_slices_equal_a_whole_tensor_permutation(src: str) -> None:
    rows, cols, heads = 256, 64, 8
    w = np.random.default_rng(1).standard_normal((rows, cols)).astype(tensorops.PLAIN[src])
    slices = tensorops.slices(_source, src, src, rows, cols, head_dim=rows // heads, target_bytes=3000)
    assert len(slices) > 4  # really cut, at head boundaries
    out = _run_all(slices, w.tobytes())
    assert out == llama_permute(w, heads).tobytes()
    back = tensorops.slices(_source, src, src, rows, cols, head_dim=rows // heads, inverse=True, target_bytes=5000)
    assert _run_all(back, out) == w.tobytes()
    small_first = tensorops.slices(_source, src, src, rows, cols, head_dim=rows // heads, target_bytes=40000,
                                   first_bytes=1)  # one head's rows, then the usual size
    assert small_first[0].op["rows"] == rows // heads < small_first[1].op["rows"]
    assert _run_all(small_first, w.tobytes()) == out


@pytest.mark.parametrize("dst", ["Q8_0", "Q4_0", "BF16", "F16"])
def test_cast_and_quantize_slices_equal_gguf_quants_on_the_whole(dst: str) -> None:
    w = np.random.default_rng(2).standard_normal((96, 128)).astype(np.float32)
    slices = tensorops.slices(_source, "F32", dst, 96, 128, target_bytes=2000)
    assert len(slices) > 2
    expected = gguf.quants.quantize(w, gguf.GGMLQuantizationType[dst]).tobytes()
    assert _run_all(slices, w.tobytes()) == expected


@pytest.mark.parametrize(("src", "dst"), [("F32", "F32"), ("F16", "F32"), ("F32", "F16")])
def test_slices_that_add_a_constant_equal_numpy(src: str, dst: str) -> None:
    """gemma's norms: w in HF, 1 + w in GGUF, and back; even F32 -> F32 is computed, not moved."""
    w = np.random.default_rng(3).standard_normal((4, 64)).astype(tensorops.PLAIN[src])
    up = tensorops.slices(_source, src, dst, 4, 64, add=1.0, target_bytes=300)
    assert len(up) > 1 and all(s.op["add"] == 1.0 for s in up)
    out = _run_all(up, w.tobytes())
    assert out == (w.astype(np.float32) + np.float32(1.0)).astype(tensorops.PLAIN[dst]).tobytes()
    back = _run_all(tensorops.slices(_source, dst, src, 4, 64, add=-1.0), out)
    restored = (np.frombuffer(out, tensorops.PLAIN[dst]).astype(np.float32) - np.float32(1.0)).astype(tensorops.PLAIN[src])
    assert back == restored.tobytes()


def test_bf16_and_quantized_sources_decode_like_gguf() -> None:
    w = np.random.default_rng(3).standard_normal((32, 64)).astype(np.float32)
    bf16 = gguf.quants.quantize(w, gguf.GGMLQuantizationType.BF16)
    out = _run_all(tensorops.slices(_source, "BF16", "F32", 32, 64), bf16.tobytes())
    assert out == gguf.quants.dequantize(bf16, gguf.GGMLQuantizationType.BF16).astype(np.float32).tobytes()
    q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
    out = _run_all(tensorops.slices(_source, "Q8_0", "F16", 32, 64), q.tobytes())
    assert out == gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).astype(np.float16).tobytes()


# -- HF safetensors -> GGUF ---------------------------------------------------------------------


@pytest.fixture
def hf_folder(models: Path) -> Path:
    return write_hf_model(models / "tiny-hf", dtype="F16", heads=4, kv_heads=2)


def test_safetensors_model_gets_a_gguf_equal_to_an_eager_conversion(store: Store, hf_folder: Path) -> None:
    add_local(store, hf_folder, name="tiny")
    result = plan_conversions(store, "tiny", "F16")
    assert [p["target"] for p in result.plans] == ["gguf"] and not result.unsupported
    record = result.files["tiny-F16.gguf"]
    data = converted_bytes(store, record)
    assert len(data) == record.size
    assert hashlib.sha256(data).hexdigest() == record.sha256

    path = hf_folder.parent / "eager.gguf"
    path.write_bytes(data)
    reader = gguf.GGUFReader(path)
    config = json.loads((hf_folder / "config.json").read_text())
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["llama.attention.head_count_kv"].contents() == 2
    assert reader.fields["llama.block_count"].contents() == config["num_hidden_layers"]
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    source = safe_open(str(hf_folder / "model.safetensors"), "np")
    seen = 0
    for hf_name in source.keys():
        want = source.get_tensor(hf_name)
        if ".q_proj." in hf_name:
            want = llama_permute(want, 4)
        elif ".k_proj." in hf_name:
            want = llama_permute(want, 2)
        if want.ndim == 1:
            want = want.astype(np.float32)
        tensor = next(t for t in reader.tensors
                      if t.name == names.get_name(hf_name, try_suffixes=(".weight", ".bias")))
        assert bytes(tensor.data.tobytes()) == want.tobytes(), hf_name
        seen += 1
    assert seen == len(reader.tensors) == 2 + 2 * 9 + 1


def test_tensors_that_need_no_change_are_the_source_blob_bytes(store: Store, hf_folder: Path) -> None:
    add_local(store, hf_folder, name="tiny")
    record = plan_conversions(store, "tiny", "F16").files["tiny-F16.gguf"]
    source = store.file(store.model("tiny").files["model.safetensors"])
    blob = source.recipe[0].blob
    header = json.loads((hf_folder / "model.safetensors").read_bytes()[8:8 + int.from_bytes(
        (hf_folder / "model.safetensors").read_bytes()[:8], "little")])
    data_start = 8 + int.from_bytes((hf_folder / "model.safetensors").read_bytes()[:8], "little")
    down = header["model.layers.0.mlp.down_proj.weight"]["data_offsets"]
    extents = [p for p in record.recipe if isinstance(p, Extent) and p.blob == blob]
    assert Extent(blob, data_start + down[0], down[1] - down[0]) in extents
    derived = [p for p in record.recipe if isinstance(p, Derived) and p.op["kind"] == "tensor"]
    # Q and K of each layer (permuted) and the five 1-D norms (widened to F32) are derived; nothing else
    assert len(derived) == 2 * 2 + 2 * 2 + 1


def test_quantized_gguf_rendition(store: Store, hf_folder: Path) -> None:
    add_local(store, hf_folder, name="tiny")
    record = plan_conversions(store, "tiny", "Q8_0").files["tiny-Q8_0.gguf"]
    path = hf_folder.parent / "q8.gguf"
    path.write_bytes(converted_bytes(store, record))
    reader = gguf.GGUFReader(path)
    source = safe_open(str(hf_folder / "model.safetensors"), "np")
    w = source.get_tensor("model.layers.1.self_attn.q_proj.weight").astype(np.float32)
    tensor = next(t for t in reader.tensors if t.name == "blk.1.attn_q.weight")
    assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0
    expected = gguf.quants.quantize(llama_permute(w, 4), gguf.GGMLQuantizationType.Q8_0)
    assert tensor.data.tobytes() == expected.tobytes()
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0


# -- GGUF -> HF safetensors ---------------------------------------------------------------------


@pytest.mark.parametrize("quant", [None, "Q8_0", "Q4_0"])
def test_gguf_model_gets_a_safetensors_repo_equal_to_an_eager_conversion(store: Store, models: Path,
                                                                         quant: str | None) -> None:
    path = write_tiny_llama_gguf(models / "tiny.gguf", n_head=4, n_head_kv=2, quant=quant)
    add_local(store, path, name="tiny")
    result = plan_conversions(store, "tiny")
    assert [p["target"] for p in result.plans] == ["safetensors"], result.unsupported
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= set(result.files)
    out = models / "hf"
    out.mkdir()
    for rel, record in result.files.items():
        (out / rel).write_bytes(converted_bytes(store, record))
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == record.sha256
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 2
    assert config["torch_dtype"] == ("float32" if quant is None else "float16")
    reader = gguf.GGUFReader(path)
    table = {t.name: t for t in reader.tensors}
    names = _hf_to_gguf_names(2)
    with safe_open(str(out / "model.safetensors"), "np") as st:
        assert len(list(st.keys())) == len(table)
        for hf_name in st.keys():
            t = table[names[hf_name]]
            if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                want = np.array(t.data).reshape(tuple(reversed([int(d) for d in t.shape])))
            else:
                want = gguf.quants.dequantize(t.data, t.tensor_type)
            if ".q_proj." in hf_name:
                want = llama_unpermute(want, 4)
            elif ".k_proj." in hf_name:
                want = llama_unpermute(want, 2)
            want = want.astype(np.float32 if quant is None else np.float16)
            assert st.get_tensor(hf_name).tobytes() == want.tobytes(), hf_name


def _retyped(src: Path, dst: Path, name: str, qtype: gguf.GGMLQuantizationType) -> Path:
    """A copy of the GGUF `src` whose tensor `name` is stored as `qtype` (zeros of that type's size)."""
    reader = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, reader.get_field("general.architecture").contents())
    for key, field in reader.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        if t.name == name:
            block, size = gguf.GGML_QUANT_SIZES[qtype]  # a 2-D tensor: rows of whole blocks
            w.add_tensor(t.name, np.zeros((shape[0], shape[1] // block * size), np.uint8), raw_dtype=qtype)
        else:
            w.add_tensor(t.name, np.array(t.data).reshape(shape))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.mark.parametrize("qtype", ["F64", "I32", "Q8_1", "Q8_K"])
def test_a_gguf_tensor_type_that_cannot_be_read_is_a_plain_reason(store: Store, models: Path, qtype: str) -> None:
    """gguf-py dequantizes no F64, integer, Q8_1 or Q8_K tensor: the plan says so, rather than
    the converter failing with a NotImplementedError to "please report"."""
    plain = write_tiny_llama_gguf(models / "plain.gguf", n_embd=256, n_ff=256)
    tensor = "blk.0.ffn_down.weight"  # 256 columns: whole blocks of every type
    path = _retyped(plain, models / f"tiny-{qtype}.gguf", tensor, gguf.GGMLQuantizationType[qtype])
    assert {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}[tensor] == qtype
    add_local(store, path, name="odd")
    result = plan_conversions(store, "odd")
    assert result.plans == []
    assert result.unsupported["safetensors"].startswith(f"tensor {tensor} is {qtype}; F32, F16, BF16 and"), \
        result.unsupported


@pytest.mark.parametrize(("extra", "want"), [({}, 2), ({"tokenizer.ggml.eot_token_id": 300}, [2, 300]),
                                            ({"tokenizer.ggml.eot_token_id": 300, "tokenizer.ggml.eom_token_id": 301},
                                             [2, 300, 301]),
                                            ({"tokenizer.ggml.eot_token_id": 2}, 2)])
def test_generation_stops_where_llama_cpp_does(store: Store, models: Path, extra: dict[str, int],
                                               want: object) -> None:
    """llama.cpp ends generation at EOS, EOT and EOM alike: generation_config.json names them all."""
    add_local(store, write_tiny_llama_gguf(models / "eot.gguf", extra_kv=extra), name="eot")
    files = plan_conversions(store, "eot").files
    generation = json.loads(converted_bytes(store, files["generation_config.json"]))
    assert generation["eos_token_id"] == want
    assert json.loads(converted_bytes(store, files["config.json"]))["eos_token_id"] == 2


def test_an_end_of_turn_without_eos_is_the_one_eos() -> None:
    assert to_safetensors._end_of_generation({"tokenizer.ggml.eot_token_id": 300}, None) == 300
    assert to_safetensors._end_of_generation({}, None) is None


def _hf_to_gguf_names(n_blocks: int) -> dict[str, str]:
    from modelstore.converters import archs

    return {hf: gg for gg, hf in archs.hf_name_table(archs.LLAMA, n_blocks).items()}


def test_large_gguf_renditions_are_sharded_with_an_index(store: Store, models: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(to_safetensors, "SHARD_LIMIT", 400_000)
    path = write_tiny_llama_gguf(models / "tiny.gguf", n_embd=128, n_ff=256)
    add_local(store, path, name="tiny")
    files = plan_conversions(store, "tiny").files
    shards = sorted(p for p in files if p.endswith(".safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads(converted_bytes(store, files["model.safetensors.index.json"]))
    assert set(index["weight_map"].values()) == set(shards)
    total = 0
    for shard in shards:
        blob = models / shard
        blob.write_bytes(converted_bytes(store, files[shard]))
        with safe_open(str(blob), "np") as st:
            for name in st.keys():
                assert index["weight_map"][name] == shard
                total += st.get_tensor(name).nbytes
    assert total == index["metadata"]["total_size"]


# -- split GGUF -> one GGUF ---------------------------------------------------------------------


def _write_gguf(path: Path, split_max_tensors: int = 0) -> None:
    w = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    w.add_name("split-me")
    w.add_block_count(2)
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0])
    rng = np.random.default_rng(5)
    for i in range(7):
        w.add_tensor(f"t{i}", rng.standard_normal((3 + i, 32)).astype(np.float32 if i % 2 else np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_split_gguf_merges_into_what_a_single_file_writer_writes(store: Store, models: Path) -> None:
    (models / "one").mkdir()
    (models / "split").mkdir()
    _write_gguf(models / "one" / "m.gguf")
    _write_gguf(models / "split" / "m.gguf", split_max_tensors=3)
    assert len(list((models / "split").iterdir())) == 3
    add_local(store, models / "split", name="m")
    result = plan_conversions(store, "m")
    record = result.files["m.gguf"]
    single = (models / "one" / "m.gguf").read_bytes()
    assert converted_bytes(store, record) == single
    assert record.sha256 == hashlib.sha256(single).hexdigest()
    # the shards' tensor bytes are mapped, not copied: only the header is new
    with store.catalog.read() as r:
        owned = r.conversions("m")["blobs"]
        assert sum(r.blob_size(b) for b in owned) < 4096

    snap = take_snapshot(store.catalog, str(store.objects.root))
    tree = render_root(snap, ViewOptions())
    blobs = tree.children["ollama"].children["blobs"].children
    assert f"sha256-{record.sha256}" in blobs  # Ollama gets the one file
    llamacpp = tree.children["llamacpp"].children
    assert "m.gguf" not in llamacpp and sorted(llamacpp["m"].children) == sorted(
        p.name for p in (models / "split").iterdir())  # llama.cpp reads the shards itself


# -- lifecycle ----------------------------------------------------------------------------------


def test_conversions_follow_their_model_and_gc_keeps_what_they_own(cli, home: Path, hf_folder: Path) -> None:
    assert cli("add", hf_folder, "--name", "tiny").code == 0
    with Store(home) as store:
        with store.catalog.read() as r:
            entry = r.conversions("tiny")
        assert entry is not None and entry["files"] and entry["blobs"]
        owned = entry["blobs"]
    assert cli("gc", "--json").json()["bytes_freed"] == 0  # headers of a live model stay
    again = cli("add", hf_folder, "--name", "tiny", "--json").json()
    assert again["unchanged"] and again["conversions"]["files"]  # kept, not planned twice
    with Store(home) as store, store.catalog.read() as r:
        assert r.conversions("tiny") == entry
    assert fsck_clean(home)
    assert cli("rm", "tiny").code == 0
    with Store(home) as store, store.catalog.read() as r:
        assert r.conversions("tiny") is None
    assert cli("gc").code == 0
    assert not any((home / "objects" / b[:2] / b).exists() for b in owned)
    assert fsck_clean(home)


def fsck_clean(home: Path) -> bool:
    with Store(home) as store:
        report = fsck(store, deep=True)
    return report.clean and not report.notes


def test_show_says_how_each_view_got_the_model_and_why_not(cli, home: Path, hf_folder: Path, models: Path) -> None:
    assert cli("add", hf_folder, "--name", "tiny").code == 0
    views = {v["view"]: v for v in cli("show", "tiny", "--json").json()["views"]}
    assert views["llamacpp"]["paths"] == ["llamacpp/tiny.gguf"]
    assert "safetensors F16 -> GGUF F16" in views["ollama"]["converted"]
    assert views["huggingface"]["present"] and views["huggingface"]["converted"] is None

    assert cli("add", hf_folder, "--name", "raw", "--no-convert").code == 0
    views = {v["view"]: v for v in cli("show", "raw", "--json").json()["views"]}
    assert not views["ollama"]["present"] and "--no-convert" in views["ollama"]["reason"]
    assert "modelstore convert raw" in views["ollama"]["reason"]
    assert cli("convert", "raw").code == 0
    views = {v["view"]: v for v in cli("show", "raw", "--json").json()["views"]}
    assert views["ollama"]["present"]

    bert = write_hf_model(models / "bert", dtype="F32")
    config = json.loads((bert / "config.json").read_text())
    (bert / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    r = cli("add", bert, "--name", "bert")
    assert r.code == 0 and "not covered" in r.out
    views = {v["view"]: v for v in cli("show", "bert", "--json").json()["views"]}
    assert "architecture 'bert' is not covered" in views["lmstudio"]["reason"]
    text = cli("show", "bert").out
    assert "absent: no GGUF file, and no GGUF conversion" in text


def test_a_broken_config_never_fails_the_add(cli, hf_folder: Path) -> None:
    (hf_folder / "config.json").write_text("{not json")
    r = cli("add", hf_folder, "--name", "tiny", "--json")
    assert r.code == 0
    assert "config.json is not valid JSON" in r.json()["conversions"]["unsupported"]["gguf"]


def test_renditions_of_a_gguf_model(store: Store, models: Path) -> None:
    add_local(store, write_tiny_llama_gguf(models / "t.gguf"), name="t")
    plan_conversions(store, "t")
    snap = take_snapshot(store.catalog, str(store.objects.root))
    model = store.model("t")
    views = {r.view: r for r in renditions(snap, model)}
    assert views["huggingface"].converted and "GGUF F32 -> safetensors F32" in views["huggingface"].converted
    assert views["llamacpp"].converted is None  # its own file


# -- the derived cache ----------------------------------------------------------------------------


def test_derived_cache_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = DerivedCache(tmp_path / "derived", limit=10_000)
    for i in range(4):
        cache.put(f"{i:064x}", bytes([i]) * 3000)
        os.utime(cache._path(f"{i:064x}"), (1000 + i, 1000 + i))
    assert cache.used_bytes() <= 10_000
    assert cache.get(f"{0:064x}") is None  # the oldest went first
    assert cache.get(f"{3:064x}") == bytes([3]) * 3000
    cache.put("f" * 64, b"x" * 20_000)  # larger than the whole cache: not kept
    assert cache.get("f" * 64) is None
    cache.clear()  # `gc --derived`
    assert cache.used_bytes() == 0 and cache.get(f"{3:064x}") is None


# -- through a real mount ---------------------------------------------------------------------------


@requires_fuse
@pytest.mark.fuse
def test_converted_files_read_through_the_mount(store: Store, home: Path, tmp_path: Path, hf_folder: Path) -> None:
    add_local(store, hf_folder, name="tiny")
    record = plan_conversions(store, "tiny", "Q8_0").files["tiny-Q8_0.gguf"]
    expected = converted_bytes(store, record)
    (home / "config.toml").write_text('derived_cache = "16KiB"\n')  # room for a few slices only
    with mounted(home, tmp_path / "mnt") as m:
        path = m.path / "llamacpp" / "tiny.gguf"
        assert path.stat().st_size == record.size
        results: list[bytes] = []

        def read() -> None:
            with open(path, "rb") as f:
                results.append(f.read())

        threads = [threading.Thread(target=read) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [expected] * 3
        blob = m.path / "ollama" / "blobs" / f"sha256-{record.sha256}"
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == record.sha256
    assert 0 < DerivedCache(home / "derived", 0).used_bytes() <= 16 << 10

    (home / "config.toml").write_text('derived_cache = "64MiB"\n')
    with mounted(home, tmp_path / "mnt") as m:
        assert (m.path / "llamacpp" / "tiny.gguf").read_bytes() == expected
    cached = [p for p in (home / "derived").rglob("*") if p.is_file()]
    assert len(cached) == sum(1 for p in record.recipe if isinstance(p, Derived) and p.op["kind"] == "tensor")
    # A remount reads the cached slices, after checking each against the BLAKE3 planned for it:
    # a damaged entry is converted anew, never served.
    damaged = max(cached, key=lambda p: p.stat().st_size)
    good = damaged.read_bytes()
    damaged.chmod(0o644)
    damaged.write_bytes(bytes(len(good)))
    inodes = {p: p.stat().st_ino for p in cached if p != damaged}
    with mounted(home, tmp_path / "mnt") as m:
        assert (m.path / "llamacpp" / "tiny.gguf").read_bytes() == expected
    assert damaged.read_bytes() == good
    assert damaged.stat().st_ino not in inodes.values()
    assert all(p.stat().st_ino == ino for p, ino in inodes.items())  # the sound ones were read, not remade
    assert fsck_clean(home)


@requires_fuse
@pytest.mark.fuse
def test_a_broken_derived_cache_only_costs_speed(store: Store, home: Path, tmp_path: Path, hf_folder: Path) -> None:
    """The derived cache is never needed: with <home>/derived a file (every lookup ENOTDIR, every
    write refused), a converted file still reads back exactly, each slice converted anew."""
    add_local(store, hf_folder, name="tiny")
    record = plan_conversions(store, "tiny", "Q8_0").files["tiny-Q8_0.gguf"]
    expected = converted_bytes(store, record)
    (home / "derived").write_bytes(b"not a folder")
    with mounted(home, tmp_path / "mnt") as m:
        assert (m.path / "llamacpp" / "tiny.gguf").read_bytes() == expected
        assert (m.path / "llamacpp" / "tiny.gguf").read_bytes() == expected  # the lookups fail again
    assert (home / "derived").read_bytes() == b"not a folder"
    assert DerivedCache(tmp_path / "derived-file", 1 << 20).get("0" * 64) is None
    (tmp_path / "derived-file").write_bytes(b"")
    cache = DerivedCache(tmp_path / "derived-file", 1 << 20)
    cache.put("0" * 64, b"slice")  # refused quietly
    assert cache.get("0" * 64) is None


async def test_a_conversion_that_fails_leaves_no_lock_behind(tmp_path: Path) -> None:
    """DerivedReader keeps a lock per slice being converted, and drops it once no reader waits,
    also when the conversion raised (else one lock per failed slice stays for the mount's life)."""
    import errno

    from modelstore.fusefs.reader import DerivedReader

    calls: list[str] = []

    async def failing(fn: object, piece: Derived, key: str, fds: object) -> bytes:
        calls.append(key)
        raise OSError(errno.EIO, "conversion failed")

    reader = DerivedReader(DerivedCache(tmp_path / "derived", 1 << 20), failing)
    piece = Derived({"kind": "tensor", "inputs": [], "src": "F32", "dst": "F16", "b3": "0" * 64}, 8)
    for _ in range(2):
        with pytest.raises(OSError):
            await reader.read(piece, 0, 8, {})
    assert len(calls) == 2 and reader.locks == {}


def test_fsck_conversions_notices_arithmetic_that_changed(cli, hf_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("add", hf_folder, "--name", "tiny").code == 0
    assert cli("fsck", "--conversions").code == 0
    monkeypatch.setattr(tensorops, "_permute_rows", lambda rows, head_dim, inverse: rows)  # as if numpy changed
    r = cli("fsck", "--conversions", "--json")
    assert r.code == 1
    assert r.json()["problems"] == ["converted file tiny-F16.gguf of tiny now converts to other bytes than "
                                    "planned (run `modelstore convert tiny`)"]


def test_a_repo_of_several_quantizations_gets_its_finest_as_safetensors(store: Store, models: Path) -> None:
    repo = models / "repo"
    repo.mkdir()
    write_tiny_llama_gguf(repo / "tiny-Q4_0.gguf", quant="Q4_0")
    write_tiny_llama_gguf(repo / "tiny-F16.gguf", f16=True)
    write_tiny_llama_gguf(repo / "tiny-Q8_0.gguf", quant="Q8_0")
    add_local(store, repo, name="repo")
    result = plan_conversions(store, "repo")
    assert [p["from"] for p in result.plans] == [["tiny-F16.gguf"]]
    assert result.plans[0]["how"].endswith("from tiny-F16.gguf")


def test_bf16_to_f16_equals_numpy_for_every_bf16_value() -> None:
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    as_f32 = (bits.astype(np.uint32) << 16).view(np.float32)
    with np.errstate(over="ignore"):
        want = as_f32.astype(np.float16)
    rows = tensorops.slices(_source, "BF16", "F16", 1 << 10, 64)
    got = np.frombuffer(_run_all(rows, bits.tobytes()), np.float16)
    nan = np.isnan(as_f32)
    assert np.array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan])
    assert np.isnan(got[nan]).all()


@pytest.mark.parametrize(("theta", "dim", "factor", "high", "original"), [
    (500000.0, 64, 32.0, 4.0, 8192),  # Llama 3.2 1B
    (500000.0, 128, 8.0, 4.0, 8192),  # Llama 3.1 8B
    (10000.0, 16, 8.0, 4.0, 64),  # the tiny test model
    (10000.0, 64, 16.0, 2.0, 512)])
def test_llama3_rope_scaling_is_found_again_from_its_rope_freqs(theta: float, dim: int, factor: float,
                                                                 high: float, original: int) -> None:
    from modelstore.converters import archs
    from modelstore.converters.errors import ConversionUnsupported

    rope = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": high,
            "original_max_position_embeddings": original}
    config = {"head_dim": dim, "rope_theta": theta}
    factors = archs.llama3_rope_factors({**config, "rope_scaling": rope})
    assert factors is not None and factors.dtype == np.float32 and factors.shape == (dim // 2,)
    assert factors.min() == 1.0 and factors.max() == factor
    assert archs.llama3_rope_from_factors(factors, config) == rope
    for wrong in (factors[::-1].copy(), factors[:0], factors[:-1], np.full_like(factors, np.nan)):
        with pytest.raises(ConversionUnsupported):  # anything else is refused, not guessed
            archs.llama3_rope_from_factors(wrong, config)


@pytest.mark.parametrize(("bad", "word"), [({"partial_rotary_factor": "abc"}, "cannot use"),
                                           ({"model_type": "phi3", "sliding_window": "x"}, "cannot use"),
                                           ({"num_attention_heads": 0}, "no usable head size"),
                                           ({"rope_scaling": {"rope_type": "linear"}}, "lacks 'factor'")])
def test_odd_config_values_are_refused_with_the_reason(bad: dict[str, object], word: str) -> None:
    from modelstore.converters import archs
    from modelstore.converters.errors import ConversionUnsupported

    config = {"num_attention_heads": 4, "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, **bad}
    with pytest.raises(ConversionUnsupported, match=word):
        archs.gguf_model_keys(gguf.GGUFWriter(None, "llama"), config)


_GGUF_LLAMA = {"llama.embedding_length": 64, "llama.attention.head_count": 4, "llama.feed_forward_length": 128,
               "llama.block_count": 2, "llama.context_length": 256}


@pytest.mark.parametrize(("kv", "want"), [
    ({}, None),
    # llama.cpp's default type is linear, and rope.scale_linear its older name for the factor
    ({"llama.rope.scaling.factor": 4.0}, {"rope_type": "linear", "factor": 4.0}),
    ({"llama.rope.scale_linear": 4.0}, {"rope_type": "linear", "factor": 4.0}),
    ({"llama.rope.scaling.type": "linear", "llama.rope.scale_linear": 2.0}, {"rope_type": "linear", "factor": 2.0}),
    # a factor of 0 or 1, or type none, scales nothing (and rope.scaling.factor wins over the older key)
    ({"llama.rope.scaling.factor": 0.0, "llama.rope.scale_linear": 4.0}, None),
    ({"llama.rope.scaling.factor": 1.0}, None),
    ({"llama.rope.scaling.type": "none", "llama.rope.scaling.factor": 4.0}, None),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 0.0}, None),
    # YaRN: the original context defaults to the context length, as in llama.cpp; attn_factor
    # multiplies llama.cpp's own magnitude 1 + 0.1 ln(factor), which transformers' default equals
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0},
     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0, "llama.rope.scaling.original_context_length": 32,
      "llama.rope.scaling.attn_factor": 0.5, "llama.rope.scaling.yarn_beta_fast": 32.0},
     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
      "attention_factor": pytest.approx(0.5 * (1 + 0.1 * np.log(4.0)))}),
])
def test_gguf_rope_scaling_reaches_config_json_as_llama_cpp_applies_it(kv: dict[str, object], want: object) -> None:
    from modelstore.converters import archs

    assert archs.hf_config(archs.LLAMA, {**_GGUF_LLAMA, **kv}, set(), "float16").get("rope_scaling") == want


@pytest.mark.parametrize(("kv", "word"), [
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0, "llama.rope.scaling.yarn_beta_fast": 8.0},
     "yarn_beta_fast to 8, which llama.cpp does not read"),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0, "llama.rope.scaling.yarn_attn_factor": 0.7},
     "yarn_attn_factor to 0.7"),
    ({"llama.rope.scaling.factor": 4.0, "llama.rope.scaling.attn_factor": 0.5}, "without YaRN"),
    ({"llama.rope.scaling.type": "longrope"}, "'longrope' is not covered"),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 0.5}, "YaRN factor 0.5 below 1"),
    ({"llama.rope.scaling.type": "dynamic"}, "'dynamic' is not covered"),
])
def test_gguf_rope_scaling_config_json_cannot_say_is_refused(kv: dict[str, object], word: str) -> None:
    from modelstore.converters import archs
    from modelstore.converters.errors import ConversionUnsupported

    with pytest.raises(ConversionUnsupported, match=word):
        archs.hf_config(archs.LLAMA, {**_GGUF_LLAMA, **kv}, set(), "float16")


def test_rope_scaling_transformers_phi3_cannot_take_is_refused() -> None:
    from modelstore.converters import archs
    from modelstore.converters.errors import ConversionUnsupported

    kv = {k.replace("llama.", "phi3."): v for k, v in _GGUF_LLAMA.items()}
    assert "rope_scaling" not in archs.hf_config(archs.PHI3, kv, set(), "float16")
    with pytest.raises(ConversionUnsupported, match="phi3 takes only longrope rope scaling, not the linear"):
        archs.hf_config(archs.PHI3, {**kv, "phi3.rope.scale_linear": 2.0}, set(), "float16")


_HF_QWEN2 = {"model_type": "qwen2", "num_attention_heads": 4, "hidden_size": 64, "num_hidden_layers": 2,
             "intermediate_size": 128, "max_position_embeddings": 128}
_YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}


@pytest.mark.parametrize(("rope", "want"), [
    (_YARN, {"type": "yarn", "factor": 4.0, "original_context_length": 32}),
    # transformers' defaults, said explicitly; no original context: max_position_embeddings
    ({"rope_type": "yarn", "factor": 4.0, "beta_fast": 32, "beta_slow": 1.0, "truncate": True},
     {"type": "yarn", "factor": 4.0, "original_context_length": 128}),
    # the attention magnitude llama.cpp would not give by itself: its attn_factor multiplies 1 + 0.1 ln 4
    ({**_YARN, "attention_factor": 0.8}, {"type": "yarn", "factor": 4.0, "original_context_length": 32,
                                          "attn_factor": pytest.approx(0.8 / (1 + 0.1 * np.log(4.0)), rel=1e-6)}),
    ({**_YARN, "mscale": 1.0, "mscale_all_dim": 0.5},
     {"type": "yarn", "factor": 4.0, "original_context_length": 32,
      "attn_factor": pytest.approx((1 + 0.1 * np.log(4.0)) / (1 + 0.05 * np.log(4.0)) / (1 + 0.1 * np.log(4.0)),
                                   rel=1e-6)}),
])
def test_yarn_reaches_the_gguf_keys_llama_cpp_reads(rope: dict[str, object], want: dict[str, object]) -> None:
    from modelstore.converters import archs

    writer = gguf.GGUFWriter(None, "qwen2")
    archs.gguf_model_keys(writer, {**_HF_QWEN2, "rope_scaling": rope})
    keys = {k.removeprefix("qwen2.rope.scaling."): v.value for k, v in writer.kv_data[0].items()
            if k.startswith("qwen2.rope.scaling.")}
    assert keys == {**want, "type": "yarn"}


@pytest.mark.parametrize(("rope", "word"), [
    ({**_YARN, "beta_fast": 8.0}, "YaRN beta_fast 8: llama.cpp reads no beta_fast for qwen2 and runs it with 32"),
    ({**_YARN, "beta_slow": 2.0}, "YaRN beta_slow 2: llama.cpp reads no beta_slow"),
    ({**_YARN, "truncate": False}, "truncate false"),
    ({**_YARN, "truncate": None}, "truncate false"),
    ({**_YARN, "factor": 0.5}, "YaRN factor 0.5 below 1"),
])
def test_yarn_llama_cpp_cannot_run_alike_is_refused(rope: dict[str, object], word: str) -> None:
    from modelstore.converters import archs
    from modelstore.converters.errors import ConversionUnsupported

    with pytest.raises(ConversionUnsupported, match=word):
        archs.gguf_model_keys(gguf.GGUFWriter(None, "qwen2"), {**_HF_QWEN2, "rope_scaling": rope})


def test_a_gguf_key_of_the_wrong_type_is_refused_with_the_reason() -> None:
    from modelstore.converters import archs
    from modelstore.converters.errors import ConversionUnsupported

    kv = {"llama.embedding_length": 64, "llama.attention.head_count": 4, "llama.feed_forward_length": 128,
          "llama.block_count": 2, "llama.context_length": "long"}
    with pytest.raises(ConversionUnsupported, match="cannot use"):
        archs.hf_config(archs.LLAMA, kv, set(), "float16")


def test_converted_files_are_never_taken_for_stored_ones(store: Store, hf_folder: Path, models: Path) -> None:
    """A GGUF's safetensors rendition brings generated config and tokenizer files: they are not the
    model's own (store/by-model shows only what it stores). A stored file whose bytes equal another
    model's converted file stays that model's own file in every view."""
    gguf_path = write_tiny_llama_gguf(models / "g.gguf")
    add_local(store, gguf_path, name="g")
    assert plan_conversions(store, "g", "F16").files  # a safetensors repo made from the GGUF
    add_local(store, hf_folder, name="tiny")
    converted = plan_conversions(store, "tiny", "F16").files["tiny-F16.gguf"]
    copy = models / "copy" / "copy.gguf"
    copy.parent.mkdir()
    copy.write_bytes(converted_bytes(store, converted))
    add_local(store, copy, name="zz-copy")  # after "tiny": its converted record is seen first

    snap = take_snapshot(store.catalog, str(store.objects.root))
    tree = render_root(snap)

    def paths(view: str, prefix: str) -> set[str]:
        out: set[str] = set()

        def walk(node: object, at: str) -> None:
            for name, child in node.children.items():  # type: ignore[attr-defined]
                path = f"{at}/{name}" if at else name
                if hasattr(child, "children"):
                    walk(child, path)
                elif path.startswith(prefix):
                    out.add(path)
        walk(tree.children[view], "")
        return out

    assert paths("store", "by-model/g/") == {"by-model/g/g.gguf"}
    assert paths("store", "by-model/zz-copy/") == {"by-model/zz-copy/copy.gguf"}
    copyconv = next(m for m in snap.models if m.name == "zz-copy")
    assert snap.conversion(copyconv, "copy.gguf") is None
    # read as it is stored (blob extents), not converted again through the other model's recipe
    assert all(isinstance(piece, Extent) for piece in snap.file(copyconv.files["copy.gguf"]).recipe)
    hf = paths("huggingface", "models--local--zz-copy/snapshots/")
    assert [p.rsplit("/", 1)[1] for p in hf] == ["copy.gguf"]
    shown = {r.view: r for r in renditions(snap, copyconv)}
    assert shown["huggingface"].converted is None


def test_odd_configs_and_tokenizers_are_reasons_not_crashes(cli, models: Path) -> None:
    """A config.json or tokenizer.json a converter cannot use: add succeeds and show gives the
    reason, with no traceback and no "please report this" (it is the model's files, not a bug)."""
    odd_heads = write_hf_model(models / "odd-heads", hidden=60, heads=4, kv_heads=2)  # head size 15
    no_heads = write_hf_model(models / "no-heads")
    config = json.loads((no_heads / "config.json").read_text())
    config["num_attention_heads"] = 0
    (no_heads / "config.json").write_text(json.dumps(config))
    bad_tok = write_hf_model(models / "bad-tok")
    tok = json.loads((bad_tok / "tokenizer.json").read_text())
    tok["model"] = "not a tokenizer model"
    (bad_tok / "tokenizer.json").write_text(json.dumps(tok))
    expected = {"odd-heads": "head size of 15", "no-heads": "config.json", "bad-tok": "tokenizer files"}
    for name, folder in (("odd-heads", odd_heads), ("no-heads", no_heads), ("bad-tok", bad_tok)):
        r = cli("add", folder, "--name", name)
        assert r.code == 0 and "Traceback" not in r.err, r.err
        views = {v["view"]: v for v in cli("show", name, "--json").json()["views"]}
        reason = views["llamacpp"]["reason"]
        assert expected[name] in reason and "please report" not in reason, reason
        assert cli("convert", name).code == 0


def test_a_conversion_failing_while_recorded_is_a_reason(store: Store, hf_folder: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning runs each derived piece once to hash the file: a failure there (a shape the plan
    did not foresee) leaves that rendition out, with the reason, instead of failing the add."""
    add_local(store, hf_folder, name="tiny")

    def failing(op: dict, length: int, read: object) -> bytes:
        raise ValueError("cannot reshape array of size 960 into shape (4,2,15,64)")

    monkeypatch.setattr(tensorops, "run", failing)
    result = plan_conversions(store, "tiny", "F16", force=True)
    assert result.files == {} and result.plans == []
    assert "cannot reshape" in result.unsupported["gguf"]
    with store.catalog.read() as r:
        assert r.conversions("tiny")["blobs"] == []  # the failed plan's header is owned by nobody: gc takes it


def test_convert_of_a_model_removed_meanwhile_says_so(cli, hf_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rm` while `convert` plans: the advice is not to run convert again (it would fail), and
    the exit status is not found."""
    from modelstore.converters import planner

    assert cli("add", hf_folder, "--name", "tiny", "--no-convert").code == 0
    plan, make = planner.plan_conversions, planner.make_plans

    def plan_while_removed(store: Store, name: str, *args: object, **kwargs: object) -> object:
        def make_then_rm(*a: object, **k: object) -> object:
            plans = make(*a, **k)
            store.remove(name)  # as `modelstore rm` in another process
            return plans

        monkeypatch.setattr(planner, "make_plans", make_then_rm)
        return plan(store, name, *args, **kwargs)

    monkeypatch.setattr(planner, "plan_conversions", plan_while_removed)
    r = cli("convert", "tiny")
    assert r.code == 3
    assert r.err.strip() == "modelstore: error: tiny was removed while its conversions were planned"

    # --all: the one removed meanwhile is a warning, and the others are planned
    assert cli("add", hf_folder, "--name", "a-keep", "--no-convert").code == 0
    assert cli("add", hf_folder, "--name", "tiny", "--no-convert").code == 0
    monkeypatch.setattr(planner, "make_plans", make)
    gone = {"tiny"}

    def remove_tiny(store: Store, name: str, *args: object, **kwargs: object) -> object:
        return plan_while_removed(store, name, *args, **kwargs) if name in gone else plan(store, name, *args, **kwargs)

    monkeypatch.setattr(planner, "plan_conversions", remove_tiny)
    r = cli("convert", "--all", "--json")
    assert r.code == 0, r.err
    assert [c["model"] for c in r.json()] == ["a-keep"]
    assert "warning: tiny was removed while its conversions were planned" in r.err


def test_convert_keeps_the_type_a_model_was_planned_with(cli, hf_folder: Path) -> None:
    assert cli("add", hf_folder, "--name", "tiny", "--gguf-type", "Q8_0").code == 0
    r = cli("convert", "tiny", "--json")
    assert r.code == 0
    assert [f for f in r.json()[0]["files"]] == ["tiny-Q8_0.gguf"]
    assert list(cli("convert", "tiny", "--gguf-type", "F16", "--json").json()[0]["files"]) == ["tiny-F16.gguf"]


@pytest.mark.corrupts_store
def test_fsck_conversions_blames_a_damaged_source_blob_not_the_converter(cli, home: Path, hf_folder: Path) -> None:
    """A flipped byte in the source safetensors changes what a conversion gives too: fsck
    --conversions checks the source bytes first and reports the blob, not "run convert" (which
    would re-plan from the damaged bytes and hide the damage)."""
    assert cli("add", hf_folder, "--name", "tiny").code == 0
    source = max((p for p in (home / "objects").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    source.chmod(0o644)
    with open(source, "r+b") as f:
        f.seek(source.stat().st_size - 100)
        f.write(b"\x55\xaa")
    r = cli("fsck", "--conversions", "--json")
    assert r.code == 1
    problems = r.json()["problems"]
    assert any("no longer hashes" in p for p in problems) and not any("modelstore convert" in p for p in problems)


def test_a_convert_waiting_for_gc_says_so(cli, home: Path, hf_folder: Path) -> None:
    import subprocess
    import sys

    from modelstore.store.locks import store_lock

    assert cli("add", hf_folder, "--name", "m", "--no-convert").code == 0
    with store_lock(home / "store.lock", exclusive=True):  # as a running gc holds it
        proc = subprocess.Popen([sys.executable, "-m", "modelstore.cli", "--home", str(home), "convert", "m", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        said: list[str] = []
        reader = threading.Thread(target=lambda: said.append(proc.stderr.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(30)  # a convert that waits without a word says nothing here, and the lock is let go
        assert said and "waiting for a running gc to finish" in said[0], said
        assert proc.poll() is None
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    planned = json.loads(out)[0]
    assert planned["model"] == "m" and [p for p in planned["files"] if p.endswith(".gguf")], planned


@pytest.mark.parametrize(("key", "value", "word"), [
    ("llama.rope.freq_base", float("nan"), "llama.rope.freq_base is nan"),
    ("llama.attention.layer_norm_rms_epsilon", float("inf"), "layer_norm_rms_epsilon is inf"),
    ("tokenizer.ggml.padding_token_id", float("nan"), "config.json cannot be written: pad_token_id"),
    ("llama.context_length", float("inf"), "cannot convert float infinity")])
def test_a_gguf_value_json_cannot_say_refuses_the_safetensors_rendition(store: Store, models: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         key: str, value: float, word: str) -> None:
    """json.dumps writes NaN and Infinity, which strict parsers (serde_json in mistral.rs, Go)
    refuse: config.json said `"rope_theta": NaN`. Now the rendition is refused, with the key."""
    set_value = gguf.GGUFWriter.add_name

    def odd_value(self: gguf.GGUFWriter, name: str) -> None:
        set_value(self, name)
        self.kv_data[0][key] = gguf.GGUFValue(value, gguf.GGUFValueType.FLOAT32)
    monkeypatch.setattr(gguf.GGUFWriter, "add_name", odd_value)
    if key in ("llama.rope.freq_base", "tokenizer.ggml.padding_token_id"):
        add_local(store, write_tiny_llama_gguf(models / "odd.gguf"), name="odd")
    else:  # written by the synth after add_name: replace it there
        add = {"llama.attention.layer_norm_rms_epsilon": "add_layer_norm_rms_eps",
               "llama.context_length": "add_context_length"}[key]
        monkeypatch.setattr(gguf.GGUFWriter, add, lambda self, v: None)
        add_local(store, write_tiny_llama_gguf(models / "odd.gguf"), name="odd")
    result = plan_conversions(store, "odd")
    reason = result.unsupported.get("safetensors", "")
    assert not any(p["target"] == "safetensors" for p in result.plans), result.plans
    assert word in reason and "please report" not in reason, reason


def test_generated_json_is_finite_or_refused() -> None:
    from modelstore.store import jsontext

    assert jsontext.non_finite({"a": [1.0, {"b": float("-inf")}]}) == "a[1].b"
    assert jsontext.non_finite({"a": [1, "nan", True, None, 2.5]}) is None
    with pytest.raises(ValueError, match="rope_theta"):
        jsontext.dumps_finite({"rope_theta": float("nan")})
    from modelstore.converters.plans import json_file

    assert json_file({"x": 1.5}, "config.json") == b'{\n  "x": 1.5\n}\n'
