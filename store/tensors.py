"""What the store needs to know of a weights file: where each tensor's bytes lie.

Parsers here read headers only, check every count, length and offset against the file size
before using it (so a hostile header can neither point past the end nor make us allocate much),
and return spans in absolute file offsets.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from modelstore.store.errors import BadModelFile, HeaderNeedsMore

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class TensorSpan:
    name: str
    offset: int  # absolute offset in the file
    length: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class WeightsHeader:
    format: str  # "gguf" or "safetensors"
    data_start: int
    tensors: tuple[TensorSpan, ...]
    # GGUF: scalar and string keys (arrays as {"array": type, "count": n}); safetensors: __metadata__
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def parameter_count(self) -> int:
        return sum(t.numel for t in self.tensors)


def check_spans(path: str, spans: list[TensorSpan], data_start: int, file_size: int) -> None:
    """Spans must lie inside the data section and must not overlap (shared bytes would make
    per-tensor dedup ambiguous, and no honest writer produces them)."""
    previous: TensorSpan | None = None
    for span in sorted(spans, key=lambda s: (s.offset, s.end)):
        if span.offset < data_start or span.end > file_size:
            raise BadModelFile(
                path,
                f"tensor {span.name!r} lies at bytes {span.offset}-{span.end}, "
                f"outside the data section {data_start}-{file_size}",
            )
        if previous is not None and span.offset < previous.end:
            raise BadModelFile(path, f"tensors {previous.name!r} and {span.name!r} overlap")
        previous = span


def sniff_format(path: Path, name: str | None = None) -> str | None:
    """'gguf', 'safetensors' or None, by magic first (Ollama blobs have no extension), else by
    the suffix of `name` (the name a link gives the file, as the HF cache's snapshots do for
    blobs named by hash), or of the path."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except IsADirectoryError:
        return None
    if magic == GGUF_MAGIC:
        return "gguf"
    suffix = Path(name).suffix if name is not None else path.suffix
    if suffix == ".gguf":
        raise BadModelFile(str(path), "not a GGUF file (no 'GGUF' magic at the start)")
    if suffix == ".safetensors":
        return "safetensors"
    return None


HEADER_READ = 8 << 20  # read first: more than almost every header, a vocabulary included
MAX_HEADER_READ = 512 << 20


def read_weights_header(path: Path, name: str | None = None) -> WeightsHeader | None:
    """Parse the header of a GGUF or safetensors file; None for any other file. `name`: the
    file's name where `path` (a blob named by hash) does not say its format.

    The header is read into memory (more of it if it is longer), not mapped: a file another
    process truncates meanwhile would kill a process reading it through a mapping (SIGBUS)."""
    fmt = sniff_format(path, name)
    if fmt is None:
        return None
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise BadModelFile(str(path), "empty file")
        want = min(size, HEADER_READ)
        while True:
            buf = _read_start(f.fileno(), want)
            header = _PARSED.find(fmt, buf, size)
            if header is not None:
                return header
            try:
                header = _parse(str(path), fmt, buf, size if len(buf) == want else len(buf))
            except HeaderNeedsMore as more:
                if more.needed > MAX_HEADER_READ:
                    raise BadModelFile(str(path), f"its header claims {more.needed} bytes, more than the "
                                                  f"{MAX_HEADER_READ >> 20} MiB modelstore reads") from None
                want = min(size, max(more.needed, 2 * want), MAX_HEADER_READ)
                continue
            _PARSED.keep(buf, size, header)
            return header


def _read_start(fd: int, length: int) -> bytes:
    """The first `length` bytes of the file, fewer only where it ends sooner."""
    chunks, got = [], 0
    while got < length and (chunk := os.pread(fd, length - got, got)):
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _parse(path: str, fmt: str, buf: bytes, size: int) -> WeightsHeader:
    if fmt == "gguf":
        from modelstore.store.gguf_header import parse_gguf

        return parse_gguf(path, buf, file_size=size)
    from modelstore.store.safetensors_header import parse_safetensors

    return parse_safetensors(path, buf, file_size=size)


class _ParsedHeaders:
    """The last few headers parsed, by their bytes and the file's size: the copies of one model an
    import meets (one GGUF in Ollama's, LM Studio's and the HF cache's folders) are parsed once.
    Stepping over a GGUF vocabulary takes 20-100 ms of Python; hashing its header, under 1 ms.
    The file size is part of the key because the spans were checked against it."""

    KEEP = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._headers: OrderedDict[tuple[str, int, int, bytes], WeightsHeader] = OrderedDict()

    @staticmethod
    def _digest(buf: bytes, length: int) -> bytes:
        return blake3.blake3(memoryview(buf)[:length], max_threads=1).digest()

    def find(self, fmt: str, buf: bytes, size: int) -> WeightsHeader | None:
        with self._lock:
            candidates = [key for key in self._headers if key[:2] == (fmt, size) and key[2] <= len(buf)]
        for key in candidates:
            if self._digest(buf, key[2]) == key[3]:
                with self._lock:
                    header = self._headers.get(key)
                    if header is not None:
                        self._headers.move_to_end(key)
                        return header
        return None

    def keep(self, buf: bytes, size: int, header: WeightsHeader) -> None:
        length = min(header.data_start, len(buf))
        key = (header.format, size, length, self._digest(buf, length))
        with self._lock:
            self._headers[key] = header
            while len(self._headers) > self.KEEP:
                self._headers.popitem(last=False)


_PARSED = _ParsedHeaders()
