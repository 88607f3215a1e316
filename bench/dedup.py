"""How many bytes each dedup scheme stores for the same generated corpus of model files, and how long
it takes, all measured in the same run on the same files.

    python bench/dedup.py                          # default scale; table, PASS/MISS, bench/dedup.png
    python bench/dedup.py --scale 1 --markdown     # every layer of the real model
    python bench/dedup.py --arch llama-3.2-1b --scale 0.25 --json

The corpus is what a disk that has run a few runtimes holds: a base model in HF safetensors, an
instruct fine-tune that changed a fraction of its tensors, the same base sharded another way beside
a consolidated.safetensors, GGUF F16 and Q8_0 exports, and the Q8_0 GGUF again in an Ollama folder,
an LM Studio folder and an HF cache. Layer shapes are a real model's (fewer layers with --scale
below 1), weights are random. Schemes compared on each mix of it:

- logical bytes: every file as it lies;
- whole-file dedup: each distinct file once (Ollama's blobs, the HF cache);
- fixed 64 KiB chunks, each distinct chunk once;
- content-defined chunks of 64 KiB on average (FastCDC, as Hugging Face's Xet storage chunks);
- modelstore: a real `add` (--copy) of every model into a fresh store: bytes under objects/ plus
  the LMDB catalog;
- the oracle: each distinct header and tensor once, from the headers (not a scheme: the floor).

Chunking schemes write their distinct chunks to one pack file, whole-file dedup copies each
distinct file; all fsync, as `add` does. Their metadata is estimated at 40 bytes per stored unit
(a 32-byte digest and a location) and 32 bytes per reference from a file to a unit. `modelstore
scan` of each mix is checked against the bytes `add` stored. Targets are reported as PASS/MISS,
never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import shutil
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import blake3
import gguf
import numpy as np

# `common` is bench/common.py, beside this file
from common import cpu_model, format_table, fs_type, git_commit, mem_total_gib, rmtree, work_dir
from modelstore.store import ImportMode, Store
from modelstore.store.errors import BadModelFile
from modelstore.store.ingest import MIN_SHARED_TENSOR
from modelstore.store.scan import scan, walk_folder
from modelstore.store.scancache import ScanCache
from modelstore.store.sources.local import add_local
from modelstore.store.tensors import read_weights_header

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CHUNK = 64 << 10
CDC_MIN, CDC_MAX = 8 << 10, 128 << 10
READ = 8 << 20
INDEX_ENTRY = 40  # bytes per stored unit in a chunk or file index: digest + location
REFERENCE = 32  # bytes per reference from a file's recipe to a unit
ORACLE_SLACK = 0.01
VERDICT = {True: "PASS", False: "MISS", None: "INFO"}
COMMIT = "9f3c1d2e4b5a69788796a5b4c3d2e1f00f1e2d3c"


# -- the model --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arch:
    """A llama-family checkpoint's shapes, as in its config.json."""

    name: str
    repo: str
    vocab: int
    hidden: int
    ff: int
    layers: int
    heads: int
    kv_heads: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def scaled(self, scale: float) -> Arch:
        return replace(self, layers=max(1, round(self.layers * scale)))


ARCHS = {a.name: a for a in (
    Arch("smollm2-135m", "HuggingFaceTB/SmolLM2-135M", 49152, 576, 1536, 30, 9, 3, True),
    Arch("smollm2-360m", "HuggingFaceTB/SmolLM2-360M", 49152, 960, 2560, 32, 15, 5, True),
    Arch("llama-3.2-1b", "meta-llama/Llama-3.2-1B", 128256, 2048, 8192, 16, 32, 8, True),
    Arch("llama-3.1-8b", "meta-llama/Llama-3.1-8B", 128256, 4096, 14336, 32, 32, 8, False),
)}


@dataclass(frozen=True)
class TensorSpec:
    hf: str  # transformers' name
    gguf: str  # llama.cpp's name
    meta: str  # the original (consolidated.safetensors) name
    shape: tuple[int, ...]
    rope_heads: int = 0  # q/k projections: the head count their rows are permuted over

    @property
    def is_norm(self) -> bool:
        return len(self.shape) == 1

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))


