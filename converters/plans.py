"""What every planner shares: reading a stored model's small files and weight headers, mapping
a range of a stored file to its extents, writing a generated JSON file, and the plan a planner
returns.

A plan is made from headers and small files only; no tensor data is read to make it, but for a
GGUF's tiny `rope_freqs`, which is configuration stored as a tensor.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from modelstore.converters.errors import ConversionUnsupported
from modelstore.store import jsontext
from modelstore.store.errors import BadModelFile
from modelstore.store.gguf_header import parse_gguf
from modelstore.store.ingest import weights_summary
from modelstore.store.records import Derived, Extent, FileRecord, ModelRecord
from modelstore.store.safetensors_header import parse_safetensors
from modelstore.store.tensors import WeightsHeader

SMALL_TEXT_LIMIT = 64 << 20  # tokenizer.json of a 250k vocabulary is ~20 MB

Piece = bytes | Extent | Derived  # bytes: literal data (a header), stored as a blob when committed


@dataclass
class PlannedFile:
    path: str  # where it appears in the model
    pieces: list[Piece]
    weights: dict[str, Any] | None = None  # header facts, as a stored file's record has them

    @property
    def size(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.length for p in self.pieces)


@dataclass
class Plan:
    target: str  # "gguf", "safetensors" or "merged-gguf"
    how: str  # one line for people: "safetensors BF16 -> GGUF F16, Q/K permuted"
    sources: list[str]  # the model paths it is made from
    files: list[PlannedFile] = field(default_factory=list)


class StoredModel:
    """A stored model as planners see it: records, headers and small files, read on demand."""

    def __init__(self, model: ModelRecord, file: Callable[[str], FileRecord],
                 read_range: Callable[[FileRecord, int, int], bytes]) -> None:
        self.model, self._file, self._read = model, file, read_range
        self._headers: dict[str, WeightsHeader] = {}

    def record(self, path: str) -> FileRecord:
        return self._file(self.model.files[path])

    def paths(self, fmt: str) -> list[str]:
        return sorted(p for p, b3 in self.model.files.items()
                      if (self._file(b3).weights or {}).get("format") == fmt)

    def text(self, path: str) -> bytes | None:
        if path not in self.model.files:
            return None
        record = self.record(path)
        if record.size > SMALL_TEXT_LIMIT:
            raise ConversionUnsupported(f"{path} is {record.size} bytes, too large to be a config file")
        return self._read(record, 0, record.size)

    def json(self, path: str) -> dict[str, Any] | None:
        data = self.text(path)
        if data is None:
            return None
        try:
            value = jsontext.loads(data)
        except ValueError as exc:
            raise ConversionUnsupported(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ConversionUnsupported(f"{path} is not a JSON object")
        return value

    def header_bytes(self, path: str) -> bytes:
        record = self.record(path)
        data_start = int((record.weights or {}).get("data_start", 0))
        return self._read(record, 0, data_start)

    def header(self, path: str) -> WeightsHeader:
        if path not in self._headers:
            record = self.record(path)
            fmt = (record.weights or {}).get("format")
            parse = parse_gguf if fmt == "gguf" else parse_safetensors
            try:
                self._headers[path] = parse(path, self.header_bytes(path), file_size=record.size)
            except BadModelFile as exc:
                raise ConversionUnsupported(str(exc)) from None
        return self._headers[path]

    def small_tensor(self, path: str, offset: int, length: int) -> bytes:
        """The bytes of a tiny tensor that becomes configuration (a GGUF's rope_freqs): the one
        read of tensor data a plan makes."""
        if length > 1 << 20:
            raise ConversionUnsupported(f"a {length}-byte tensor of {path} is too large to be configuration")
        return self._read(self.record(path), offset, length)

    def extents(self, path: str, offset: int, length: int) -> list[Extent]:
        """The stored extents holding bytes [offset, offset+length) of the model file `path`."""
        return extents_of(self.record(path), offset, length)


def extents_of(record: FileRecord, offset: int, length: int) -> list[Extent]:
    out: list[Extent] = []
    pos, end = 0, offset + length
    for ext in record.recipe:
        assert isinstance(ext, Extent), "stored files are made of extents"
        lo, hi = max(offset, pos), min(end, pos + ext.length)
        if hi > lo:
            out.append(Extent(ext.blob, ext.offset + (lo - pos), hi - lo))
        pos += ext.length
        if pos >= end:
            break
    if sum(e.length for e in out) != length:
        raise ConversionUnsupported(f"range {offset}+{length} lies outside file {record.b3}")
    return out


def gguf_header_bytes(writer: gguf.GGUFWriter) -> bytes:
    """The header `writer` would write (magic, keys, tensor infos) padded to its data alignment,
    made through the writer's own file path API into a temporary file."""
    with tempfile.TemporaryDirectory(prefix="modelstore-gguf-") as tmp:
        path = Path(tmp) / "header.gguf"
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.close()
        data = path.read_bytes()
    pad = -len(data) % writer.data_alignment
    return data + bytes(pad)


def gguf_summary(header: bytes, size: int, conversion: dict[str, Any]) -> dict[str, Any]:
    parsed = parse_gguf("(planned)", header, file_size=size)
    summary = weights_summary(parsed) or {}
    return {**summary, "conversion": conversion}


def json_file(value: Any, name: str, *, ensure_ascii: bool = True) -> bytes:
    """A generated JSON file (indented, keys sorted, a newline at the end). A NaN or infinite value
    (from a GGUF key) refuses the rendition, as strict parsers (serde_json in mistral.rs, for one)
    refuse the file."""
    try:
        text = jsontext.dumps_finite(value, indent=2, sort_keys=True, ensure_ascii=ensure_ascii)
    except ValueError as exc:
        raise ConversionUnsupported(f"{name} cannot be written: {exc} (from the GGUF), which JSON cannot say") from None
    return (text + "\n").encode("utf-8")
