"""Tiny models for the conversion tests, and an eager reference conversion to check them against.

- `build_hf_models`: tiny llama, mistral, qwen2, qwen3, phi3 and gemma checkpoints made with transformers (random weights
  large enough that attention is not uniform, see the pitfalls in the testing notes) and a real
  byte-level BPE tokenizer made with `tokenizers`. Needs torch: run it in a child process.
- `gguf_from_hf` / `write_gguf`: HF safetensors -> GGUF tensors done eagerly with numpy (the Q/K
  permutation for llama and mistral, 1-D tensors as F32, dtype casts, `gguf.quants.quantize`), and a GGUF
  file written from them with a byte-level BPE (`gpt2`) vocabulary that llama.cpp loads.
- `hf_from_gguf`: the inverse, GGUF -> HF tensors (`gguf.quants.dequantize`, inverse permutation).
- `python -m tests.tinymodels hf-run|llama-run JOBS_JSON`: run transformers or llama.cpp on a list
  of jobs (same token ids in, greedy tokens and logits out) and print the results as JSON.

Only numpy, gguf and the standard library are imported at module level, so the eager reference
runs in the pytest process; torch, transformers, tokenizers and llama_cpp only inside functions.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
PLACEHOLDER_MERGE = "<never> <merged>"  # llama.cpp needs >= 1 merge for a gpt2 vocab; this one cannot fire

# HF model_type -> gguf's architecture, and the GGUF `general.architecture` it is written as
# (llama.cpp reads mistral as llama, Q/K permutation included)
ARCHS = {"llama": gguf.MODEL_ARCH.LLAMA, "mistral": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2,
         "qwen3": gguf.MODEL_ARCH.QWEN3, "phi3": gguf.MODEL_ARCH.PHI3, "gemma": gguf.MODEL_ARCH.GEMMA}
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3", "gemma": "gemma"}
PERMUTED = frozenset({"llama", "mistral"})  # HF model types whose Q/K rows GGUF reorders (not NEOX rope)


# --- HF checkpoints (child process: needs torch) -----------------------------------------------

def byte_level_tokenizer(merges: list[tuple[str, str]] | None = None) -> Any:
    """A byte-level BPE tokenizer: the 256 byte tokens (GPT-2's byte alphabet, sorted), plus one
    token per merge. No BOS, no EOS, no post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for a, b in merges or []:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges or [])))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


# A few merges for the qwen2 model's tokenizer, so real merges go through the conversion too
# (letters and "Ġ" only: every pre-tokenizer splits "hello world the tiny model" the same way).
QWEN_MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w"), ("o", "r"), ("Ġ", "t"), ("Ġt", "h"),
               ("Ġth", "e"), ("i", "n")]