def tensor_specs(a: Arch) -> list[TensorSpec]:
    kv = a.kv_heads * a.head_dim
    specs = [TensorSpec("model.embed_tokens.weight", "token_embd.weight", "tok_embeddings.weight", (a.vocab, a.hidden))]
    for i in range(a.layers):
        hf, g, m = f"model.layers.{i}.", f"blk.{i}.", f"layers.{i}."
        specs += [
            TensorSpec(hf + "input_layernorm.weight", g + "attn_norm.weight", m + "attention_norm.weight", (a.hidden,)),
            TensorSpec(hf + "self_attn.q_proj.weight", g + "attn_q.weight", m + "attention.wq.weight",
                       (a.hidden, a.hidden), a.heads),
            TensorSpec(hf + "self_attn.k_proj.weight", g + "attn_k.weight", m + "attention.wk.weight",
                       (kv, a.hidden), a.kv_heads),
            TensorSpec(hf + "self_attn.v_proj.weight", g + "attn_v.weight", m + "attention.wv.weight", (kv, a.hidden)),
            TensorSpec(hf + "self_attn.o_proj.weight", g + "attn_output.weight", m + "attention.wo.weight",
                       (a.hidden, a.hidden)),
            TensorSpec(hf + "post_attention_layernorm.weight", g + "ffn_norm.weight", m + "ffn_norm.weight",
                       (a.hidden,)),
            TensorSpec(hf + "mlp.gate_proj.weight", g + "ffn_gate.weight", m + "feed_forward.w1.weight",
                       (a.ff, a.hidden)),
            TensorSpec(hf + "mlp.up_proj.weight", g + "ffn_up.weight", m + "feed_forward.w3.weight", (a.ff, a.hidden)),
            TensorSpec(hf + "mlp.down_proj.weight", g + "ffn_down.weight", m + "feed_forward.w2.weight",
                       (a.hidden, a.ff)),
        ]
    specs.append(TensorSpec("model.norm.weight", "output_norm.weight", "norm.weight", (a.hidden,)))
    if not a.tied:
        specs.append(TensorSpec("lm_head.weight", "output.weight", "output.weight", (a.vocab, a.hidden)))
    return specs


