"""A byte-level GGUF builder for tests that need headers no honest writer would produce."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

STRING, UINT32, ARRAY = 8, 4, 9
F32 = 0


def gguf_str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]  # ggml order (ne[0] first)
    offset: int
    ggml_type: int = F32
    data: bytes = b""


@dataclass
class GGUFBytes:
    version: int = 3
    kv: list[bytes] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    tensor_count: int | None = None
    kv_count: int | None = None
    alignment: int = 32

    def add_string(self, key: str, value: str) -> "GGUFBytes":
        self.kv.append(gguf_str(key) + struct.pack("<I", STRING) + gguf_str(value))
        return self

    def add_raw_kv(self, raw: bytes) -> "GGUFBytes":
        self.kv.append(raw)
        return self

    def build(self) -> bytes:
        out = bytearray(b"GGUF")
        out += struct.pack("<IQQ", self.version,
                           len(self.tensors) if self.tensor_count is None else self.tensor_count,
                           len(self.kv) if self.kv_count is None else self.kv_count)
        for raw in self.kv:
            out += raw
        for t in self.tensors:
            out += gguf_str(t.name) + struct.pack("<I", len(t.shape))
            out += b"".join(struct.pack("<Q", d) for d in t.shape)
            out += struct.pack("<IQ", t.ggml_type, t.offset)
        out += b"\0" * (-len(out) % self.alignment)
        data_start = len(out)
        end = max((t.offset + len(t.data) for t in self.tensors), default=0)
        data = bytearray(end)
        for t in self.tensors:
            data[t.offset : t.offset + len(t.data)] = t.data
        return bytes(out[:data_start]) + bytes(data)


def valid_gguf(n: int = 2, elems: int = 1024) -> GGUFBytes:
    """`n` F32 tensors of `elems` values each, laid out back to back."""
    g = GGUFBytes().add_string("general.architecture", "llama")
    size = elems * 4
    for i in range(n):
        g.tensors.append(Tensor(f"t{i}", (elems,), i * size, F32, bytes([i + 1]) * size))
    return g
