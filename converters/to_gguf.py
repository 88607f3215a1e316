"""Plan a Hugging Face safetensors model as one GGUF file (what llama.cpp's converter would
write), from config.json, the tokenizer files and the safetensors headers.

Tensors that keep their bytes (same dtype, no reordering) are extents of the stored safetensors
files; the rest (Q/K rows permuted for llama's rotary layout, dtype casts, quantization, 1-D
tensors widened to F32 as llama.cpp keeps them) are derived slices, converted when first read.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import gguf
import numpy as np

from modelstore.converters import archs, tensorops
from modelstore.converters.errors import ConversionUnsupported
from modelstore.converters.plans import Plan, PlannedFile, Piece, StoredModel, gguf_header_bytes, gguf_summary

GGUF_TYPES = ("F16", "BF16", "F32", "Q8_0", "Q4_0")
FILE_TYPE = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
             "BF16": gguf.LlamaFileType.MOSTLY_BF16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
             "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}
EMBEDDING = "model.embed_tokens.weight"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "added_tokens.json", "tokenizer_config.json", "config.json",
                   "generation_config.json", "chat_template.jinja", "special_tokens_map.json")


def _weight_files(stored: StoredModel) -> list[str]:
    """The safetensors files that make the model: the index's, else every top-level one but
    `consolidated*` (Mistral's own naming, shipped beside the HF files)."""
    index = stored.json("model.safetensors.index.json")
    if index and isinstance(index.get("weight_map"), dict):
        return sorted(set(index["weight_map"].values()))
    files = [p for p in stored.paths("safetensors") if "/" not in p]
    plain = [p for p in files if not PurePosixPath(p).name.startswith("consolidated")]
    return plain or files


def _target_type(gguf_type: str, shape: tuple[int, ...]) -> str:
    if len(shape) < 2:
        return "F32"  # norms and biases: llama.cpp keeps them in F32
    if gguf_type in ("Q8_0", "Q4_0") and not tensorops.can_encode(gguf_type, shape[-1]):
        return "F16"  # rows that are no whole number of blocks stay F16, as llama.cpp does
    return gguf_type


def _embedding_rows(stored: StoredModel, files: list[str]) -> int:
    """The token embedding's rows: the number of tokens llama.cpp will want the GGUF to name."""
    for path in files:
        if path in stored.model.files:
            for span in stored.header(path).tensors:
                if span.name == EMBEDDING and len(span.shape) == 2:
                    return span.shape[0]
    raise ConversionUnsupported(f"no {EMBEDDING} (2-D) among the safetensors tensors")


def gguf_file_name(model_name: str, gguf_type: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name.rsplit("/", 1)[-1]).strip("-.") or "model"
    return f"{base}-{gguf_type}.gguf"


def plan_gguf(stored: StoredModel, gguf_type: str = "F16") -> Plan:
    if gguf_type not in GGUF_TYPES:
        raise ConversionUnsupported(f"GGUF type {gguf_type} is not one of {', '.join(GGUF_TYPES)}")
    if stored.paths("gguf"):
        raise ConversionUnsupported("the model has a GGUF file already")
    config = stored.json("config.json")
    if config is None:
        raise ConversionUnsupported("no config.json: the architecture is unknown")
    arch = archs.arch_for_config(config)
    files = _weight_files(stored)
    if not files:
        raise ConversionUnsupported("no safetensors weights")
    if "tokenizer.json" not in stored.model.files and "tokenizer.model" not in stored.model.files:
        raise ConversionUnsupported("no tokenizer.json or tokenizer.model")
    n_blocks = int(config.get("num_hidden_layers") or 0)
    dim = archs.head_dim(config)

    from modelstore.converters.tokenizer import write_gguf_tokenizer

    writer = gguf.GGUFWriter(None, arch.gguf_name)
    writer.add_name(stored.model.name)
    archs.gguf_model_keys(writer, config)
    writer.add_file_type(FILE_TYPE[gguf_type])
    if gguf_type in ("Q8_0", "Q4_0"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    texts = {name: data for name in TOKENIZER_FILES if (data := stored.text(name)) is not None}
    write_gguf_tokenizer(writer, texts, arch.gguf_name, _embedding_rows(stored, files))

    tensors: list[tuple[str, list[Piece], int]] = []
    for path in files:
        if path not in stored.model.files:
            raise ConversionUnsupported(f"the index names {path}, which the model does not have")
        header = stored.header(path)
        for span in sorted(header.tensors, key=lambda s: s.offset):
            if span.name.endswith(archs.IGNORED_HF_TENSORS):
                continue
            if arch is archs.GEMMA and span.name == "lm_head.weight":
                if config.get("tie_word_embeddings") is False:
                    raise ConversionUnsupported("a gemma with an lm_head of its own: llama.cpp's gemma ties it")
                continue  # a copy of the embeddings some exporters write; llama.cpp's gemma reads those
            if span.dtype not in tensorops.SAFETENSORS_TO_GGML:
                raise ConversionUnsupported(f"tensor {span.name} is {span.dtype}; F32, F16 and BF16 are covered")
            name = archs.gguf_tensor_name(arch, n_blocks, span.name)
            src = tensorops.SAFETENSORS_TO_GGML[span.dtype]
            dst = _target_type(gguf_type, span.shape)
            rows = span.shape[0] if span.shape else 1
            cols = span.numel // max(rows, 1) if span.shape else 1
            permuted = archs.is_permuted(arch, span.name)
            add = archs.norm_offset(arch, span.name)
            if len(span.shape) == 1:  # a 1-D bias permutes like a column
                rows, cols = span.numel, 1
            nbytes = rows * tensorops.row_bytes(dst, cols)
            writer.add_tensor_info(name, span.shape, np.dtype(np.float32), nbytes, raw_dtype=gguf.GGMLQuantizationType[dst])
            if src == dst and not permuted and not add:
                pieces: list[Piece] = list(stored.extents(path, span.offset, span.length))
            else:
                pieces = list(tensorops.slices(
                    lambda off, n, path=path, base=span.offset: stored.extents(path, base + off, n),
                    src, dst, rows, cols, head_dim=dim if permuted else None,
                    first_bytes=None if tensors else 1 << 20, add=add))
            tensors.append((name, pieces, nbytes))
    if not tensors:
        raise ConversionUnsupported("the safetensors files hold no tensors")
    rope_factors = archs.llama3_rope_factors(config)
    if rope_factors is not None:
        if arch.model_arch != gguf.MODEL_ARCH.LLAMA:
            raise ConversionUnsupported(f"llama3 rope scaling on {arch.hf_model_type} is not read by llama.cpp")
        name = archs.ROPE_FREQS
        writer.add_tensor_info(name, rope_factors.shape, np.dtype(np.float32), rope_factors.nbytes,
                               raw_dtype=gguf.GGMLQuantizationType.F32)
        tensors.append((name, [rope_factors.tobytes()], rope_factors.nbytes))  # computed, kept as a literal

    header = gguf_header_bytes(writer)
    pieces = [header]
    for _, tensor_pieces, nbytes in tensors:
        pieces += tensor_pieces
        if pad := -nbytes % writer.data_alignment:
            pieces.append(tensorops.zeros(pad))
    src_types = sorted({s.dtype for p in files for s in stored.header(p).tensors})
    how = f"safetensors {'/'.join(src_types)} -> GGUF {gguf_type}" + (", Q/K rows permuted" if arch.permute_qk else "")
    planned = PlannedFile(gguf_file_name(stored.model.name, gguf_type), pieces)
    conversion = {"kind": "gguf", "from": files, "how": how}
    planned.weights = gguf_summary(header, planned.size, conversion)
    return Plan("gguf", how, files, [planned])
