"""A bounds-checked GGUF header parser (format: ggml docs/gguf.md).

The `gguf` package's reader memory-maps the file and trusts its counts; here every count and length
is checked against the bytes that remain before anything is read or allocated, so a lying header
gives a one-line `BadModelFile` instead of a huge allocation or an IndexError.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from modelstore.store.errors import BadModelFile, HeaderNeedsMore
from modelstore.store.tensors import TensorSpan, WeightsHeader, check_spans

MAX_DIMS = 4
MAX_NAME_BYTES = 1024
DEFAULT_ALIGNMENT = 32
KEEP_STRING_BYTES = 1 << 20  # longer string values are summarised, not kept
# Far more keys than any model file has (a few dozen, plus one per tokenizer array): every key is
# kept in the catalog and read by ls and the mount, so a header of a million keys is refused.
MAX_METADATA_KEYS = 65536

_SCALARS: dict[GGUFValueType, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"),
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<?"),
    GGUFValueType.UINT64: struct.Struct("<Q"),
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class _Cursor:
    def __init__(self, path: str, buf: Any) -> None:
        self.path, self.buf, self.pos, self.size = path, buf, 0, len(buf)
        self.file_size = self.size  # more than `size` when `buf` holds the start of the file only

    def fail(self, problem: str) -> BadModelFile:
        return BadModelFile(self.path, problem)

    def need(self, n: int, what: str) -> None:
        if n >= 0 and self.size < self.pos + n <= self.file_size:
            raise HeaderNeedsMore(self.path, self.pos + n)
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"truncated GGUF header: {what} at byte {self.pos} needs {n} bytes, "
                            f"the file has {self.size - self.pos} left")

    def unpack(self, st: struct.Struct, what: str) -> Any:
        self.need(st.size, what)
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return value

    def string(self, what: str, limit: int | None = None) -> str:
        n = self.unpack(_U64, f"{what} length")
        if limit is not None and n > limit:
            raise self.fail(f"{what} is {n} bytes long (at most {limit} allowed)")
        self.need(n, what)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def skip_string(self, what: str) -> None:
        n = self.unpack(_U64, f"{what} length")
        self.need(n, what)
        self.pos += n


def _skip_strings(cur: _Cursor, count: int, key: str) -> None:
    """Step over `count` length-prefixed strings: a vocabulary is 100k-250k of them, so this is
    the one loop of the parser kept tight (locals, no method calls per element)."""
    buf, pos, size, unpack = cur.buf, cur.pos, cur.size, _U64.unpack_from
    for _ in range(count):
        if pos + 8 > size:
            break
        (n,) = unpack(buf, pos)
        if pos + 8 + n > size:
            break
        pos += 8 + n
    else:
        cur.pos = pos
        return
    cur.pos = pos
    cur.skip_string(f"element of {key!r}")  # fails with the precise message


def _value_type(cur: _Cursor, raw: int, key: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise cur.fail(f"key {key!r} has unknown value type {raw}") from None


def _read_value(cur: _Cursor, vtype: GGUFValueType, key: str) -> Any:
    if vtype in _SCALARS:
        return cur.unpack(_SCALARS[vtype], f"value of {key!r}")
    if vtype == GGUFValueType.STRING:
        n = cur.unpack(_U64, f"value of {key!r} length")
        cur.need(n, f"value of {key!r}")
        if n > KEEP_STRING_BYTES:
            cur.pos += n
            return {"string_bytes": n}
        cur.pos -= _U64.size
        return cur.string(f"value of {key!r}")
    # array
    etype = _value_type(cur, cur.unpack(_U32, f"array type of {key!r}"), key)
    count = cur.unpack(_U64, f"array length of {key!r}")
    if etype == GGUFValueType.ARRAY:
        raise cur.fail(f"key {key!r} is an array of arrays, which GGUF readers do not accept")
    if etype == GGUFValueType.STRING:
        cur.need(count * _U64.size, f"array {key!r} of {count} strings")
        _skip_strings(cur, count, key)
    else:
        cur.need(count * _SCALARS[etype].size, f"array {key!r} of {count} {etype.name}")
        cur.pos += count * _SCALARS[etype].size
    return {"array": etype.name, "count": count}


def _tensor_nbytes(cur: _Cursor, name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    block, type_size = GGML_QUANT_SIZES[qtype]
    numel = 1
    for d in shape:
        numel *= d
    if shape and shape[0] % block:
        raise cur.fail(f"tensor {name!r}: first dimension {shape[0]} is not a multiple of "
                       f"the {qtype.name} block size {block}")
    return numel // block * type_size


def parse_gguf(path: str, buf: Any, file_size: int | None = None) -> WeightsHeader:
    """Parse `buf`, the whole file or (with `file_size`) at least its header."""
    cur = _Cursor(path, buf)
    file_size = cur.file_size = cur.size if file_size is None else file_size
    cur.need(24, "GGUF fixed header")
    if bytes(buf[:4]) != b"GGUF":
        raise cur.fail("not a GGUF file (no 'GGUF' magic at the start)")
    cur.pos = 4
    version = cur.unpack(_U32, "version")
    if version not in (2, 3):
        raise cur.fail(f"GGUF version {version} is not supported (2 and 3 are)")
    tensor_count = cur.unpack(_U64, "tensor count")
    kv_count = cur.unpack(_U64, "metadata key count")
    remaining = file_size - cur.pos
    # The smallest key/value pair is 13 bytes and the smallest tensor info 25: a count that could
    # not fit in the file is a lie, whatever follows.
    if kv_count * 13 > remaining:
        raise cur.fail(f"header claims {kv_count} metadata keys, more than the file can hold")
    if kv_count > MAX_METADATA_KEYS:
        raise cur.fail(f"header has {kv_count} metadata keys, more than the {MAX_METADATA_KEYS} this reads")
    if tensor_count * 25 > remaining:
        raise cur.fail(f"header claims {tensor_count} tensors, more than the file can hold")

    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cur.string("metadata key", limit=65535)
        vtype = _value_type(cur, cur.unpack(_U32, f"type of {key!r}"), key)
        if key in metadata:
            raise cur.fail(f"metadata key {key!r} appears twice")
        if key == "general.alignment" and vtype != GGUFValueType.UINT32:  # as gguf-py and llama.cpp require
            raise cur.fail(f"general.alignment is a {vtype.name}, not a UINT32")
        metadata[key] = _read_value(cur, vtype, key)

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1) or alignment > 1 << 24:
        raise cur.fail(f"general.alignment {alignment!r} is not a power of two")

    infos: list[tuple[str, tuple[int, ...], GGMLQuantizationType, int, int]] = []
    names: set[str] = set()
    for _ in range(tensor_count):
        name = cur.string("tensor name", limit=MAX_NAME_BYTES)
        if name in names:
            raise cur.fail(f"tensor {name!r} appears twice")
        names.add(name)
        n_dims = cur.unpack(_U32, f"dimension count of {name!r}")
        if n_dims > MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        shape = tuple(cur.unpack(_U64, f"shape of {name!r}") for _ in range(n_dims))
        raw_type = cur.unpack(_U32, f"type of {name!r}")
        try:
            qtype = GGMLQuantizationType(raw_type)
            GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise cur.fail(f"tensor {name!r} has unknown ggml type {raw_type}") from None
        offset = cur.unpack(_U64, f"offset of {name!r}")
        if offset % alignment:
            raise cur.fail(f"tensor {name!r} offset {offset} is not aligned to {alignment}")
        nbytes = _tensor_nbytes(cur, name, shape, qtype)
        if nbytes > file_size:
            raise cur.fail(f"tensor {name!r} claims {nbytes} bytes, more than the whole file")
        infos.append((name, shape, qtype, offset, nbytes))

    data_start = -(-cur.pos // alignment) * alignment
    if data_start > file_size:
        raise cur.fail("truncated GGUF file: it ends inside the header padding")
    spans = [
        TensorSpan(name, data_start + offset, nbytes, qtype.name, tuple(reversed(shape)))
        for name, shape, qtype, offset, nbytes in infos
    ]
    check_spans(path, spans, data_start, file_size)
    return WeightsHeader("gguf", data_start, tuple(spans), metadata)


@dataclass(frozen=True)
class GgufKV:
    """One metadata pair with its exact GGUF types, so it can be written back unchanged."""

    key: str
    vtype: GGUFValueType
    value: Any  # int, float, bool, str, or a list for arrays
    subtype: GGUFValueType | None = None  # element type of an array


def _read_full(cur: _Cursor, vtype: GGUFValueType, key: str) -> Any:
    if vtype in _SCALARS:
        return cur.unpack(_SCALARS[vtype], f"value of {key!r}")
    if vtype == GGUFValueType.STRING:
        return cur.string(f"value of {key!r}")
    raise cur.fail(f"key {key!r}: nested arrays are not accepted")


def parse_gguf_kv(path: str, buf: Any) -> list[GgufKV]:
    """Every metadata pair in file order, arrays in full (a vocabulary, its merges): what a
    converter needs to rebuild a header or a tokenizer. Bounds-checked like `parse_gguf`."""
    cur = _Cursor(path, buf)
    cur.need(24, "GGUF fixed header")
    if bytes(buf[:4]) != b"GGUF":
        raise cur.fail("not a GGUF file (no 'GGUF' magic at the start)")
    cur.pos = 16
    kv_count = cur.unpack(_U64, "metadata key count")
    if kv_count * 13 > cur.size - cur.pos:
        raise cur.fail(f"header claims {kv_count} metadata keys, more than the file can hold")
    out: list[GgufKV] = []
    for _ in range(kv_count):
        key = cur.string("metadata key", limit=65535)
        vtype = _value_type(cur, cur.unpack(_U32, f"type of {key!r}"), key)
        if vtype != GGUFValueType.ARRAY:
            out.append(GgufKV(key, vtype, _read_full(cur, vtype, key)))
            continue
        etype = _value_type(cur, cur.unpack(_U32, f"array type of {key!r}"), key)
        count = cur.unpack(_U64, f"array length of {key!r}")
        smallest = 8 if etype == GGUFValueType.STRING else _SCALARS[etype].size if etype in _SCALARS else 1
        cur.need(count * smallest, f"array {key!r} of {count} {etype.name}")
        if etype in _SCALARS:
            st = _SCALARS[etype]
            values = [v for (v,) in struct.iter_unpack(st.format, bytes(buf[cur.pos : cur.pos + count * st.size]))]
            cur.pos += count * st.size
        else:
            values = [_read_full(cur, etype, key) for _ in range(count)]
        out.append(GgufKV(key, vtype, values, etype))
    return out