def build_hf_models(out: Path, seed: int = 0, qwen_seed: int = 0, qwen3_seed: int = 0, mistral_seed: int = 0,
                    rope3_seed: int = 0, phi3_seed: int = 0, gemma_seed: int = 0, qwen2yarn_seed: int = 0,
                    llamayarn_seed: int = 0, qk_scale: float = 3.0, qk_norm_scale: float = 2.0) -> dict[str, str]:
    """Write llama (F32, F16 and BF16 copies of one model), a llama with Llama 3.1's rope scaling,
    qwen2, qwen3, mistral, phi3 and gemma, and qwen2 and llama with YaRN rope scaling (F32) folders
    under `out`."""
    import copy

    import torch
    from transformers import (
        GemmaConfig,
        GemmaForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Phi3Config,
        Phi3ForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    def sharpen(model: Any, bias: bool) -> None:
        # std 0.1 from initializer_range alone leaves attention near uniform: scale Q and K up, and
        # make norm weights (and qwen2's biases) non-trivial so a misplaced one changes the output.
        # qwen3's q_norm/k_norm undo any scale of q_proj/k_proj: its norm weights carry the scale
        # instead (and vary along the head, so a Q/K row order mix-up moves them too).
        with torch.no_grad():
            for layer in model.model.layers:
                attn = layer.self_attn
                attn.q_proj.weight.mul_(qk_scale)
                attn.k_proj.weight.mul_(qk_scale)
                if bias:
                    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                        proj.bias.normal_(0.0, 0.2)
                for qk_norm in (getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)):
                    if qk_norm is not None:
                        qk_norm.weight.copy_(qk_norm_scale * (1.0 + 0.3 * torch.randn_like(qk_norm.weight)))
                for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                    norm.weight.copy_(1.0 + 0.2 * torch.randn_like(norm.weight))
            model.model.norm.weight.copy_(1.0 + 0.2 * torch.randn_like(model.model.norm.weight))

    common: dict[str, Any] = {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 256, "bos_token_id": None, "eos_token_id": None,
        "pad_token_id": None, "tie_word_embeddings": False, "initializer_range": 0.1}
    folders = {}

    torch.manual_seed(seed)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=256, rms_norm_eps=1e-5, **common))
    sharpen(llama, bias=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=byte_level_tokenizer())
    for label, dtype in (("llama-f32", torch.float32), ("llama-f16", torch.float16), ("llama-bf16", torch.bfloat16)):
        folder = out / label
        copy.deepcopy(llama).to(dtype).save_pretrained(folder)
        tok.save_pretrained(folder)
        folders[label] = str(folder)

    # Llama 3.1's rope scaling; an original context of 64 puts this head_dim's 8 frequencies on all
    # three sides of the blend (1, smoothed, the full factor)
    torch.manual_seed(rope3_seed)
    rope3 = LlamaConfig(vocab_size=256, rms_norm_eps=1e-5, **common)
    rope3.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    llama3 = LlamaForCausalLM(rope3)
    sharpen(llama3, bias=False)
    folder = out / "llama3rope-f32"
    llama3.save_pretrained(folder)
    tok.save_pretrained(folder)
    folders["llama3rope-f32"] = str(folder)
    # what llama.cpp's rope_freqs holds, from transformers' own frequencies: unscaled / scaled
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](rope3, "cpu")
    dim = rope3.hidden_size // rope3.num_attention_heads
    plain = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    (out / "llama3rope-f32.rope_freqs").write_bytes((plain / scaled).to(torch.float32).numpy().tobytes())

    torch.manual_seed(qwen_seed)
    qtok = byte_level_tokenizer(QWEN_MERGES)
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=qtok.get_vocab_size(), rms_norm_eps=1e-6,
                                        use_sliding_window=False, **common))
    sharpen(qwen, bias=True)
    folder = out / "qwen2-f32"
    qwen.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=qtok).save_pretrained(folder)
    folders["qwen2-f32"] = str(folder)

    # qwen3: q_norm/k_norm, no biases, and a head_dim (32) that is not hidden / heads (16)
    torch.manual_seed(qwen3_seed)
    qwen3 = Qwen3ForCausalLM(Qwen3Config(vocab_size=qtok.get_vocab_size(), rms_norm_eps=1e-6, head_dim=32,
                                         use_sliding_window=False, attention_bias=False, **common))
    sharpen(qwen3, bias=False)
    folder = out / "qwen3-f32"
    qwen3.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=qtok).save_pretrained(folder)
    folders["qwen3-f32"] = str(folder)

    torch.manual_seed(mistral_seed)
    mistral = MistralForCausalLM(MistralConfig(vocab_size=256, rms_norm_eps=1e-5, sliding_window=None, **common))
    sharpen(mistral, bias=False)
    folder = out / "mistral-f32"
    mistral.save_pretrained(folder)
    tok.save_pretrained(folder)
    folders["mistral-f32"] = str(folder)

    # phi3: Q, K and V fused in qkv_proj (Q and K scaled as `sharpen` scales llama's), gate and up
    # fused in gate_up_proj; NEOX rope, so nothing is permuted
    torch.manual_seed(phi3_seed)
    phi3 = Phi3ForCausalLM(Phi3Config(vocab_size=256, rms_norm_eps=1e-5, sliding_window=None,
                                      original_max_position_embeddings=common["max_position_embeddings"], **common))
    q_and_k = common["hidden_size"] + common["hidden_size"] // common["num_attention_heads"] * common["num_key_value_heads"]
    with torch.no_grad():
        for layer in phi3.model.layers:
            layer.self_attn.qkv_proj.weight[:q_and_k].mul_(qk_scale)
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.copy_(1.0 + 0.2 * torch.randn_like(norm.weight))
        phi3.model.norm.weight.copy_(1.0 + 0.2 * torch.randn_like(phi3.model.norm.weight))
    # (not named "phi3": llama.cpp gives a model whose general.name says phi-3 the attributes of
    # Phi-3's own special tokens, and this byte-level vocabulary has none of them)
    folder = out / "phimini-f32"
    phi3.save_pretrained(folder)
    tok.save_pretrained(folder)
    folders["phimini-f32"] = str(folder)

    # gemma: GELU, tied embeddings scaled by sqrt(hidden), norms applied as 1 + w (w is 0 at init:
    # given a spread here, so that adding the 1 in the wrong place shows)
    torch.manual_seed(gemma_seed)
    gemma = GemmaForCausalLM(GemmaConfig(vocab_size=256, rms_norm_eps=1e-6, head_dim=16,
                                         **{**common, "tie_word_embeddings": True}))
    with torch.no_grad():
        for layer in gemma.model.layers:
            layer.self_attn.q_proj.weight.mul_(qk_scale)
            layer.self_attn.k_proj.weight.mul_(qk_scale)
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.copy_(0.2 * torch.randn_like(norm.weight))
        gemma.model.norm.weight.copy_(0.2 * torch.randn_like(gemma.model.norm.weight))
    folder = out / "gemma-f32"
    gemma.save_pretrained(folder)
    tok.save_pretrained(folder)
    folders["gemma-f32"] = str(folder)

    # YaRN: an original context of 32 puts this head_dim's 8 frequencies on all three sides of the
    # ramp; each model names what changes the attention magnitude in its own way (an explicit
    # attention_factor; mscale and mscale_all_dim), and qwen2yarnbeta betas llama.cpp does not read
    for label, yarn_seed, cls, cfg_cls, rope, vocab_tok in (
            ("qwen2yarn-f32", qwen2yarn_seed, Qwen2ForCausalLM, Qwen2Config, {**YARN, "attention_factor": 0.8}, qtok),
            ("llamayarn-f32", llamayarn_seed, LlamaForCausalLM, LlamaConfig,
             {**YARN, "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.5}, None),
            ("qwen2yarnbeta-f32", qwen2yarn_seed, Qwen2ForCausalLM, Qwen2Config,
             {**YARN, "beta_fast": 8.0, "beta_slow": 2.0}, qtok)):
        torch.manual_seed(yarn_seed)
        extra = {"use_sliding_window": False} if cls is Qwen2ForCausalLM else {}
        config = cfg_cls(vocab_size=vocab_tok.get_vocab_size() if vocab_tok else 256, rms_norm_eps=1e-6, **extra,
                         **{**common, "max_position_embeddings": 128})  # = factor x original: no warning
        config.rope_parameters = {"rope_theta": 10000.0, **rope}
        yarn = cls(config)
        sharpen(yarn, bias=cls is Qwen2ForCausalLM)
        folder = out / label
        yarn.save_pretrained(folder)
        (PreTrainedTokenizerFast(tokenizer_object=vocab_tok) if vocab_tok else tok).save_pretrained(folder)
        folders[label] = str(folder)
    return folders


YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}


# --- safetensors without torch ------------------------------------------------------------------

ST_DTYPES = {"F32": Q.F32, "F16": Q.F16, "BF16": Q.BF16}


def read_safetensors(folder: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """name -> (dtype, shape, raw bytes) over every *.safetensors file in `folder` (BF16 too)."""
    out = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            out[name] = (info["dtype"], tuple(info["shape"]), data[8 + n + a : 8 + n + b])
    return out


def decode(raw: bytes, qtype: Q, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values of raw F32/F16/BF16/quantized bytes; `shape` in numpy order."""
    data = np.frombuffer(raw, np.uint8)
    if qtype not in (Q.F32, Q.F16, Q.BF16):
        data = data.reshape(-1, gguf.quants.quant_shape_to_byte_shape(shape, qtype)[-1])
    return np.asarray(gguf.quants.dequantize(data, qtype), np.float32).reshape(shape)


def encode(values: np.ndarray, qtype: Q) -> bytes:
    return np.ascontiguousarray(gguf.quants.quantize(np.ascontiguousarray(values, np.float32), qtype)).tobytes()


# --- HF <-> GGUF, eagerly ------------------------------------------------------------------------

def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary row order (two halves per head) -> GGUF's (interleaved), as convert_hf_to_gguf."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_config(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "config.json").read_text())


def head_dim(cfg: dict[str, Any]) -> int:
    return int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])


def name_map(arch: str, n_blocks: int) -> gguf.TensorNameMap:
    return gguf.get_tensor_name_map(ARCHS[arch], n_blocks)


def gguf_name(tmap: gguf.TensorNameMap, hf_name: str) -> str:
    name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise KeyError(f"no GGUF name for {hf_name}")
    return name


def gguf_from_hf(folder: Path, qtype: Q, *, permute: bool | None = None) -> dict[str, tuple[Q, tuple[int, ...], bytes]]:
    """GGUF name -> (ggml type, numpy shape, bytes), in the source's tensor order: what a
    converter of this HF folder to a GGUF of file type `qtype` must produce. `permute` forces the
    llama Q/K permutation on (or off) whatever the architecture: for the mutation checks.
    (Q/K are permuted per head of `rows / heads` rows: the head_dim, also where it is not hidden / heads.)"""
    cfg = hf_config(folder)
    arch = cfg["model_type"]
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    tmap = name_map(arch, cfg["num_hidden_layers"])
    if permute is None:
        permute = arch in PERMUTED  # qwen2/qwen3 use NEOX rope: their Q/K rows keep their order
    out = {}
    for hf_name, (dtype, shape, raw) in read_safetensors(folder).items():
        name = gguf_name(tmap, hf_name)
        src = ST_DTYPES[dtype]
        if len(shape) == 1:
            dst = Q.F32
        elif qtype in (Q.F32, Q.F16, Q.BF16) or shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0:
            dst = qtype
        else:
            dst = Q.F16
        if arch == "gemma" and hf_name.endswith("norm.weight"):  # GGUF keeps gemma's 1 + w
            out[name] = (Q.F32, shape, encode(decode(raw, src, shape) + np.float32(1.0), Q.F32))
            continue
        perm_heads = None
        if permute and name.endswith("attn_q.weight"):
            perm_heads = n_head
        elif permute and name.endswith("attn_k.weight"):
            perm_heads = n_kv
        if src == dst:  # no arithmetic: the bytes move (rows only, when permuted)
            data = raw
            if perm_heads:
                rows = np.frombuffer(raw, np.uint8).reshape(shape[0], -1)
                data = np.ascontiguousarray(permute_qk(rows, perm_heads)).tobytes()
        else:
            values = decode(raw, src, shape)
            if perm_heads:
                values = permute_qk(values, perm_heads)
            data = encode(values, dst)
        out[name] = (dst, shape, data)
    factors = Path(folder).parent / f"{Path(folder).name}.rope_freqs"  # Llama 3.1 rope: written by build_hf_models
    if factors.exists():
        out["rope_freqs.weight"] = (Q.F32, (factors.stat().st_size // 4,), factors.read_bytes())
    return out


def tokenizer_vocab(folder: Path) -> tuple[list[str], list[str]]:
    """(tokens by id, merges as "a b") of a byte-level BPE tokenizer.json."""
    tj = json.loads((Path(folder) / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    tokens = [""] * len(vocab)
    for piece, i in vocab.items():
        tokens[i] = piece
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"].get("merges", [])]
    return tokens, merges


def write_gguf(folder: Path, path: Path, qtype: Q, *, permute: bool | None = None, split_max_tensors: int = 0,
               tensors: dict[str, tuple[Q, tuple[int, ...], bytes]] | None = None, pre: str | None = None,
               extra_kv: dict[str, str | int | float] | None = None) -> Path:
    """A GGUF of the HF model in `folder` (by `gguf_from_hf`), with a gpt2 (byte-level BPE)
    vocabulary, no BOS, file type from `qtype`; pre-tokenizer `pre` (default: "qwen2" for qwen
    models, as llama.cpp's converter names theirs, else "default"); `<arch>.attention.key_length` and
    `value_length` where the head_dim is not hidden / heads. With `split_max_tensors`, the shards
    `<stem>-0000k-of-0000n.gguf` are written instead (returned: the first). `extra_kv`: further
    keys (rope scaling, as llama.cpp's converter would write it), each as a string, uint32 or float32."""
    cfg = hf_config(folder)
    arch = cfg["model_type"]
    n_head = cfg["num_attention_heads"]
    dim = head_dim(cfg)
    rope = cfg.get("rope_parameters") or {}
    tokens, merges = tokenizer_vocab(folder)
    w = gguf.GGUFWriter(str(path), GGUF_ARCH[arch], split_max_tensors=split_max_tensors)
    w.add_name(Path(folder).name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(cfg.get("num_key_value_heads", n_head))
    w.add_rope_dimension_count(dim)
    if dim != cfg["hidden_size"] // n_head:
        w.add_key_length(dim)
        w.add_value_length(dim)
    w.add_rope_freq_base(float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(len(tokens))
    w.add_file_type({Q.F32: gguf.LlamaFileType.ALL_F32, Q.F16: gguf.LlamaFileType.MOSTLY_F16,
                     Q.BF16: gguf.LlamaFileType.MOSTLY_BF16, Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
                     Q.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0}[qtype])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre or ("qwen2" if arch.startswith("qwen") else "default"))
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
    w.add_token_merges(merges or [PLACEHOLDER_MERGE])
    w.add_add_bos_token(False)
    for key, value in (extra_kv or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_float32(key, value)
    for name, (dst, shape, data) in (tensors or gguf_from_hf(folder, qtype, permute=permute)).items():
        if dst in (Q.F32, Q.F16):
            w.add_tensor(name, np.frombuffer(data, np.float32 if dst == Q.F32 else np.float16).reshape(shape))
        else:
            raw = np.frombuffer(data, np.uint8).reshape(shape[0], -1)
            w.add_tensor(name, raw, raw_dtype=dst)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path if not split_max_tensors else path.with_name(f"{path.stem}-00001-of-{len(w.tensors):05d}.gguf")


def gguf_kv(reader: gguf.GGUFReader, key: str, default: Any = None) -> Any:
    field = reader.get_field(key)
    return default if field is None else field.contents()


def hf_from_gguf(path: Path, hf_names: list[str]) -> dict[str, tuple[Q, np.ndarray]]:
    """HF name -> (the GGUF tensor's type, float32 values in HF layout) for a GGUF file: what a
    converter to safetensors must produce. `hf_names` are the HF names of the architecture, used
    to invert the name map."""
    reader = gguf.GGUFReader(str(path))
    arch = gguf_kv(reader, "general.architecture")
    n_head = gguf_kv(reader, f"{arch}.attention.head_count")
    n_kv = gguf_kv(reader, f"{arch}.attention.head_count_kv", n_head)
    tmap = name_map(arch, gguf_kv(reader, f"{arch}.block_count"))
    inverse = {gguf_name(tmap, n): n for n in hf_names}
    out = {}
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":  # configuration (config.json's rope_scaling), not a weight
            continue
        shape = tuple(int(d) for d in reversed(t.shape))
        values = decode(bytes(t.data), t.tensor_type, shape)
        if arch == "gemma" and t.name.endswith("norm.weight"):
            values = values - np.float32(1.0)
        if arch == "llama" and t.name.endswith("attn_q.weight"):  # (rows / heads: key_length too)
            values = unpermute_qk(values, n_head)
        elif arch == "llama" and t.name.endswith("attn_k.weight"):
            values = unpermute_qk(values, n_kv)
        out[inverse[t.name]] = (t.tensor_type, values)
    return out


def hf_names(arch: str, n_layer: int) -> list[str]:
    """The HF tensor names of the tiny models of `arch` (HF model type or GGUF architecture)."""
    if arch == "gemma":
        return llama_hf_names(n_layer, lm_head=False)
    if arch == "phi3":
        return ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"] + [
            f"model.layers.{i}.{t}" for i in range(n_layer)
            for t in ("input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.qkv_proj.weight",
                      "self_attn.o_proj.weight", "mlp.gate_up_proj.weight", "mlp.down_proj.weight")]
    return llama_hf_names(n_layer, bias=arch == "qwen2", qk_norm=arch == "qwen3")


def hf_dtype(gguf_types: set[Q]) -> Q:
    """The one dtype of the safetensors checkpoint a GGUF becomes, as save_pretrained writes one
    dtype per model: an all-F32 GGUF stays F32, one with BF16 tensors becomes BF16, anything else
    (F16, quantized; their F32 norms included) F16."""
    if gguf_types == {Q.F32}:
        return Q.F32
    return Q.BF16 if Q.BF16 in gguf_types else Q.F16


def llama_hf_names(n_layer: int, *, bias: bool = False, qk_norm: bool = False, lm_head: bool = True) -> list[str]:
    """HF tensor names of a llama-like model; qwen2: `bias`, qwen3: `qk_norm`."""
    names = ["model.embed_tokens.weight"]
    for i in range(n_layer):
        p = f"model.layers.{i}."
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
        if qk_norm:
            names += [p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names.append(p + f"self_attn.{proj}.weight")
            if bias and proj != "o_proj":
                names.append(p + f"self_attn.{proj}.bias")
        names += [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"]
    names.append("model.norm.weight")
    if lm_head:
        names.append("lm_head.weight")
    return names


# --- the runtimes (child processes) ------------------------------------------------------------

def hf_run(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each job: {"ref": folder or repo id, "ids": prompt ids, "n_new": 8, "teacher": token ids to
    follow, "text": str}. Greedy tokens from the prompt (float32); logits at every position from the
    prompt's last one on along ids + teacher (default: the greedy tokens); the tokenizer's ids for
    `text`. A job that raises gives {"error": traceback} and the others still run."""
    import traceback

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = []
    for job in jobs:
        try:
            model = AutoModelForCausalLM.from_pretrained(job["ref"], dtype=torch.float32)
            model.eval()
            ids = list(job["ids"])
            greedy: list[int] = []
            with torch.no_grad():
                for _ in range(job.get("n_new", 8)):
                    greedy.append(int(model(torch.tensor([ids + greedy])).logits[0, -1].argmax()))
                seq = ids + list(job.get("teacher") or greedy)
                logits = model(torch.tensor([seq])).logits[0, len(ids) - 1 :]
            text_ids = AutoTokenizer.from_pretrained(job["ref"])(job["text"]).input_ids if "text" in job else None
            out.append({"greedy": greedy, "logits": logits.tolist(), "text_ids": text_ids,
                        "params": sum(p.numel() for p in model.parameters())})
        except Exception:  # noqa: BLE001 - reported per job, so one bad file does not hide the others
            out.append({"error": traceback.format_exc()[-3000:]})
    return out


def llama_run(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each job: {"path", "ids", "n_new": 8, "teacher": token ids to follow, "text"}. Greedy
    tokens from the prompt; logits at every position from the prompt's last one on along
    ids + teacher (default: the greedy tokens); llama.cpp's own tokenization of `text` (with the
    file's BOS setting). A Python error gives {"error": ...}; llama.cpp may also abort the process."""
    import traceback

    from llama_cpp import Llama

    out = []
    for job in jobs:
        try:
            # yarn_*: -1 takes the model's own values, as llama.cpp's tools do (llama-cpp-python's
            # defaults would override them with 32, 1 and 1)
            llm = Llama(model_path=job["path"], n_ctx=128, n_threads=2, logits_all=True, verbose=False, seed=0,
                        yarn_beta_fast=-1.0, yarn_beta_slow=-1.0, yarn_attn_factor=-1.0)
            facts = {"text_ids": llm.tokenize(job["text"].encode()) if "text" in job else None,
                     "arch": llm.metadata.get("general.architecture"), "n_vocab": llm.n_vocab()}
            ids = list(job.get("ids") or [])
            if not ids:  # tokenization only
                out.append(facts)
                continue
            llm.reset()
            llm.eval(ids)
            greedy: list[int] = []
            for _ in range(job.get("n_new", 8)):
                greedy.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                llm.eval(greedy[-1:])
            seq = ids + list(job.get("teacher") or greedy)
            llm.reset()
            llm.eval(seq)
            logits = np.array(llm.scores[len(ids) - 1 : len(seq)], np.float32)
            out.append({"greedy": greedy, "logits": logits.tolist(), **facts})
            del llm
        except Exception:  # noqa: BLE001 - reported per job, so one bad file does not hide the others
            out.append({"error": traceback.format_exc()[-3000:]})
    return out


def main(argv: list[str]) -> None:
    command, arg = argv[0], argv[1]
    if command == "build-hf":
        result: Any = build_hf_models(Path(arg), *(int(a) for a in argv[2:11]), *(float(a) for a in argv[11:]))
    elif command == "hf-run":
        result = hf_run(json.loads(Path(arg).read_text()))
    elif command == "llama-run":
        result = llama_run(json.loads(Path(arg).read_text()))
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
