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
class FileRecord:
    """One file's content: its identity hashes and the extents whose concatenation it is."""

    b3: str
    size: int
    sha256: str
    git_sha1: str | None
    recipe: tuple[Extent, ...]
    weights: dict[str, Any] | None = None  # header facts of a GGUF/safetensors file

    @property
    def blobs(self) -> set[str]:
        return {e.blob for e in self.recipe}

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256, "git_sha1": self.git_sha1,
                "recipe": [e.to_json() for e in self.recipe], "weights": self.weights}

    @classmethod
    def from_json(cls, b3: str, raw: dict[str, Any]) -> "FileRecord":
        return cls(b3, raw["size"], raw["sha256"], raw.get("git_sha1"),
                   tuple(Extent.from_json(e) for e in raw["recipe"]), raw.get("weights"))


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
