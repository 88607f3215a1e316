"""A bounds-checked safetensors header parser (format: huggingface/safetensors).

The same rules the Rust reader enforces: header at most 100 MB, tensors contiguous from the start
of the data buffer, sizes matching dtype x shape, and the buffer covering the file exactly.
"""

from __future__ import annotations

import struct
from typing import Any

from modelstore.store import jsontext
from modelstore.store.errors import BadModelFile, HeaderNeedsMore
from modelstore.store.tensors import TensorSpan, WeightsHeader, check_spans

MAX_HEADER_BYTES = 100_000_000
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


KEEP_METADATA_BYTES = 64 << 10  # what the catalog keeps of __metadata__ (real ones: a few keys)


def _kept(metadata: dict[str, str]) -> dict[str, str]:
    """The __metadata__ entries kept in the catalog, which ls and the mount read whole: in order,
    while they fit in KEEP_METADATA_BYTES; the rest is only counted."""
    kept: dict[str, str] = {}
    used = 0
    for key, value in metadata.items():
        used += len(key.encode()) + len(value.encode())
        if used > KEEP_METADATA_BYTES:
            kept["__dropped__"] = f"{len(metadata) - len(kept)} entries past the first {KEEP_METADATA_BYTES} bytes"
            break
        kept[key] = value
    return kept


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def parse_safetensors(path: str, buf: Any, file_size: int | None = None) -> WeightsHeader:
    """Parse `buf`, the whole file or (with `file_size`) at least its header."""
    size = len(buf)
    if size < 8:
        raise BadModelFile(path, f"truncated safetensors file: {size} bytes, the length prefix alone is 8")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > MAX_HEADER_BYTES:
        raise BadModelFile(path, f"safetensors header claims {n} bytes (at most {MAX_HEADER_BYTES})")
    if file_size is not None and size < 8 + n <= file_size:
        raise HeaderNeedsMore(path, 8 + n)
    if 8 + n > size:
        raise BadModelFile(path, f"truncated safetensors file: header of {n} bytes, file of {size}")
    try:
        header = jsontext.loads(bytes(buf[8 : 8 + n]).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadModelFile(path, f"safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BadModelFile(path, "safetensors header is not a JSON object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadModelFile(path, "safetensors __metadata__ must map strings to strings")
    try:  # JSON may spell a lone surrogate ("\ud800"), which no UTF-8 reader (serde_json) takes
        for text in (*header, *metadata, *metadata.values()):
            text.encode()
    except UnicodeEncodeError:
        raise BadModelFile(path, "safetensors header holds text that is not valid Unicode (a lone surrogate)") from None
    metadata = _kept(metadata)

    data_start = 8 + n
    spans: list[TensorSpan] = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise BadModelFile(path, f"tensor {name!r}: entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BITS:
            raise BadModelFile(path, f"tensor {name!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise BadModelFile(path, f"tensor {name!r}: shape {shape!r} is not a list of sizes")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
                or offsets[0] > offsets[1]):
            raise BadModelFile(path, f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end]")
        numel = 1
        for d in shape:
            numel *= d
        if numel * DTYPE_BITS[dtype] != (offsets[1] - offsets[0]) * 8:
            raise BadModelFile(path, f"tensor {name!r}: {offsets[1] - offsets[0]} bytes do not hold "
                                     f"{dtype} of shape {shape}")
        spans.append(TensorSpan(name, data_start + offsets[0], offsets[1] - offsets[0], dtype, tuple(shape)))

    size = size if file_size is None else file_size
    check_spans(path, spans, data_start, size)
    end = data_start
    for span in sorted(spans, key=lambda s: s.offset):
        if span.offset != end:
            raise BadModelFile(path, f"tensor {span.name!r} does not start where the previous one ends")
        end = span.end
    if end != size:
        raise BadModelFile(path, f"safetensors data ends at byte {end} but the file has {size} bytes")
    return WeightsHeader("safetensors", data_start, tuple(spans), dict(metadata))
