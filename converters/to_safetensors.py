"""Plan a GGUF model (one file, or the shards of a split) as a Hugging Face repo that
transformers loads: model.safetensors (sharded above 5 GB, with its index), config.json,
generation_config.json and the tokenizer files rebuilt from the GGUF vocabulary.

Tensors already in the target dtype and layout are extents of the stored GGUF; the rest
(dequantized, cast, or with llama's Q/K rows put back in HF order) are derived slices.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from modelstore.converters import archs, tensorops
from modelstore.converters.errors import ConversionUnsupported
from modelstore.converters.plans import Plan, PlannedFile, Piece, StoredModel, json_file
from modelstore.store.errors import BadModelFile
from modelstore.store.gguf_header import parse_gguf_kv
from modelstore.store.tensors import TensorSpan

SHARD_LIMIT = 5_000_000_000  # what save_pretrained calls "5GB"
PLAIN_TYPES = ("F32", "F16", "BF16")
TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _target_dtype(types: set[str]) -> str:
    """F32 models stay F32 and BF16 stays BF16; anything else (F16, quantized) becomes F16."""
    floats = types & set(PLAIN_TYPES)
    if types == {"F32"}:
        return "F32"
    if "BF16" in floats:
        return "BF16"
    return "F16"


def _safetensors_header(entries: list[tuple[str, str, tuple[int, ...], int]]) -> bytes:
    table: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name, dtype, shape, nbytes in entries:
        table[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    text = json.dumps(table, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def plan_safetensors(stored: StoredModel, shards: list[str]) -> Plan:
    if stored.paths("safetensors"):
        raise ConversionUnsupported("the model has safetensors weights already")
    try:
        kv = {item.key: item.value for item in parse_gguf_kv(shards[0], stored.header_bytes(shards[0]))}
    except BadModelFile as exc:
        raise ConversionUnsupported(str(exc)) from None
    arch = archs.arch_for_gguf(str(kv.get("general.architecture")))
    n_blocks = int(kv.get(f"{arch.gguf_name}.block_count") or 0)
    names = archs.hf_name_table(arch, n_blocks)
    spans = [(path, span) for path in shards for span in stored.header(path).tensors]
    rope_factors = _rope_factors(stored, [(p, s) for p, s in spans if s.name == archs.ROPE_FREQS])
    spans = [(p, s) for p, s in spans if s.name != archs.ROPE_FREQS]  # configuration: it goes to config.json
    unknown = [s.name for _, s in spans if s.name not in names]
    if unknown:
        raise ConversionUnsupported(f"GGUF tensor {unknown[0]} has no Hugging Face name in this converter")
    unreadable = [s for _, s in spans if not tensorops.can_decode(s.dtype)]
    if unreadable:
        raise ConversionUnsupported(f"tensor {unreadable[0].name} is {unreadable[0].dtype}; F32, F16, BF16 and the "
                                    f"quantizations gguf-py dequantizes (Q4_0, Q8_0, the K- and IQ-quants...) are covered")
    dtype = _target_dtype({s.dtype for _, s in spans})
    heads = int(kv.get(f"{arch.gguf_name}.attention.head_count") or 1)
    head_dim = int(kv.get(f"{arch.gguf_name}.attention.key_length")
                   or int(kv.get(f"{arch.gguf_name}.embedding_length") or 0) // heads)

    entries: list[tuple[str, str, tuple[int, ...], int, list[Piece]]] = []
    for path, span in sorted(spans, key=lambda ps: names[ps[1].name]):
        hf_name = names[span.name]
        permuted = archs.is_permuted(arch, hf_name)
        add = archs.norm_offset(arch, hf_name)
        rows = span.shape[0] if len(span.shape) > 1 else span.numel
        cols = span.numel // rows if len(span.shape) > 1 else 1
        if not tensorops.can_encode(span.dtype, cols) and len(span.shape) == 1:
            rows, cols = 1, span.numel  # a quantized 1-D tensor is one row of blocks
            if permuted:
                raise ConversionUnsupported(f"{span.name} is a quantized 1-D tensor that would need reordering")
        nbytes = rows * tensorops.row_bytes(dtype, cols)
        if span.dtype == dtype and not permuted and not add:
            pieces: list[Piece] = list(stored.extents(path, span.offset, span.length))
        else:
            try:
                pieces = list(tensorops.slices(
                    lambda off, n, path=path, base=span.offset: stored.extents(path, base + off, n),
                    span.dtype, dtype, rows, cols, head_dim=head_dim if permuted else None, inverse=True,
                    add=-add if add else None))
            except (KeyError, ValueError) as exc:
                raise ConversionUnsupported(f"tensor {span.name} ({span.dtype}) cannot be converted: {exc}") from None
        entries.append((hf_name, dtype, span.shape, nbytes, pieces))

    groups: list[list[tuple[str, str, tuple[int, ...], int, list[Piece]]]] = [[]]
    for entry in entries:
        if groups[-1] and sum(e[3] for e in groups[-1]) + entry[3] > SHARD_LIMIT:
            groups.append([])
        groups[-1].append(entry)
    files: list[PlannedFile] = []
    how = f"GGUF {'/'.join(sorted({s.dtype for _, s in spans}))} -> safetensors {dtype}" + \
          (", Q/K rows put back in HF order" if arch.permute_qk else "")
    if len(stored.paths("gguf")) > len(shards):
        how += f", from {shards[0]}"  # the finest of several GGUFs
    conversion = {"kind": "safetensors", "from": shards, "how": how}
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups, 1):
        name = "model.safetensors" if len(groups) == 1 else f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        header = _safetensors_header([(n, d, s, b) for n, d, s, b, _ in group])
        pieces = [header] + [p for *_, tensor_pieces in group for p in tensor_pieces]
        params = sum(_numel(s) for _, _, s, _, _ in group)
        files.append(PlannedFile(name, pieces, {
            "format": "safetensors", "tensor_count": len(group), "parameter_count": params,
            "data_start": len(header), "metadata": {"format": "pt"}, "conversion": conversion}))
        weight_map.update({n: name for n, *_ in group})
    if len(groups) > 1:
        total = sum(e[3] for e in entries)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        files.append(PlannedFile("model.safetensors.index.json", [json_file(index, "model.safetensors.index.json")]))

    from modelstore.converters.tokenizer import hf_tokenizer_files

    config = archs.hf_config(arch, kv, {s.name for _, s in spans}, TORCH_DTYPE[dtype], rope_factors)
    generation = {"_from_model_config": True, "bos_token_id": config.get("bos_token_id"),
                  "eos_token_id": _end_of_generation(kv, config.get("eos_token_id"))}
    files.append(PlannedFile("config.json", [json_file(config, "config.json")]))
    files.append(PlannedFile("generation_config.json", [json_file(generation, "generation_config.json")]))
    for name, data in sorted(hf_tokenizer_files(kv).items()):
        files.append(PlannedFile(name, [data]))
    taken = [f.path for f in files if f.path in stored.model.files]
    if taken:
        raise ConversionUnsupported(f"the model has a {taken[0]} of its own")
    return Plan("safetensors", how, list(shards), files)


def _end_of_generation(kv: dict[str, Any], eos: Any) -> Any:
    """generation_config.json's eos_token_id: the GGUF's EOS, end-of-turn and end-of-message
    tokens, which llama.cpp's generation stops at (a list, which transformers accepts, when there
    are several). llama.cpp also stops at control tokens it knows by their text (<|im_end|>,
    <end_of_turn>, ...) and at FIM tokens; those are not added."""
    ids = [eos] + [kv.get(f"tokenizer.ggml.{k}_token_id") for k in ("eot", "eom")]
    unique = list(dict.fromkeys(i for i in ids if isinstance(i, int) and not isinstance(i, bool)))
    return unique if len(unique) > 1 else (unique[0] if unique else eos)


def _rope_factors(stored: StoredModel, found: list[tuple[str, TensorSpan]]) -> np.ndarray | None:
    if not found:
        return None
    path, span = found[0]
    if span.dtype != "F32" or len(span.shape) != 1:
        raise ConversionUnsupported(f"{archs.ROPE_FREQS} is {span.dtype} {span.shape}; an F32 vector was expected")
    return np.frombuffer(stored.small_tensor(path, span.offset, span.length), dtype="<f4")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
