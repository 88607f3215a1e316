"""Tiny and large synthetic models with random weights, for the demo, tests and benchmarks.

Shapes follow llama/qwen2-style checkpoints (names as `gguf` and transformers write them); weights
are random. Large files are written tensor by tensor, never held in memory whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np

LLAMA_VOCAB = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + \
    ["\u2581"] + [chr(c) for c in range(97, 123)] + ["\u2581" + chr(c) for c in range(97, 123)] + \
    ["\u2581hello", "\u2581world", "\u2581the", "\u2581tiny", "\u2581model"]


def llama_tensor_shapes(n_vocab: int, n_embd: int, n_layer: int, n_ff: int, n_head: int,
                        n_head_kv: int) -> Iterator[tuple[str, tuple[int, ...], bool]]:
    """(GGUF name, numpy shape, is_norm) for a llama-style model."""
    head_dim = n_embd // n_head
    yield "token_embd.weight", (n_vocab, n_embd), False
    for i in range(n_layer):
        yield f"blk.{i}.attn_norm.weight", (n_embd,), True
        yield f"blk.{i}.attn_q.weight", (n_head * head_dim, n_embd), False
        yield f"blk.{i}.attn_k.weight", (n_head_kv * head_dim, n_embd), False
        yield f"blk.{i}.attn_v.weight", (n_head_kv * head_dim, n_embd), False
        yield f"blk.{i}.attn_output.weight", (n_embd, n_head * head_dim), False
        yield f"blk.{i}.ffn_norm.weight", (n_embd,), True
        yield f"blk.{i}.ffn_gate.weight", (n_ff, n_embd), False
        yield f"blk.{i}.ffn_up.weight", (n_ff, n_embd), False
        yield f"blk.{i}.ffn_down.weight", (n_embd, n_ff), False
    yield "output_norm.weight", (n_embd,), True
    yield "output.weight", (n_vocab, n_embd), False


def write_tiny_llama_gguf(path: Path, *, n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_head_kv: int = 4,
                          n_ff: int = 128, n_ctx: int = 256, seed: int = 0, f16: bool = False,
                          name: str = "tiny-random-llama", changed: dict[str, int] | None = None,
                          chat_template: str | None = None, license: str | None = None,
                          extra_kv: dict[str, str | int] | None = None, quant: str | None = None,
                          split_max_tensors: int = 0) -> Path:
    """A llama GGUF that llama.cpp loads (a SentencePiece vocab with all byte tokens). `quant`
    ("Q8_0", "Q4_0", ...) stores the 2-D weights in that ggml type. With `split_max_tensors`, it
    is written as gguf-split writes shards, and the first shard's path is returned.

    `changed` maps tensor names to another seed: the same model with those tensors different, as a
    fine-tune that touched only them."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    w.add_name(name)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(LLAMA_VOCAB))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(LLAMA_VOCAB)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(LLAMA_VOCAB) - 259)])
    w.add_token_types([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
                      + [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (len(LLAMA_VOCAB) - 259))
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    if chat_template:
        w.add_chat_template(chat_template)
    if license:
        w.add_license(license)
    for key, value in (extra_kv or {}).items():
        if isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_string(key, value)
    for tensor_name, shape, norm in llama_tensor_shapes(len(LLAMA_VOCAB), n_embd, n_layer, n_ff, n_head, n_head_kv):
        if changed and tensor_name in changed:
            data = np.random.default_rng(changed[tensor_name]).standard_normal(shape).astype(np.float32) * 0.02
            rng.standard_normal(shape)  # keep the other tensors identical to the unchanged model
        elif norm:
            data = np.ones(shape, np.float32)
        else:
            data = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        if quant and not norm:
            qtype = gguf.GGMLQuantizationType[quant]
            w.add_tensor(tensor_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(tensor_name, data if norm or not f16 else data.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if split_max_tensors:
        return path.with_name(f"{path.stem}-00001-of-{len(w.tensors):05d}.gguf")
    return path


def write_tiny_projector(path: Path, *, seed: int = 1) -> Path:
    """A vision projector as llama.cpp's mmproj files are: arch "clip", general.type "mmproj"."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_string("general.type", "mmproj")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_uint32("clip.vision.embedding_length", 32)
    w.add_tensor("v.patch_embd.weight", (rng.standard_normal((32, 16)) * 0.02).astype(np.float32))
    w.add_tensor("mm.0.weight", (rng.standard_normal((64, 32)) * 0.02).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tiny_hf_folder(folder: Path, *, hidden: int = 64, layers: int = 2, vocab: int = 256, seed: int = 0,
                         shards: int = 1, changed: dict[str, int] | None = None, license: str | None = "apache-2.0",
                         chat_template: str | None = "{% for m in messages %}{{ m['content'] }}{% endfor %}",
                         order_reversed: bool = False) -> Path:
    """An HF-format llama folder: config.json, tokenizer_config.json, README.md and F32 safetensors
    (sharded with an index when `shards` > 1). The same seed gives the same tensors whatever the
    sharding or order, so dedup across layouts can be checked."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ff = hidden * 2
    tensors: dict[str, np.ndarray] = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n, shape in (("self_attn.q_proj", (hidden, hidden)), ("self_attn.k_proj", (hidden, hidden)),
                         ("self_attn.v_proj", (hidden, hidden)), ("self_attn.o_proj", (hidden, hidden)),
                         ("mlp.gate_proj", (ff, hidden)), ("mlp.up_proj", (ff, hidden)),
                         ("mlp.down_proj", (hidden, ff))):
            tensors[p + n + ".weight"] = rng.standard_normal(shape)
        tensors[p + "input_layernorm.weight"] = np.ones(hidden)
        tensors[p + "post_attention_layernorm.weight"] = np.ones(hidden)
    tensors["model.norm.weight"] = np.ones(hidden)
    tensors["lm_head.weight"] = rng.standard_normal((vocab, hidden))
    for n, s in (changed or {}).items():
        tensors[n] = np.random.default_rng(s).standard_normal(tensors[n].shape)
    arrays = {k: (v * 0.02).astype(np.float32) for k, v in tensors.items()}
    names = list(arrays)[::-1] if order_reversed else list(arrays)
    if shards == 1:
        save_file({n: arrays[n] for n in names}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        per = -(-len(names) // shards)
        weight_map = {}
        for k in range(shards):
            fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = names[k * per : (k + 1) * per]
            save_file({n: arrays[n] for n in part}, str(folder / fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in part})
        total = sum(a.nbytes for a in arrays.values())
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": 4,
              "num_key_value_heads": 4, "vocab_size": vocab, "max_position_embeddings": 512,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "torch_dtype": "float32", "tie_word_embeddings": False}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tok_config: dict[str, object] = {"model_max_length": 512}
    if chat_template:
        tok_config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    if license:
        (folder / "README.md").write_text(f"---\nlicense: {license}\n---\n# tiny random llama\n")
    return folder


def write_large_gguf(path: Path, total_bytes: int, *, n_embd: int = 4096, seed: int = 0) -> Path:
    """A GGUF of about `total_bytes` of F16 weights with 7B-like layer shapes, written tensor by
    tensor (memory stays at one tensor)."""
    n_ff, n_vocab = n_embd * 11 // 4, 32000
    per_layer = 2 * (4 * n_embd * n_embd + 3 * n_embd * n_ff)
    fixed = 2 * 2 * n_vocab * n_embd
    n_layer = max(1, (total_bytes - fixed) // per_layer)
    shapes = list(llama_tensor_shapes(n_vocab, n_embd, n_layer, n_ff, 32, 32))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("synthetic-large-llama")
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(32)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for name, shape, norm in shapes:
        dtype = np.float32 if norm else np.float16
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        w.add_tensor_info(name, shape, np.dtype(dtype), nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for _, shape, norm in shapes:
        if norm:
            w.write_tensor_data(np.ones(shape, np.float32))
        else:
            raw = rng.integers(0, 2**16, size=shape, dtype=np.uint16)
            w.write_tensor_data(raw.view(np.float16))
    w.close()
    return path


def byte_level_tokenizer_json() -> bytes:
    """tokenizer.json of a byte-level BPE over the 256 byte symbols (GPT-2/Llama-3 style), no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok.to_str().encode()


def write_hf_model(folder: Path, *, model_type: str = "llama", hidden: int = 64, layers: int = 2, heads: int = 4,
                   kv_heads: int = 2, ff: int = 128, vocab: int = 256, dtype: str = "F16", seed: int = 0,
                   std: float = 0.1) -> Path:
    """A llama- or qwen2-shaped HF repo (config.json, tokenizer.json, tokenizer_config.json,
    model.safetensors in F32/F16/BF16), written tensor by tensor so a 1B-shaped model never sits
    in memory whole. The tokenizer covers only the first 256 ids (byte-level); larger vocabularies
    are padded by the converter, as real ones with reserved ids are."""
    folder.mkdir(parents=True, exist_ok=True)
    head_dim = hidden // heads
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (hidden,)),
                   (p + "self_attn.q_proj.weight", (heads * head_dim, hidden)),
                   (p + "self_attn.k_proj.weight", (kv_heads * head_dim, hidden)),
                   (p + "self_attn.v_proj.weight", (kv_heads * head_dim, hidden)),
                   (p + "self_attn.o_proj.weight", (hidden, heads * head_dim))]
        if model_type == "qwen2":
            shapes += [(p + f"self_attn.{x}_proj.bias", (n * head_dim,))
                       for x, n in (("q", heads), ("k", kv_heads), ("v", kv_heads))]
        shapes += [(p + "post_attention_layernorm.weight", (hidden,)),
                   (p + "mlp.gate_proj.weight", (ff, hidden)), (p + "mlp.up_proj.weight", (ff, hidden)),
                   (p + "mlp.down_proj.weight", (hidden, ff))]
    shapes += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    width = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name, shape in shapes:
        n = int(np.prod(shape)) * width
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(seed)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for name, shape in shapes:
            if len(shape) == 1:
                values = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
            else:
                values = std * rng.standard_normal(shape, dtype=np.float32)
                if ".q_proj." in name or ".k_proj." in name:
                    values *= 3  # attention far from uniform: a wrong Q/K order then shows in the logits
            if dtype == "F32":
                f.write(values.astype("<f4").tobytes())
            elif dtype == "F16":
                f.write(values.astype("<f2").tobytes())
            else:
                f.write((values.astype("<f4").view(np.uint32) >> 16).astype("<u2").tobytes())
    architecture = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[model_type]
    config = {"architectures": [architecture], "model_type": model_type, "hidden_size": hidden,
              "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "head_dim": head_dim, "vocab_size": vocab,
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype],
              "tie_word_embeddings": False, "hidden_act": "silu"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "tokenizer.json").write_bytes(byte_level_tokenizer_json())
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 2048,
         "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}, indent=2))
    return folder
