"""A consistent, in-memory picture of the catalog that views render from.

A model's planned conversions are part of the picture: its converted files (a GGUF made from
safetensors, a safetensors repo made from a GGUF, one file merged from a split GGUF) appear in
its file map beside its stored files, so every view can place them like any other file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from modelstore.converters.planner import converted_files
from modelstore.store.catalog import Catalog
from modelstore.store.records import FileRecord, ModelRecord


@dataclass(frozen=True)
class Snapshot:
    generation: int
    models: tuple[ModelRecord, ...]
    files: dict[str, FileRecord]
    objects_root: str  # where blobs live, for views that link to them
    conversions: dict[str, dict[str, Any]] = field(default_factory=dict)  # model name -> catalog entry
    # model name -> path -> {"kind", "from", "how"}: which files of a model are its converted ones.
    # Kept by path, not by content: the same bytes may be one model's stored file and another's
    # converted one.
    converted: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def file(self, b3: str) -> FileRecord:
        return self.files[b3]

    def conversion(self, model: ModelRecord, path: str) -> dict[str, Any] | None:
        """How `path` of `model` was converted; None for a file the model stores."""
        return self.converted.get(model.name, {}).get(path)


def conversion_of(record: FileRecord) -> dict[str, Any] | None:
    """{"kind", "from", "how"} recorded in a converted weights file's record."""
    return (record.weights or {}).get("conversion")


def _conversion_info(record: FileRecord) -> dict[str, Any]:
    # A converted file without weights is a config or tokenizer file made with a safetensors
    # rendition of a GGUF (the only conversion that writes them).
    return conversion_of(record) or {"kind": "safetensors", "how": "generated beside the converted safetensors"}


def take_snapshot(catalog: Catalog, objects_root: str, *, convert: bool = True) -> Snapshot:
    """One read transaction: the models, every file they name, and (with `convert`) their
    converted files."""
    with catalog.read() as r:
        models = []
        files: dict[str, FileRecord] = {}
        conversions: dict[str, dict[str, Any]] = {}
        converted: dict[str, dict[str, dict[str, Any]]] = {}
        stored_models = sorted(r.models(), key=lambda m: m.name)
        for model in stored_models:  # every stored record first: bytes a model stores are read as stored
            for b3 in model.files.values():
                if b3 not in files:
                    record = r.file(b3)
                    if record is not None:
                        files[b3] = record
        for model in stored_models:
            entry = r.conversions(model.name) if convert else None
            if entry is not None and entry.get("model_files") == model.files:
                conversions[model.name] = entry
                extra = {p: rec for p, rec in converted_files(entry).items() if p not in model.files}
                for rec in extra.values():
                    files.setdefault(rec.b3, rec)  # a stored file with the same bytes keeps its record
                converted[model.name] = {p: _conversion_info(rec) for p, rec in extra.items()}
                model = replace(model, files={**model.files, **{p: rec.b3 for p, rec in extra.items()}})
            models.append(model)
        return Snapshot(r.generation(), tuple(models), files, objects_root, conversions, converted)
