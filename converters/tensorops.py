"""Derived pieces: converting one slice of one tensor, described as plain JSON and run on demand.

An op is `{"kind": "zeros"}` (alignment padding) or a tensor slice:

    {"kind": "tensor", "inputs": [[blob, offset, length], ...],   # the source rows' bytes, in order
     "src": "BF16", "dst": "F16", "rows": 512, "cols": 2048,      # ggml type names; a 2-D view
     "permute": {"head_dim": 64, "inverse": false},               # optional: llama's Q/K row order
     "add": 1.0}                                                  # optional: added to every value (gemma's norms)

Rows are independent in every conversion here (dtype casts and ggml block quantization work
along a row; the Q/K permutation moves rows only within one head), so a planner can cut a big
tensor into row slices that each convert alone, and memory stays one slice per reader.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

from modelstore.store.records import Derived, Extent

PLAIN = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2")}
SAFETENSORS_TO_GGML = {"F32": "F32", "F16": "F16", "BF16": "BF16"}


def row_bytes(ggml_type: str, cols: int) -> int:
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]
    if cols % block:
        raise ValueError(f"{cols} columns are not a whole number of {ggml_type} blocks of {block}")
    return cols // block * size


def can_encode(ggml_type: str, cols: int) -> bool:
    return cols % GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]][0] == 0


@functools.lru_cache(maxsize=None)
def can_decode(ggml_type: str) -> bool:
    """Whether a tensor of this ggml type can be read as float32 here: the plain floats, and the
    quantizations gguf-py dequantizes (not F64, the integer types, Q8_1, Q8_K...), found by
    dequantizing one block of zeros."""
    if ggml_type in PLAIN or ggml_type == "BF16":
        return True
    try:
        qtype = GGMLQuantizationType[ggml_type]
        quants.dequantize(np.zeros((1, GGML_QUANT_SIZES[qtype][1]), np.uint8), qtype)
    except (KeyError, NotImplementedError, ValueError):
        return False
    return True


def _decode(raw: bytes, src: str, rows: int, cols: int) -> np.ndarray:
    """float32 rows × cols from the source bytes."""
    if src in PLAIN:
        return np.frombuffer(raw, PLAIN[src]).reshape(rows, cols).astype(np.float32)
    if src == "BF16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(rows, cols)
    data = np.frombuffer(raw, np.uint8).reshape(rows, -1)
    return quants.dequantize(data, GGMLQuantizationType[src]).reshape(rows, cols)


def _encode(values: np.ndarray, dst: str) -> bytes:
    if dst in PLAIN:
        return values.astype(PLAIN[dst]).tobytes()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # inf or NaN weights: as gguf-py makes them
        return np.ascontiguousarray(quants.quantize(values, GGMLQuantizationType[dst])).tobytes()


def _bf16_to_f16(bits: np.ndarray) -> np.ndarray:
    """BF16 bit patterns to F16 bit patterns, equal to numpy's own cast through float32 (checked
    on all 65,536 values) at a third of its time: a BF16 whose exponent F16 can hold keeps its 7
    mantissa bits exactly, so only the exponent is rebiased, in integer arithmetic. The rest
    (zeros, subnormals, overflow, inf, NaN: a few in a million weights) goes through the cast."""
    magnitude = bits & np.uint16(0x7FFF)
    exponent = magnitude >> np.uint16(7)
    fits = (exponent >= 113) & (exponent <= 142)  # 2**-14 <= |x| < 2**16
    out = magnitude - np.uint16((127 - 15) << 7)
    out <<= np.uint16(3)
    out |= bits & np.uint16(0x8000)
    if not fits.all():
        rest = ~fits
        with np.errstate(over="ignore"):
            out[rest] = (bits[rest].astype(np.uint32) << 16).view(np.float32).astype(np.float16).view(np.uint16)
    return out


def _permute_rows(rows: np.ndarray, head_dim: int, inverse: bool) -> np.ndarray:
    """llama's rotary layout: HF keeps each head's two rotary halves apart, GGUF interleaves them."""
    n, width = rows.shape
    if inverse:
        return rows.reshape(-1, head_dim // 2, 2, width).swapaxes(1, 2).reshape(n, width)
    return rows.reshape(-1, 2, head_dim // 2, width).swapaxes(1, 2).reshape(n, width)


def run(op: dict[str, Any], length: int, read: Callable[[Extent], bytes]) -> bytes:
    """The bytes of a derived piece; `read` returns a stored extent's bytes."""
    if op["kind"] == "zeros":
        return bytes(length)
    raw = b"".join(read(Extent.from_json(e)) for e in op["inputs"])
    rows, cols, src, dst = op["rows"], op["cols"], op["src"], op["dst"]
    permute, add = op.get("permute"), op.get("add")
    if not add and (src == dst or (src, dst) == ("BF16", "F16")):  # no float arithmetic: move (and rebias) bits
        data = np.frombuffer(raw, np.uint8 if src == dst else np.dtype("<u2")).reshape(rows, -1)
        if src != dst:
            data = _bf16_to_f16(data)
        out = _permute_rows(data, permute["head_dim"], permute["inverse"]) if permute else data
        result = out.tobytes()
    else:
        values = _decode(raw, src, rows, cols)
        if add:
            values += np.float32(add)
        if permute:
            values = _permute_rows(values, permute["head_dim"], permute["inverse"])
        result = _encode(np.ascontiguousarray(values), dst)
    if len(result) != length:
        raise ValueError(f"derived piece made {len(result)} bytes, its plan says {length}")
    return result


def zeros(length: int) -> Derived:
    return Derived({"kind": "zeros"}, length)


def slices(inputs: Callable[[int, int], list[Extent]], src: str, dst: str, rows: int, cols: int,
           head_dim: int | None = None, inverse: bool = False, target_bytes: int = 16 << 20,
           first_bytes: int | None = None, add: float | None = None) -> list[Derived]:
    """A tensor's conversion cut into row slices of about `target_bytes` of float32 working
    values each (a cast or quantization works on float32 rows, several arrays of them at once;
    a plain row move needs only the raw bytes). `inputs(byte_offset, length)` maps a range of the
    source tensor's bytes to stored extents. Permuted tensors are cut at head boundaries, so
    each slice permutes on its own. `first_bytes`: a smaller first slice, for the tensor right
    after a header, which the kernel's readahead asks for with the header's last page. `add`:
    a constant added to every value (gemma keeps its norm weights as 1 + w in GGUF, w in HF)."""
    src_row, dst_row = row_bytes(src, cols), row_bytes(dst, cols)
    working = max(src_row, dst_row) if src == dst and not add else 4 * cols

    def rows_for(budget: int) -> int:
        step = max(1, budget // max(working, 1))
        return max(head_dim, step // head_dim * head_dim) if head_dim else step

    out = []
    r0, step = 0, rows_for(first_bytes or target_bytes)
    while r0 < rows:
        n = min(step, rows - r0)
        op: dict[str, Any] = {"kind": "tensor", "src": src, "dst": dst, "rows": n, "cols": cols,
                              "inputs": [e.to_json() for e in inputs(r0 * src_row, n * src_row)]}
        if head_dim:
            op["permute"] = {"head_dim": head_dim, "inverse": inverse}
        if add:
            op["add"] = add
        out.append(Derived(op, n * dst_row))
        r0, step = r0 + n, rows_for(target_bytes)
    return out
