"""The records the catalog keeps, and their JSON form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Extent:
    """`length` bytes at `offset` in blob `blob`."""

    blob: str
    offset: int
    length: int

    def to_json(self) -> list[Any]:
        return [self.blob, self.offset, self.length]

    @classmethod
    def from_json(cls, raw: list[Any]) -> "Extent":
        return cls(str(raw[0]), int(raw[1]), int(raw[2]))


@dataclass(frozen=True)
class Derived:
    """`length` bytes computed on demand from stored bytes: a converted tensor slice, or padding.

    `op` is plain JSON (see `modelstore.converters.tensorops`); its stored inputs are listed in
    `op["inputs"]` as extents, so what a derived piece needs is known without running it."""

    op: dict[str, Any]
    length: int

    @property
    def inputs(self) -> tuple[Extent, ...]:
        return tuple(Extent.from_json(e) for e in self.op.get("inputs", ()))

    def to_json(self) -> dict[str, Any]:
        return {"derive": self.op, "length": self.length}


Piece = Extent | Derived


def piece_from_json(raw: Any) -> Piece:
    if isinstance(raw, dict):
        return Derived(raw["derive"], int(raw["length"]))
    return Extent.from_json(raw)


@dataclass(frozen=True)
class FileRecord:
    """One file's content: its identity hashes and the extents whose concatenation it is."""

    b3: str
    size: int
    sha256: str
    git_sha1: str | None
    recipe: tuple[Piece, ...]  # stored files hold only extents; converted files also derived pieces
    weights: dict[str, Any] | None = None  # header facts of a GGUF/safetensors file

    @property
    def blobs(self) -> set[str]:
        out: set[str] = set()
        for piece in self.recipe:
            if isinstance(piece, Extent):
                out.add(piece.blob)
            else:
                out.update(e.blob for e in piece.inputs)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256, "git_sha1": self.git_sha1,
                "recipe": [e.to_json() for e in self.recipe], "weights": self.weights}

    @classmethod
    def from_json(cls, b3: str, raw: dict[str, Any]) -> "FileRecord":
        return cls(b3, raw["size"], raw["sha256"], raw.get("git_sha1"),
                   tuple(piece_from_json(e) for e in raw["recipe"]), raw.get("weights"))


@dataclass(frozen=True)
class Source:
    kind: str  # "local" or "huggingface"
    location: str  # a path, or a repo id
    revision: str | None = None  # the Hub commit for Hub repos


@dataclass(frozen=True)
class ModelRecord:
    name: str
    source: Source
    files: dict[str, str]  # path in the model -> file BLAKE3
    metadata: dict[str, Any] = field(default_factory=dict)
    added_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "source": asdict(self.source), "files": dict(sorted(self.files.items())),
                "metadata": self.metadata, "added_at": self.added_at}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "ModelRecord":
        return cls(raw["name"], Source(**raw["source"]), dict(raw["files"]), raw.get("metadata", {}),
                   raw.get("added_at", 0.0))
