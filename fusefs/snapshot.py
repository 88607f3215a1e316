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

    def file(self, b3: str) -> FileRecord:
        return self.files[b3]


def conversion_of(record: FileRecord) -> dict[str, Any] | None:
    """{"kind", "from", "how"} for a converted file; None for a stored one."""
    return (record.weights or {}).get("conversion")


def take_snapshot(catalog: Catalog, objects_root: str, *, convert: bool = True) -> Snapshot:
    """One read transaction: the models, every file they name, and (with `convert`) their
    converted files."""
    with catalog.read() as r:
        models = []
        files: dict[str, FileRecord] = {}
        conversions: dict[str, dict[str, Any]] = {}
        for model in sorted(r.models(), key=lambda m: m.name):
            for b3 in model.files.values():
                if b3 not in files:
                    record = r.file(b3)
                    if record is not None:
                        files[b3] = record
            entry = r.conversions(model.name) if convert else None
            if entry is not None and entry.get("model_files") == model.files:
                conversions[model.name] = entry
                extra = {p: rec for p, rec in converted_files(entry).items() if p not in model.files}
                files.update({rec.b3: rec for rec in extra.values()})
                model = replace(model, files={**model.files, **{p: rec.b3 for p, rec in extra.items()}})
            models.append(model)
        return Snapshot(r.generation(), tuple(models), files, objects_root, conversions)