@dataclass(frozen=True)
class Weights:
    """Random F16 weights, the same for the same (seed, tensor) whatever file they are written to.
    Tensors in `changed` come from `changed_seed` instead: a fine-tune that touched only them."""

    seed: int = 1
    changed: frozenset[str] = frozenset()
    changed_seed: int = 2

    def hf(self, spec: TensorSpec) -> np.ndarray:
        seed = self.changed_seed if spec.hf in self.changed else self.seed
        rng = np.random.default_rng([seed, zlib.crc32(spec.hf.encode())])
        if spec.is_norm:
            return (1 + 0.05 * rng.standard_normal(spec.shape)).astype(np.float16)
        # Random sign and mantissa, exponent 2^-7..2^-4: magnitudes of trained weights, no run of
        # repeated bytes in any format (a wider range quantizes to runs of zeros in Q8_0), and ten
        # times faster to make than normal samples.
        bits = rng.integers(0, 1 << 16, size=spec.shape, dtype=np.uint16)
        exponent = (bits >> 10 & 0b11) + 8
        return (bits & 0x83FF | exponent << 10).view(np.float16)

    def meta(self, spec: TensorSpec) -> np.ndarray:
        """In the original layout: q/k rows interleaved per head (what transformers' conversion
        permuted into halves, and llama.cpp's converter permutes back)."""
        w = self.hf(spec)
        if not spec.rope_heads:
            return w
        rows, cols = w.shape
        return w.reshape(spec.rope_heads, 2, rows // spec.rope_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


# -- writers ----------------------------------------------------------------------------------------

def write_safetensors(path: Path, tensors: list[tuple[str, TensorSpec]], make: Callable[[TensorSpec], np.ndarray],
                      metadata: dict[str, str]) -> None:
    """A safetensors file written tensor by tensor, names in sorted order as the reference writer
    lays out tensors of one dtype."""
    ordered = sorted(tensors, key=lambda t: t[0])
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, spec in ordered:
        header[name] = {"dtype": "F16", "shape": list(spec.shape), "data_offsets": [offset, offset + 2 * spec.numel]}
        offset += 2 * spec.numel
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for _, spec in ordered:
            make(spec).tofile(f)


def fake_vocab(a: Arch) -> tuple[list[str], list[str]]:
    """Distinct tokens and merges, none repeating a pattern (a periodic list would dedup by chunks
    as no real vocabulary does)."""
    tokens = [f"t{i:x}" for i in range(a.vocab)]
    merges = [f"t{i:x} t{i * 7919 % a.vocab:x}" for i in range(a.vocab - 256)]
    return tokens, merges


def write_gguf(path: Path, a: Arch, specs: list[TensorSpec], weights: Weights, quant: str) -> None:
    """What llama.cpp's converter writes: norms in F32, q/k in the original layout, the other
    weights in F16 or Q8_0; a BPE vocabulary in the header."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(a.repo.split("/")[1])
    w.add_context_length(8192)
    w.add_embedding_length(a.hidden)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.ff)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_freq_base(100000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(a.vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if quant == "F16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    tokens, merges = fake_vocab(a)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
    w.add_token_merges(merges)
    ordered = sorted(specs, key=lambda s: (not s.gguf.startswith("token_embd"), s.gguf.startswith("output"),
                                           _layer(s.gguf), s.gguf))
    q8 = gguf.GGMLQuantizationType.Q8_0
    block, block_bytes = gguf.GGML_QUANT_SIZES[q8]
    for s in ordered:
        if s.is_norm:
            w.add_tensor_info(s.gguf, s.shape, np.dtype(np.float32), 4 * s.numel)
        elif quant == "F16":
            w.add_tensor_info(s.gguf, s.shape, np.dtype(np.float16), 2 * s.numel)
        else:
            byte_shape = (*s.shape[:-1], s.shape[-1] // block * block_bytes)
            w.add_tensor_info(s.gguf, byte_shape, np.dtype(np.uint8), s.numel // block * block_bytes, raw_dtype=q8)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for s in ordered:
        data = weights.meta(s)
        if s.is_norm:
            w.write_tensor_data(data.astype(np.float32))
        elif quant == "F16":
            w.write_tensor_data(data)
        else:
            w.write_tensor_data(gguf.quants.quantize(data.astype(np.float32), q8))
    w.close()


def _layer(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blk.") else -1


def write_hf_text_files(folder: Path, a: Arch, chat: bool) -> None:
    """config.json, the tokenizer and a README: identical across repos of one base, as on the Hub."""
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.hidden,
              "intermediate_size": a.ff, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
              "num_key_value_heads": a.kv_heads, "vocab_size": a.vocab, "rms_norm_eps": 1e-5,
              "rope_theta": 100000.0, "tie_word_embeddings": a.tied, "torch_dtype": "float16"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tokens, merges = fake_vocab(a)
    (folder / "tokenizer.json").write_text(json.dumps(
        {"version": "1.0", "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges}}))
    tok_config: dict[str, object] = {"model_max_length": 8192}
    if chat:
        tok_config["chat_template"] = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    (folder / "README.md").write_text(f"---\nlicense: apache-2.0\nbase_model: {a.repo}\n---\n")


# -- the corpus -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Corpus:
    pieces: dict[str, Path]  # model name -> the folder (or file) `modelstore add` takes
    changed: tuple[str, ...]  # tensors the fine-tune changed

    def files(self, names: list[str]) -> list[Path]:
        """The distinct files (inodes) of these pieces, as `scan` finds them."""
        seen: dict[tuple[int, int], Path] = {}
        for name in names:
            found, _ = walk_folder(self.pieces[name])
            for f in found:
                seen.setdefault((f.key.dev, f.key.ino), Path(f.key.realpath))
        return list(seen.values())


def build_corpus(root: Path, a: Arch, changed_fraction: float) -> Corpus:
    specs = tensor_specs(a)
    rng = np.random.default_rng(7)
    n_changed = round(changed_fraction * len(specs))
    changed = tuple(sorted(rng.choice([s.hf for s in specs], size=n_changed, replace=False))) if n_changed else ()
    base_w, tuned_w = Weights(), Weights(changed=frozenset(changed))
    model = a.repo.split("/")[1]

    base = root / "hf" / model
    base.mkdir(parents=True)
    write_hf_text_files(base, a, chat=False)
    write_safetensors(base / "model.safetensors", [(s.hf, s) for s in specs], base_w.hf, {"format": "pt"})

    instruct = root / "hf" / f"{model}-Instruct"
    instruct.mkdir(parents=True)
    write_hf_text_files(instruct, a, chat=True)
    write_safetensors(instruct / "model.safetensors", [(s.hf, s) for s in specs], tuned_w.hf, {"format": "pt"})

    sharded = root / "hf" / f"{model}-sharded"
    sharded.mkdir(parents=True)
    write_hf_text_files(sharded, a, chat=False)
    write_shards(sharded, specs, base_w, shards=2)
    write_safetensors(sharded / "consolidated.safetensors", [(s.meta, s) for s in specs], base_w.meta, {})
    (sharded / "params.json").write_text(json.dumps({"dim": a.hidden, "n_layers": a.layers, "n_heads": a.heads,
                                                     "n_kv_heads": a.kv_heads, "vocab_size": a.vocab}))

    exports = root / "gguf" / f"{model}-GGUF"
    exports.mkdir(parents=True)
    f16, q8 = exports / f"{model}-F16.gguf", exports / f"{model}-Q8_0.gguf"
    write_gguf(f16, a, specs, base_w, "F16")
    write_gguf(q8, a, specs, base_w, "Q8_0")

    ollama = place_in_ollama(root / "ollama" / "models", q8, model.lower())
    lmstudio = root / "lmstudio" / "models" / "bench" / f"{model}-GGUF"
    lmstudio.mkdir(parents=True)
    shutil.copyfile(q8, lmstudio / q8.name)
    hf_cache = place_in_hf_cache(root / "hf-cache" / "hub", q8, f"bench/{model}-GGUF")
    pieces = {"base": base, "instruct": instruct, "base-sharded": sharded, "exports": exports,
              "ollama": ollama, "lmstudio": lmstudio, "hf-cache": hf_cache}
    return Corpus(pieces, changed)


def write_shards(folder: Path, specs: list[TensorSpec], weights: Weights, shards: int) -> None:
    """model-0000k-of-0000N.safetensors and the index, split by size as transformers does."""
    names = sorted(specs, key=lambda s: s.hf)
    per_shard = -(-sum(2 * s.numel for s in names) // shards)
    groups: list[list[TensorSpec]] = [[]]
    size = 0
    for s in names:
        if size + 2 * s.numel > per_shard and groups[-1] and len(groups) < shards:
            groups.append([])
            size = 0
        groups[-1].append(s)
        size += 2 * s.numel
    weight_map = {}
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(folder / fname, [(s.hf, s) for s in group], weights.hf, {"format": "pt"})
        weight_map.update({s.hf: fname for s in group})
    index = {"metadata": {"total_size": sum(2 * s.numel for s in specs)}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def place_in_ollama(models: Path, gguf_file: Path, model: str) -> Path:
    blobs = models / "blobs"
    blobs.mkdir(parents=True)
    digest = sha256_of(gguf_file)
    shutil.copyfile(gguf_file, blobs / f"sha256-{digest}")
    layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
               "size": gguf_file.stat().st_size}]
    for media, text in (("template", "{{ .Prompt }}"), ("params", '{"stop":["<|im_end|>"]}')):
        data = text.encode()
        d = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{d}").write_bytes(data)
        layers.append({"mediaType": f"application/vnd.ollama.image.{media}", "digest": f"sha256:{d}",
                       "size": len(data)})
    config = json.dumps({"model_format": "gguf", "model_family": "llama", "file_type": "Q8_0"}).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    (blobs / f"sha256-{config_digest}").write_bytes(config)
    manifest = models / "manifests" / "registry.ollama.ai" / "library" / model / "q8_0"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": f"sha256:{config_digest}", "size": len(config)}, "layers": layers}))
    return models


def place_in_hf_cache(hub: Path, gguf_file: Path, repo_id: str) -> Path:
    """blobs/<sha256> and snapshots/<commit>/<file> -> ../../blobs/<sha256>; returns the snapshot,
    which is what a runtime (and `add`) reads."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    digest = sha256_of(gguf_file)
    (repo / "blobs").mkdir(parents=True)
    shutil.copyfile(gguf_file, repo / "blobs" / digest)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / gguf_file.name).symlink_to(f"../../blobs/{digest}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


MIXES = {
    "fine-tune": ["base", "instruct"],
    "resharded": ["base", "base-sharded"],
    "exports": ["base", "exports"],
    "runtime copies": ["ollama", "lmstudio", "hf-cache"],
    "everything": ["base", "instruct", "base-sharded", "exports", "ollama", "lmstudio", "hf-cache"],
}


# -- the schemes ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stored:
    data: int
    metadata: int
    units: int = 0  # chunks or files stored

    @property
    def total(self) -> int:
        return self.data + self.metadata


class UnitStore:
    """Distinct units (chunks) appended to one pack file, by BLAKE3."""

    def __init__(self, pack: BinaryIO) -> None:
        self.pack = pack
        self.seen: set[bytes] = set()
        self.data = self.references = 0

    def put(self, unit: memoryview | bytes) -> None:
        self.references += 1
        digest = blake3.blake3(unit).digest()
        if digest not in self.seen:
            self.seen.add(digest)
            self.pack.write(unit)
            self.data += len(unit)

    def finish(self) -> Stored:
        self.pack.flush()
        os.fsync(self.pack.fileno())
        return Stored(self.data, INDEX_ENTRY * len(self.seen) + REFERENCE * self.references, len(self.seen))


def whole_file(files: list[Path], pieces: dict[str, Path], into: Path) -> Stored:
    """SHA-256 of each file (the name Ollama and the HF cache give it); a copy of each new one."""
    seen: set[str] = set()
    data = 0
    for f in files:
        digest = sha256_of(f)
        if digest in seen:
            continue
        seen.add(digest)
        shutil.copyfile(f, into / digest)
        with open(into / digest, "rb") as out:
            os.fsync(out.fileno())
        data += f.stat().st_size
    return Stored(data, INDEX_ENTRY * len(seen) + REFERENCE * len(files), len(seen))


def fixed_chunks(files: list[Path], pieces: dict[str, Path], into: Path) -> Stored:
    buf = bytearray(READ)
    with open(into / "pack", "wb") as pack:
        store = UnitStore(pack)
        for f in files:
            with open(f, "rb", buffering=0) as src:
                while n := src.readinto(buf):
                    view = memoryview(buf)[:n]
                    for start in range(0, n, CHUNK):
                        store.put(view[start:start + CHUNK])
        return store.finish()


def cdc_chunks(files: list[Path], pieces: dict[str, Path], into: Path) -> Stored:
    from pyfastcdc import FastCDC

    # pyfastcdc's mean chunk is avg_size + min_size: 56 + 8 = 64 KiB, between 8 and 128 KiB as in Xet.
    chunker = FastCDC(CHUNK - CDC_MIN, min_size=CDC_MIN, max_size=CDC_MAX)
    with open(into / "pack", "wb") as pack:
        store = UnitStore(pack)
        for f in files:
            for chunk in chunker.cut_file(str(f)):
                store.put(chunk.data)
        return store.finish()


def modelstore_add(files: list[Path], pieces: dict[str, Path], into: Path) -> Stored:
    """Each piece added as a model of its own, as `modelstore add PATH --name NAME` does."""
    home = into / "home"
    with Store(home) as store:
        for name, path in pieces.items():
            add_local(store, path, name=name, mode=ImportMode.COPY)
    data = sum(p.stat().st_size for p in (home / "objects").rglob("*") if p.is_file())
    catalog = sum(p.stat().st_size for p in (home / "catalog").rglob("*") if p.is_file())
    return Stored(data, catalog, sum(1 for p in (home / "objects").rglob("*") if p.is_file()))


Scheme = Callable[[list[Path], dict[str, Path], Path], Stored]  # (files, pieces, store folder)
SCHEMES: dict[str, Scheme] = {
    "whole-file": whole_file,
    "fixed 64 KiB": fixed_chunks,
    "CDC 64 KiB": cdc_chunks,
    "modelstore": modelstore_add,
}
CDC, MODELSTORE = "CDC 64 KiB", "modelstore"


def oracle(files: list[Path]) -> int:
    """Each distinct header, tensor and non-weights file once; padding not at all."""
    units: dict[bytes, int] = {}
    for f in files:
        try:
            header = read_weights_header(f)
        except BadModelFile:
            header = None
        with open(f, "rb") as src, mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            spans = [(0, header.data_start)] + [(t.offset, t.end) for t in header.tensors] if header else [(0, len(mm))]
            for start, end in spans:
                units[blake3.blake3(mm[start:end], max_threads=blake3.blake3.AUTO).digest()] = end - start
    return sum(units.values())


# -- measuring --------------------------------------------------------------------------------------

@dataclass
class Result:
    mix: str
    scheme: str
    logical: int
    stored: Stored
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def measure(corpus: Corpus, mixes: list[str], repeat: int, work: Path
            ) -> tuple[list[Result], dict[str, int], dict[str, int], dict[str, float]]:
    """Every scheme on every mix, `repeat` times; also the oracle, what `scan` predicts, and the
    median seconds of a SHA-256 of each of the mix's files (what Xet's client, hf_xet, computes of
    every file it uploads: the commit's LFS oid)."""
    results: dict[tuple[str, str], Result] = {}
    sha_seconds: dict[str, list[float]] = {}
    floors: dict[str, int] = {}
    predicted: dict[str, int] = {}
    hashes = ScanCache(None, MIN_SHARED_TENSOR)  # each file hashed once for all mixes
    for mix in mixes:
        files = corpus.files(MIXES[mix])
        floors[mix] = oracle(files)
        logical = sum(f.stat().st_size for f in files)
        pieces = {name: corpus.pieces[name] for name in MIXES[mix]}
        predicted[mix] = scan([(p, None) for p in pieces.values()], hashes).total.tensor_dedup_bytes
        for r in range(repeat):
            for scheme, ingest in SCHEMES.items():
                into = work / "stores" / scheme.replace(" ", "-")
                rmtree(into)
                into.mkdir(parents=True)
                os.sync()
                start = time.perf_counter()
                stored = ingest(files, pieces, into)
                seconds = time.perf_counter() - start
                result = results.setdefault((mix, scheme), Result(mix, scheme, logical, stored))
                if stored.data != result.stored.data:
                    raise SystemExit(f"{scheme} stored {stored.data} bytes of {mix}, then {result.stored.data}")
                result.seconds.append(seconds)
                print(f"  [{r + 1}/{repeat}] {mix}: {scheme} {seconds:.2f} s", file=sys.stderr)
                rmtree(into)
            start = time.perf_counter()
            for f in files:
                sha256_of(f)
            sha_seconds.setdefault(mix, []).append(time.perf_counter() - start)
    return list(results.values()), floors, predicted, {m: statistics.median(v) for m, v in sha_seconds.items()}


def rows(results: list[Result], floors: dict[str, int]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for mix in dict.fromkeys(r.mix for r in results):
        mine = [r for r in results if r.mix == mix]
        logical = mine[0].logical
        out.append(_row(mix, "logical", logical, logical, 0, floors[mix], None))
        out += [_row(mix, r.scheme, logical, r.stored.total, r.stored.metadata, floors[mix], r.median) for r in mine]
        out.append(_row(mix, "oracle", logical, floors[mix], 0, floors[mix], None))
    return out


def _row(mix: str, scheme: str, logical: int, stored: int, metadata: int, floor: int,
         seconds: float | None) -> dict[str, object]:
    return {"mix": mix, "scheme": scheme, "logical_bytes": logical, "stored_bytes": stored, "metadata_bytes": metadata,
            "stored_mib": round(stored / (1 << 20), 2), "metadata_kib": round(metadata / 1024, 1),
            "ratio": round(logical / stored, 3), "vs_oracle_pct": round(100 * (stored / floor - 1), 3),
            "seconds": None if seconds is None else round(seconds, 3),
            "gb_per_s": None if seconds is None else round(logical / 1e9 / seconds, 2)}


def targets(results: list[Result], floors: dict[str, int], predicted: dict[str, int],
            sha_seconds: dict[str, float]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for mix in dict.fromkeys(r.mix for r in results):
        by = {r.scheme: r for r in results if r.mix == mix}
        mine = by[MODELSTORE].stored
        out.append({"target": f"{mix}: `modelstore scan` predicts the bytes add stores under objects/",
                    "value": f"{predicted[mix]} vs {mine.data}", "met": predicted[mix] == mine.data})
        best = min((r for s, r in by.items() if s != MODELSTORE), key=lambda r: r.stored.total)
        gap = mine.total - best.stored.total
        out.append({"target": f"{mix}: modelstore <= best other scheme ({best.scheme})",
                    "value": f"{mine.total} vs {best.stored.total} bytes ({gap:+d}; data alone "
                             f"{mine.data - best.stored.data:+d})", "met": gap <= 0})
        over = mine.total / floors[mix] - 1
        out.append({"target": f"{mix}: modelstore within {ORACLE_SLACK:.0%} of the oracle",
                    "value": f"{100 * over:+.2f}%", "met": over <= ORACLE_SLACK})
    mine_s = sum(r.median for r in results if r.scheme == MODELSTORE)
    cdc_s = sum(r.median for r in results if r.scheme == CDC)
    out.append({"target": "modelstore ingests faster than CDC (all mixes)",
                "value": f"{mine_s:.2f} s vs {cdc_s:.2f} s ({mine_s / cdc_s:.2f}x)", "met": mine_s < cdc_s})
    sha_s = sum(sha_seconds.values())
    out.append({"target": "against CDC plus a SHA-256 of each file, as Xet's client computes for the commit "
                          "(not a target)",
                "value": f"{mine_s:.2f} s vs {cdc_s:.2f} + {sha_s:.2f} s ({mine_s / (cdc_s + sha_s):.2f}x)", "met": None})
    cdc = [r.stored for r in results if r.scheme == CDC]
    out.append({"target": "CDC mean stored chunk (not a target)",
                "value": f"{sum(s.data for s in cdc) / sum(s.units for s in cdc) / 1024:.1f} KiB", "met": None})
    return out


COLUMNS = [("mix", "mix"), ("scheme", "scheme"), ("stored_mib", "stored MiB"),
           ("metadata_kib", "of which metadata KiB"),
           ("ratio", "x smaller than logical"), ("vs_oracle_pct", "vs oracle %"), ("seconds", "median s"),
           ("gb_per_s", "GB/s")]


def chart(table: list[dict[str, object]], path: Path, title: str) -> None:
    """Left: stored bytes per scheme and mix, as a share of the logical bytes. Right: how far each
    scheme stays above the oracle, on a log scale, where the close ones can be told apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = list(dict.fromkeys(str(r["mix"]) for r in table))
    schemes = list(dict.fromkeys(str(r["scheme"]) for r in table))
    colors = dict(zip(schemes, plt.get_cmap("tab10").colors))
    cell = {(str(r["mix"]), str(r["scheme"])): r for r in table}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90, width_ratios=[3, 2])

    def bars(ax: Axes, shown: list[str], value: Callable[[dict[str, object]], float]) -> None:
        width = 0.8 / len(shown)
        for i, scheme in enumerate(shown):
            xs = [m + (i - (len(shown) - 1) / 2) * width for m in range(len(mixes))]
            ax.bar(xs, [value(cell[(mix, scheme)]) for mix in mixes], width, color=colors[scheme], label=scheme)
        ax.set_xticks(range(len(mixes)), [m.replace(" ", "\n") for m in mixes], fontsize=8)
        ax.grid(axis="y", alpha=0.3)

    bars(left, schemes, lambda r: 100 * int(r["stored_bytes"]) / int(r["logical_bytes"]))
    left.set_ylabel("stored, % of logical bytes")
    left.set_ylim(0, 105)
    compared = [s for s in schemes if s not in ("logical", "oracle")]
    bars(right, compared, lambda r: max(float(r["vs_oracle_pct"]), 0.01))
    right.set_yscale("log")
    right.set_ylabel("above the oracle, % (log)")
    fig.suptitle(title, fontsize=10)
    fig.legend(*left.get_legend_handles_labels(), loc="lower center", ncols=len(schemes), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)


# -- the run ----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--arch", choices=sorted(ARCHS), default="smollm2-135m", help="whose layer shapes [smollm2-135m]")
    p.add_argument("--scale", type=float, default=0.25,
                   help="fraction of the model's layers to write (1 = the whole model) [0.25]")
    p.add_argument("--changed", type=float, default=0.25,
                   help="fraction of tensors the instruct fine-tune changes [0.25]")
    p.add_argument("--mixes", default=",".join(MIXES), help=f"corpus mixes to measure [{','.join(MIXES)}]")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each scheme; the median is reported [3]")
    p.add_argument("--workdir", type=Path, help="folder to make the temp work dir in (not tmpfs) [/var/tmp]")
    p.add_argument("--chart", type=Path, default=Path(__file__).with_name("dedup.png"),
                   help="where to write the PNG chart [bench/dedup.png]")
    p.add_argument("--no-chart", action="store_true", help="write no chart")
    p.add_argument("--keep", action="store_true", help="keep the work dir (the corpus)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = p.parse_args(argv)
    args.mixes = [m.strip() for m in args.mixes.split(",") if m.strip()]
    unknown = set(args.mixes) - set(MIXES)
    if unknown:
        p.error(f"unknown mixes {sorted(unknown)}; choose from {','.join(MIXES)}")
    if args.repeat < 1 or not 0 < args.scale or not 0 <= args.changed <= 1:
        p.error("--repeat must be at least 1, --scale above 0, --changed between 0 and 1")
    return args


def describe(corpus: Corpus, a: Arch, args: argparse.Namespace, work: Path, seconds: float) -> dict[str, object]:
    sizes = {name: sum(f.stat().st_size for f in corpus.files([name])) for name in corpus.pieces}
    return {"arch": a.name, "layers": a.layers, "scale": args.scale, "changed_fraction": args.changed,
            "changed_tensors": len(corpus.changed), "piece_bytes": sizes, "generate_seconds": round(seconds, 1),
            "cpu": cpu_model(), "nproc": os.cpu_count(), "memory_gib": round(mem_total_gib(), 1),
            "filesystem": fs_type(work), "workdir": str(work), "modelstore": git_commit(),
            "python": sys.version.split()[0], "repeat": args.repeat,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def report(facts: dict[str, Any], table: list[dict[str, object]], goals: list[dict[str, object]],
           markdown: bool) -> str:
    sizes = ", ".join(f"{k} {v / (1 << 20):.0f} MiB" for k, v in facts["piece_bytes"].items())
    head = (f"corpus: {facts['arch']} shapes, {facts['layers']} layers (scale {facts['scale']}), fine-tune changed "
            f"{facts['changed_tensors']} tensors ({facts['changed_fraction']:.0%}); {sizes}; generated in "
            f"{facts['generate_seconds']} s\n"
            f"machine: {facts['cpu']}, {facts['nproc']} CPUs, {facts['memory_gib']} GiB RAM, {facts['filesystem']} at "
            f"{facts['workdir']}, Python {facts['python']}, modelstore {facts['modelstore']}; "
            f"median of {facts['repeat']}\n"
            f"load average: {facts['loadavg_start']} at start, {facts['loadavg_end']} at end\n")
    verdicts = "\n".join(f"{VERDICT[g['met']]}  {g['target']}: {g['value']}" for g in goals)
    return f"{head}\n{format_table(table, COLUMNS, markdown)}\n\n{verdicts}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    a = ARCHS[args.arch].scaled(args.scale)
    with work_dir(args.workdir, "modelstore-dedup-", args.keep) as work:
        start = time.perf_counter()
        corpus = build_corpus(work / "corpus", a, args.changed)
        facts = describe(corpus, a, args, work, time.perf_counter() - start)
        print(f"generated the corpus in {facts['generate_seconds']} s", file=sys.stderr)
        results, floors, predicted, sha_seconds = measure(corpus, args.mixes, args.repeat, work)
        facts["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        table, goals = rows(results, floors), targets(results, floors, predicted, sha_seconds)
        print(report(facts, table, goals, args.markdown))
        if not args.no_chart:
            chart(table, args.chart,
                  f"{a.name} x{a.layers} layers: bytes stored per scheme, data + metadata (lower is better)")
            print(f"\nchart: {args.chart}", file=sys.stderr)
        if args.json:
            print(json.dumps({"corpus": facts, "results": table, "targets": goals}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
